"""Find the image (and video) files under folders, in a stable order, each once.

The order is the same on every run (arguments in the order given, each folder walked depth first
with its entries sorted by name), so that an interrupted indexing run can resume and two runs over
the same tree give the same ids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from snoop_nb.errors import UsageError
from snoop_nb.media.video import VIDEO_EXTENSIONS, is_video_name

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "discover_images",
    "discover_media",
    "is_image_name",
    "is_media_name",
    "is_video_name",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    # JPEG 2000, as heritage libraries serve their scans: a JP2 file, JPX, a bare codestream
    | {".jp2", ".jpx", ".j2k"}
)

# A file's identity: (st_dev, st_ino) when it exists, its absolute path when it is a broken link.
_Key = tuple[int, int] | str


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """True if the name ends with an image extension, in any case (``IMG_001.JPG``)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def is_media_name(name: str | os.PathLike[str]) -> bool:
    """True for an image or a video name."""
    return is_image_name(name) or is_video_name(name)


def discover_images(
    paths: Iterable[str | os.PathLike[str]], *, include_hidden: bool = False
) -> Iterator[Path]:
    """Yield the image files under ``paths``, recursively, sorted by name, each file once.

    A path that is a file is yielded if its name has an image extension. Names starting with
    ``.`` under a folder are skipped unless ``include_hidden`` (paths given explicitly are
    always honoured). Symbolic links are followed, but no folder is entered twice, so a link
    loop ends; a file reached twice (through a link, a hard link or overlapping arguments) is
    yielded once, at its first path. A broken link with an image name is yielded, so that the
    caller records it as a bad file. Unreadable folders are skipped with a warning.

    Raises :class:`UsageError` at once if a path does not exist.

    >>> list(discover_images(["photos"]))  # doctest: +SKIP
    [PosixPath('photos/2019/beach.jpg'), PosixPath('photos/cat.png')]
    """
    return _discover(_roots(paths), include_hidden, is_image_name)


def outside(found: Iterable[Path], folder: str | os.PathLike[str]) -> tuple[list[Path], int]:
    """``found`` without the files inside ``folder`` (a collection's own directory: its
    keyframes, its cache of remote pictures), and how many were left out. A collection kept
    inside the folder it indexes must not index its own files on the next run."""
    top = os.path.realpath(folder)
    kept, dropped = [], 0
    for path in found:
        real = os.path.realpath(path)
        if real == top or real.startswith(top + os.sep):
            dropped += 1
        else:
            kept.append(path)
    return kept, dropped


def discover_media(
    paths: Iterable[str | os.PathLike[str]], *, include_hidden: bool = False
) -> Iterator[Path]:
    """Yield the image and video files under ``paths``, as :func:`discover_images` does for
    images alone (same order, rules and errors); tell them apart with :func:`is_video_name`.

    >>> [p.name for p in discover_media(["archive"])]  # doctest: +SKIP
    ['news-1984-05-01.mp4', 'poster.jpg']
    """
    return _discover(_roots(paths), include_hidden, is_media_name)


def _roots(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    roots = [Path(p) for p in paths]
    for root in roots:
        if not os.path.lexists(root):
            raise UsageError(f"{root}: no such file or directory")
    return roots


def _discover(
    roots: list[Path], include_hidden: bool, wanted: Callable[[str], bool]
) -> Iterator[Path]:
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[_Key] = set()
    for root in roots:
        if root.is_dir():
            yield from _walk(root, include_hidden, seen_dirs, seen_files, wanted)
        elif wanted(root.name) and _first_visit(root, None, seen_files):
            yield root


def _walk(
    top: Path,
    include_hidden: bool,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[_Key],
    wanted: Callable[[str], bool],
) -> Iterator[Path]:
    """Depth-first walk with an explicit stack, so that deep trees cannot hit the recursion limit."""
    try:
        st = top.stat()
    except OSError as e:
        log.warning("skipping %s: %s", top, e.strerror or e)
        return
    if (st.st_dev, st.st_ino) in seen_dirs:
        return
    seen_dirs.add((st.st_dev, st.st_ino))
    stack = [iter(_sorted_entries(top))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if not include_hidden and entry.name.startswith("."):
            continue
        if _is_dir(entry):
            try:
                st = entry.stat()
            except OSError as e:
                log.warning("skipping %s: %s", entry.path, e.strerror or e)
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            stack.append(iter(_sorted_entries(entry.path)))
        elif wanted(entry.name) and _first_visit(Path(entry.path), entry, seen_files):
            yield Path(entry.path)


def _sorted_entries(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda entry: entry.name)
    except OSError as e:  # PermissionError, or a folder removed while we walk
        log.warning("skipping unreadable folder %s: %s", path, e.strerror or e)
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symbolic links
    except OSError:  # e.g. a link to itself (ELOOP): not a folder we can walk
        return False


def _first_visit(path: Path, entry: os.DirEntry[str] | None, seen: set[_Key]) -> bool:
    """Record the file's identity; False if it was seen before."""
    try:
        st = entry.stat() if entry is not None else path.stat()
        key: _Key = (st.st_dev, st.st_ino)
    except OSError:  # a broken (or looping) link: it has no target to compare
        key = os.path.abspath(path)
    if key in seen:
        return False
    seen.add(key)
    return True
