"""Relevance feedback: personal visual classes trained from a user's clicks.

``collection.session(user, class_name)`` opens a :class:`FeedbackSession`; the classifier,
the ranking (exact or HNSW) and the suggestion strategies live in the modules beside it.
"""

from snoop_nb.learn.classifier import TrainedModel, train
from snoop_nb.learn.session import STRATEGIES, FeedbackSession

__all__ = ["STRATEGIES", "FeedbackSession", "TrainedModel", "train"]
