"""Media: find image files and decode them safely into RGB pictures."""

from snoop_nb.media.decode import DEFAULT_MAX_PIXELS, load_image
from snoop_nb.media.discover import IMAGE_EXTENSIONS, discover_images

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "discover_images", "load_image"]
