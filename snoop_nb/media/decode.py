"""Decode any picture safely into a fully loaded RGB PIL image.

Files come from users' disks, so anything can be in them: a picture too large for memory, a
truncated download, a text file named ``.jpg``. :func:`load_image` checks the pixel count from the
header before it decodes a single pixel, and turns every failure into a :class:`MediaError` with a
short, stable ``reason``, so that a long indexing run records the bad file and goes on.

Pictures up to ``max_pixels`` (one gigapixel by default) are read; a caller that needs only a
small picture (the embedder, a grid thumbnail) passes ``min_size`` and a large file is shrunk
while it is decoded, with bounded memory (JPEG and JPEG 2000 through PIL's reduced decoding,
PNG, TIFF, WebP and GIF through libvips: see :mod:`snoop_nb.media.large` for which and why).

It keeps no global state: PIL's process-wide ``Image.MAX_IMAGE_PIXELS`` and
``ImageFile.LOAD_TRUNCATED_IMAGES`` are never changed; the limit is ``max_pixels``.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

from snoop_nb.errors import MediaError
from snoop_nb.media import large

#: The largest picture read by default: one gigapixel (a 40,000 x 25,000 scan). Its header is
#: checked before any pixel is decoded, so a decompression bomb costs nothing.
DEFAULT_MAX_PIXELS = 1_000_000_000
DEFAULT_BACKGROUND = (255, 255, 255)

# Modes whose alpha channel must be composited on the background rather than dropped.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# The formats we decode: those of IMAGE_EXTENSIONS (phones' multi-picture JPEGs open as JPEG).
# PIL reads many more, some through external programs (EPS runs Ghostscript): not from our input.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "JPEG2000")
# PIL's plugin factories report "not my format" with these (as Image.open itself treats them).
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)
_ORIENTATION = ExifTags.Base.Orientation
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # transposed or rotated by 90 degrees
# The formats whose reduced decoding ``draft`` asks for.
_DRAFT_FORMATS = ("JPEG", "JPEG2000")


def load_image(
    source: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    name: Any = None,
    min_size: tuple[int, int] | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``source`` into a loaded RGB image, upright, with transparency composited.

    ``source`` is a path, ``bytes``, a binary file object, a PIL image, or a numpy array
    (HxW, HxWx3 or HxWx4; uint8, uint16, bool, or float in [0, 1]). The result's
    ``info["original_size"]`` is the upright ``(width, height)`` before any reduction.

    ``min_size=(w, h)`` bounds the memory a large picture takes: one of more than
    :data:`~snoop_nb.media.large.LARGE_PIXELS` (4096 x 4096) pixels is shrunk while it is
    decoded, keeping its aspect ratio, to no less than ``w`` x ``h`` (upright): a JPEG by 1/2,
    1/4 or 1/8, a JPEG 2000 by resolution levels, a PNG, TIFF, WebP or GIF through libvips (the
    smallest level big enough of a pyramidal TIFF). Smaller pictures decode whole, exactly as
    without it. ``draft=(w, h)`` trades exactness for speed at any size: a JPEG or JPEG 2000
    decodes at the smallest reduced scale not below ``w`` x ``h`` (for previews).
    ``max_pixels`` refuses larger pictures from their header. ``name`` only names the source
    in errors. Encoded pictures must be in one of :data:`FORMATS`, whatever their file name.
    Every failure raises :class:`MediaError`.

    >>> image = load_image("photos/cat.jpg")  # doctest: +SKIP
    >>> image.mode, image.info["original_size"]  # doctest: +SKIP
    ('RGB', (451, 300))
    """
    if len(background) != 3 or not all(
        isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in background
    ):
        raise ValueError(
            f"background must be an (r, g, b) tuple of 0..255 ints, not {background!r}"
        )
    background = (int(background[0]), int(background[1]), int(background[2]))
    shrink = _Shrink(_size_or_none(min_size), _size_or_none(draft))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = path if name is None else name
        try:
            fp = open(path, "rb")  # noqa: SIM115 -- closed below, after the pixels are read
        except FileNotFoundError:
            reason = "broken symlink" if path.is_symlink() else "file not found"
            raise MediaError(reason, label) from None
        except IsADirectoryError:
            raise MediaError("is a directory", label) from None
        except PermissionError:
            raise MediaError("permission denied", label) from None
        except OSError as e:
            raise MediaError(f"cannot read file: {e.strerror or e}", label) from None
        with fp:
            return _load_encoded(fp, max_pixels, background, label, shrink)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_encoded(io.BytesIO(source), max_pixels, background, name, shrink)
    if isinstance(source, Image.Image):
        return _load_pil(source, max_pixels, background, name)
    if isinstance(source, np.ndarray):
        return _load_array(source, max_pixels, background, name)
    if hasattr(source, "read"):
        return _load_encoded(source, max_pixels, background, name, shrink)
    raise TypeError(
        "load_image() takes a path, bytes, a binary file, a PIL image or a numpy array, "
        f"not {type(source).__name__}"
    )


def _load_encoded(
    fp: IO[bytes],
    max_pixels: int,
    background: tuple[int, int, int],
    name: Any,
    shrink: _Shrink,
) -> Image.Image:
    """Identify, check, decode (shrunk as ``shrink`` allows) and convert a picture."""
    try:
        if not _seekable(fp):
            fp = io.BytesIO(fp.read())
        fp.seek(0)  # as Image.open does: a picture starts at the start of its file
        if not fp.read(1):
            raise MediaError("empty file", name)
    except OSError as e:
        raise MediaError(f"cannot read file: {e.strerror or e}", name) from None
    image = _open(fp, name)
    width, height = image.size
    _check_pixels(width, height, max_pixels, name)
    target = shrink.target(image.format, image.size)
    if target is not None and image.format == "JPEG":
        # A JPEG's EXIF is parsed from the header (other formats' getexif() may decode).
        if _orientation(image) in _SWAPPING_ORIENTATIONS:
            target = (target[1], target[0])
        image.draft("RGB", target)
    elif target is not None and image.format == "JPEG2000":
        reduce = large.jpeg2000_reduce(fp, image.size, target)
        fp.seek(0)
        if reduce:
            image.reduce = reduce  # type: ignore[method-assign,assignment]  # PIL's Jpeg2K option
    elif (target is not None and large.can_stream(image.format, image.size, target)) or (
        image.format in large.STREAM_FORMATS and large.beyond_pil(image.size)
    ):
        # Shrunk through libvips; or whole, where PIL's own ceiling would refuse the picture.
        streamed = large.load_streamed(fp, image.format, target or image.size, name)
        if streamed is not None:
            shrunk, upright = streamed
            rgb = _to_rgb(shrunk, background, name)
            rgb.info["original_size"] = upright
            return rgb
        # libvips read a duplicate of fp's descriptor, which shares its offset: seeking to the
        # end first makes a buffered fp drop its buffer and seek the descriptor for real.
        fp.seek(0, os.SEEK_END)
        fp.seek(0)
    try:
        image.load()
    except Image.DecompressionBombError as e:  # a GIF frame larger than the declared screen
        raise MediaError(f"image too large: {e}", name) from None
    except MemoryError:
        raise MediaError("not enough memory to decode the image", name) from None
    except Exception as e:  # any decoder failure on untrusted bytes means a damaged file
        raise MediaError(f"truncated or corrupt image: {e}", name) from None
    stored = image.size
    _exif_transpose(image, in_place=True)
    rgb = _to_rgb(image, background, name)
    rgb.info["original_size"] = (height, width) if rgb.size != stored else (width, height)
    return rgb


class _Shrink(NamedTuple):
    """What a caller allows: ``min_size`` for large pictures, ``draft`` for any JPEG (2000)."""

    min_size: tuple[int, int] | None
    draft: tuple[int, int] | None

    def target(self, fmt: str | None, size: tuple[int, int]) -> tuple[int, int] | None:
        """The size no less than which this picture may be decoded, or None: decode it whole."""
        target = self.draft if fmt in _DRAFT_FORMATS else None
        if self.min_size is not None and large.is_large(size):
            if target is None:
                target = self.min_size
            else:
                target = (min(target[0], self.min_size[0]), min(target[1], self.min_size[1]))
        return target


def _size_or_none(size: tuple[int, int] | None) -> tuple[int, int] | None:
    return None if size is None else (max(1, int(size[0])), max(1, int(size[1])))


def _open(fp: IO[bytes], name: Any) -> Image.Image:
    """Identify the picture and read its header, without decoding pixels.

    This is ``Image.open`` restricted to :data:`FORMATS`, through PIL's own plugin registry,
    minus its process-wide pixel ceiling: ``Image.open`` warns above 89 million pixels and
    refuses above 179 million, where our limit is ``max_pixels``, checked on the header's size.
    """
    try:
        fp.seek(0)
        prefix = fp.read(16)
    except OSError as e:
        raise MediaError(f"cannot read file: {e.strerror or e}", name) from None
    if not Image.OPEN or any(fmt not in Image.OPEN for fmt in FORMATS):
        Image.init()
    for fmt in FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(prefix) is not True:
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except _NOT_THIS_FORMAT:
            continue
        except Image.DecompressionBombError as e:  # a plugin that checks on its own (GIF)
            raise MediaError(f"image too large: {e}", name) from None
        except MemoryError:
            raise MediaError("not enough memory to read the image header", name) from None
        except Exception as e:
            raise MediaError(f"truncated or corrupt image: {e}", name) from None
    raise MediaError("not an image or unsupported format", name)


def _load_pil(
    image: Image.Image, max_pixels: int, background: tuple[int, int, int], name: Any
) -> Image.Image:
    """Convert a caller's PIL image, never modifying it."""
    width, height = image.size
    _check_pixels(width, height, max_pixels, name)
    try:
        image.load()
    except MemoryError:
        raise MediaError("not enough memory to decode the image", name) from None
    except Exception as e:
        raise MediaError(f"truncated or corrupt image: {e}", name) from None
    upright = _exif_transpose(image, in_place=False)
    rgb = _to_rgb(upright, background, name)
    if rgb is image:
        rgb = image.copy()
    rgb.info["original_size"] = rgb.size
    return rgb


def _load_array(
    array: np.ndarray, max_pixels: int, background: tuple[int, int, int], name: Any
) -> Image.Image:
    """Make an RGB image of an HxW, HxWx1, HxWx3 or HxWx4 array."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise MediaError(
            f"unsupported array shape {array.shape}: expected HxW, HxWx3 or HxWx4", name
        )
    height, width = array.shape[:2]
    if width == 0 or height == 0:
        raise MediaError(f"empty image: {width}x{height} pixels", name)
    _check_pixels(width, height, max_pixels, name)
    pixels = _to_uint8(array, name)
    rgb = _to_rgb(Image.fromarray(np.ascontiguousarray(pixels)), background, name)
    rgb.info["original_size"] = (width, height)
    return rgb


def _to_uint8(array: np.ndarray, name: Any) -> np.ndarray:
    """Scale an array's values to 8 bits: uint16 by 1/257, floats in [0, 1] by 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return _scale_16_bit(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise MediaError(
                "float pixel values must lie in [0, 1]; scale them or convert to uint8", name
            )
        return np.round(array * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() >= 0 and array.max() <= 255:
            return array.astype(np.uint8)
        raise MediaError(
            f"{array.dtype} pixel values must lie in [0, 255]; use uint16 for 16-bit pictures",
            name,
        )
    raise MediaError(f"unsupported array dtype {array.dtype}", name)


def _scale_16_bit(values: np.ndarray) -> np.ndarray:
    """Map 0..65535 onto 0..255, rounding, so that 257 * v comes back as v exactly."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_rgb(image: Image.Image, background: tuple[int, int, int], name: Any) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited on ``background``."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    try:
        if mode.startswith("I;16") or mode in ("I", "F"):
            return Image.fromarray(_high_depth_to_uint8(np.asarray(image))).convert("RGB")
        if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
            if mode == "La":
                image = image.convert("LA")
            rgba = image.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(base, rgba).convert("RGB")
        return image.convert("RGB")
    except MemoryError:
        raise MediaError("not enough memory to convert the image", name) from None
    except (ValueError, OSError) as e:
        raise MediaError(f"unsupported image mode {mode}: {e}", name) from None


def _high_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey levels to 8 bits (PIL's convert clips them)."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        values = np.where(finite, values, 0)
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 1:
            return np.round(values * 255).astype(np.uint8)
    else:
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 65535:
            return _scale_16_bit(values)
    # Out of the usual ranges (signed, 32-bit, HDR floats): stretch what is there.
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    stretched = (values.astype(np.float64) - low) * (255 / (high - low))
    return np.round(stretched).astype(np.uint8)


def _exif_transpose(image: Image.Image, *, in_place: bool) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the picture as stored."""
    try:
        if in_place:
            ImageOps.exif_transpose(image, in_place=True)
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # corrupt EXIF: the pixels are fine, only their orientation is unknown
        return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # a corrupt EXIF block must not make a good picture unreadable
        return 1


def _check_pixels(width: int, height: int, max_pixels: int, name: Any) -> None:
    if width * height > max_pixels:
        raise MediaError(
            f"image too large: {width}x{height} pixels ({width * height:,} > {max_pixels:,}; "
            "raise the limit with --max-pixels)",
            name,
        )


def _seekable(fp: IO[bytes]) -> bool:
    try:
        return fp.seekable()
    except (AttributeError, ValueError):
        return False
