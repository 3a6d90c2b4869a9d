"""The notebook and dashboard UI (ipywidgets + ipyvuetify) over the engine's Python API.

The engine never imports this package; everything a widget does is a call that a notebook,
the CLI and the tests can make too.

>>> from snoop_nb.ui import App
>>> App("data/demo/collection")      # doctest: +SKIP
"""

from snoop_nb.ui.app import App, visitor_user
from snoop_nb.ui.explore import ClassExplorer
from snoop_nb.ui.grid import ImageGrid
from snoop_nb.ui.player import VideoPlayer
from snoop_nb.ui.search import SearchPanel
from snoop_nb.ui.thumbs import Thumbnails
from snoop_nb.ui.trainer import ClassTrainer
from snoop_nb.ui.videos import VideoPanel

__all__ = [
    "App",
    "ClassExplorer",
    "ClassTrainer",
    "ImageGrid",
    "SearchPanel",
    "Thumbnails",
    "VideoPanel",
    "VideoPlayer",
    "visitor_user",
]
