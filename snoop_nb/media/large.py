"""Shrink-on-load: decode a large picture straight to the size the caller needs.

A heritage scan or a large clip-art is 10,000 x 17,000 pixels or more; decoded whole it takes
0.5 to 3 GB, yet the embedder needs ~256 pixels and a grid tile ~256. So a caller that passes
``min_size`` to :func:`~snoop_nb.media.decode.load_image` gets the picture shrunk while it is
decoded, never below ``min_size``, with memory bounded whatever the file's size. Each format
takes the cheapest route; figures from ``python benchmarks/large_images.py`` (2 cores; decoding
for the default embedder, ``min_size`` 512 x 512; peak RSS above the same run on a small PNG):

* **JPEG**: PIL's ``draft`` (libjpeg's DCT scaling by 1/2, 1/4, 1/8). A 192-megapixel noisy
  photo: 1.2 s, +3 MB (on a 300-megapixel one, 1.7 s and 34 MB of RSS in all, where libvips'
  thumbnail took 2.0 s and 194 MB).
* **JPEG 2000**: PIL's ``reduce`` (OpenJPEG decodes only the resolution levels needed, no more
  than the codestream has). 80 megapixels, 6 levels: 0.1 s, +0 MB. libvips is not an option:
  the ``pyvips-binary`` wheel has no OpenJPEG.
* **PNG, TIFF, WebP, GIF**: libvips (``pyvips`` with the libvips inside ``pyvips-binary``),
  whose ``thumbnail`` streams the rows through a shrink and reads the smallest level big enough
  of a pyramidal TIFF. A 170-megapixel clip-art PNG: 0.9 s, +149 MB, where PIL, which can only
  decode a PNG whole, took 4.5 s and +3.2 GB; a 1-gigapixel pyramidal TIFF: 0.16 s, +15 MB; the
  same without a pyramid: 3.0 s, +252 MB; a 120-megapixel 16-bit grey TIFF: 1.9 s, +68 MB.

Only pictures of more than :data:`LARGE_PIXELS` are shrunk: smaller ones keep PIL's whole
decode, so that their pixels (and vectors) stay exactly as they were.

BMP has no reduced decoding in either library; a huge BMP is decoded whole (its pixel count is
still capped by ``max_pixels``).
"""

from __future__ import annotations

from typing import IO, Any

import numpy as np
from PIL import Image

from snoop_nb.errors import MediaError

#: Pictures of more pixels than this (4096 x 4096) are shrunk while decoded when the caller gives
#: a ``min_size``; smaller ones are decoded whole by PIL, as they always were, so that their
#: pixels and vectors do not change (JPEG's DCT scaling moves a vector by up to 1% in cosine).
LARGE_PIXELS = 4096 * 4096
#: The formats libvips decodes for us (PIL's names).
STREAM_FORMATS = frozenset({"PNG", "TIFF", "WEBP", "GIF"})
_VIPS_MAX_COORD = 10_000_000  # libvips' largest dimension: "no limit" for thumbnail's height
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# libvips reports an unreadable TIFF tile as a warning (and leaves it black): fail on warnings
# there. Elsewhere on errors only: libpng warns about harmless things (a known-bad sRGB profile).
_FAIL_ON = {"TIFF": "warning"}


def shrink_scale(size: tuple[int, int], min_size: tuple[int, int]) -> float:
    """The scale (at most 1) that brings ``size`` down to no less than ``min_size`` on both sides."""
    return min(1.0, max(max(1, min_size[0]) / size[0], max(1, min_size[1]) / size[1]))


def is_large(size: tuple[int, int]) -> bool:
    """True if a picture of this size is shrunk while decoded when the caller allows it."""
    return size[0] * size[1] > LARGE_PIXELS


def beyond_pil(size: tuple[int, int]) -> bool:
    """True if PIL would refuse to decode a picture this large (its ``MAX_IMAGE_PIXELS`` ceiling,
    read, never changed): libvips decodes those whole, up to our own ``max_pixels``."""
    ceiling = Image.MAX_IMAGE_PIXELS
    return ceiling is not None and size[0] * size[1] > 2 * ceiling


def can_stream(fmt: str | None, size: tuple[int, int], min_size: tuple[int, int]) -> bool:
    """True if libvips decodes this format, and shrinking by at least 2 is allowed."""
    return fmt in STREAM_FORMATS and shrink_scale(size, min_size) <= 0.5


def load_streamed(
    fp: IO[bytes], fmt: str | None, min_size: tuple[int, int], name: Any
) -> tuple[Image.Image, tuple[int, int]] | None:
    """Decode ``fp`` through libvips, upright and shrunk to no less than ``min_size`` (whole if
    ``min_size`` is its size).

    Returns a PIL image of mode L, LA, RGB or RGBA and the upright ``(width, height)`` of the
    whole picture; ``None`` if libvips cannot do it faithfully (float pixels), so that the caller
    decodes whole instead. A damaged file raises :class:`MediaError`.
    """
    import pyvips

    source = _source(pyvips, fp)
    try:
        header = pyvips.Image.new_from_source(source, "", access="sequential")
        if header.format not in ("uchar", "char", "ushort", "short"):
            return None  # libvips' thumbnail would cast floats to 8 bits, not scale them
        width, height = header.width, header.height
        if "orientation" in header.get_fields() and int(header.get("orientation")) in (
            _SWAPPING_ORIENTATIONS
        ):
            width, height = height, width
        # Fit the box on the binding side only: the other side then rounds to no less than its own.
        box_w, box_h = min(width, min_size[0]), min(height, min_size[1])
        if box_w / width >= box_h / height:
            box_h = _VIPS_MAX_COORD
        else:
            box_w = _VIPS_MAX_COORD
        thumb = pyvips.Image.thumbnail_source(
            source,
            box_w,
            height=box_h,
            size="down",
            # thumbnail_source's own fail_on is not passed on to the loader (libvips 8.18):
            # without this a truncated PNG decodes "fine", its missing rows left black
            option_string=f"fail_on={_FAIL_ON.get(fmt, 'error')}",
        )
        pixels = thumb.numpy()
    except pyvips.Error as e:
        raise MediaError(f"truncated or corrupt image: {_first_line(e)}", name) from None
    except MemoryError:
        raise MediaError("not enough memory to decode the image", name) from None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] > 4:
        pixels = pixels[:, :, :3]  # extra channels beyond colour and alpha carry no picture
    if pixels.dtype != np.uint8:  # thumbnail gives 8 bits; be safe if a version does not
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    bands = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image.fromarray(np.ascontiguousarray(pixels), _MODES[bands]), (width, height)


def jpeg2000_reduce(fp: IO[bytes], size: tuple[int, int], min_size: tuple[int, int]) -> int:
    """How many resolution levels a JPEG 2000 decode can drop and stay at least ``min_size``.

    Each level halves the size; the codestream's number of wavelet decomposition levels bounds
    them (asking more is an OpenJPEG error). PIL sizes a reduced picture rounding to nearest
    where OpenJPEG rounds up, and the decode fails where the two differ (5000 / 32 = 156.25):
    such levels are skipped for the next one down.
    """
    levels = _jpeg2000_levels(fp)
    best = 0
    for reduce in range(1, levels + 1):
        power = 1 << reduce
        pil = [(d + (power >> 1)) // power for d in size]
        if pil[0] < max(1, min_size[0]) or pil[1] < max(1, min_size[1]):
            break
        if pil == [-(-d // power) for d in size]:
            best = reduce
    return best


def _jpeg2000_levels(fp: IO[bytes]) -> int:
    """The decomposition levels in the main header's COD marker (0 if it cannot be read)."""
    try:
        fp.seek(0)
        head = fp.read(12)
        start = 0
        if head[:4] != b"\xff\x4f\xff\x51":  # a JP2 file: find the contiguous codestream box
            start = _find_box(fp, b"jp2c")
            if start is None:
                return 0
        fp.seek(start)
        if fp.read(2) != b"\xff\x4f":  # SOC
            return 0
        for _ in range(64):  # main-header markers come before the first tile (SOT)
            marker = fp.read(2)
            if len(marker) < 2 or marker[0] != 0xFF or marker == b"\xff\x90":
                return 0
            length = int.from_bytes(fp.read(2), "big")
            body = fp.read(max(0, length - 2))
            if marker == b"\xff\x52":  # COD: Scod, progression, layers (2), MCT, levels
                return body[5] if len(body) > 5 else 0
        return 0
    except (OSError, ValueError):
        return 0


def _find_box(fp: IO[bytes], kind: bytes) -> int | None:
    """Offset of the contents of the first top-level box of type ``kind`` in a JP2 file."""
    offset = 0
    fp.seek(0)
    for _ in range(1000):
        head = fp.read(8)
        if len(head) < 8:
            return None
        length, box = int.from_bytes(head[:4], "big"), head[4:]
        header = 8
        if length == 1:
            length, header = int.from_bytes(fp.read(8), "big"), 16
        if box == kind:
            return offset + header
        if length == 0 or length < header:  # 0: the last box, up to the end of the file
            return None
        offset += length
        fp.seek(offset)
    return None


def _source(pyvips: Any, fp: IO[bytes]) -> Any:
    """A libvips source over ``fp``: its file descriptor when it has one, else its bytes."""
    try:
        fd = fp.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        return pyvips.Source.new_from_descriptor(fd)  # libvips reads (and seeks) a dup of it
    getbuffer = getattr(fp, "getbuffer", None)
    if getbuffer is not None:
        return pyvips.Source.new_from_memory(bytes(getbuffer()))
    fp.seek(0)
    return pyvips.Source.new_from_memory(fp.read())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    for line in text.splitlines()[1:] or text.splitlines():
        if line.strip():
            return line.strip()
    return text or type(error).__name__
