"""The one small hierarchy of errors snoop-nb raises.

Every message says what went wrong and, where it can, what to do about it. The CLI turns a
:class:`SnoopError` into one line on stderr and exit code 1; :class:`UsageError` gives exit code 2.
"""

from __future__ import annotations


class SnoopError(Exception):
    """Base class of every error snoop-nb raises on purpose."""


class UsageError(SnoopError):
    """The caller asked for something that cannot be done as asked (bad arguments)."""


class CollectionError(SnoopError):
    """A collection directory is missing, unreadable, or not a snoop-nb collection."""


class EmbedderMismatchError(CollectionError):
    """The collection was built by another embedder: its vectors cannot be mixed with ours."""


class ModelError(SnoopError):
    """A model or its weights could not be found or loaded (we never download at run time)."""


class MediaError(SnoopError):
    """A media file could not be read or decoded; ``reason`` is a short, stable explanation."""

    def __init__(self, reason: str, path: object = None):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path is not None else reason)
