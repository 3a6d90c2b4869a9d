"""Make real picture files for the tests: good ones in every format and mode we read, and bad ones.

The pictures are real photographs shipped with scikit-image (``skimage.data``: no download),
shrunk so that all the files together stay well under 1 MB. Each maker writes into a folder and
returns ``{name: path}``; the constants below say what the tests should find in each file.

    >>> good = make_good_images(tmp_path / "good")
    >>> load_image(good["jpeg"]).size == GOOD_IMAGE_SIZES["jpeg"]
    True
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as photos

# (width, height) of each good picture once decoded and upright.
GOOD_IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "jpeg": (120, 80),
    "png": (120, 80),
    "webp": (64, 64),
    "bmp": (40, 30),
    "gif_animated": (48, 32),
    "webp_animated": (48, 32),
    "tiff": (60, 40),
    "cmyk_jpeg": (90, 60),
    "png_16bit": (90, 60),
    "png_palette_transparent": (60, 40),
    "png_rgba": (60, 40),
    "jpeg_exif_rotated": (80, 120),  # stored 120x80 with orientation 6
    "jpeg_multi_picture": (60, 40),  # MPO, as phones write: two pictures in one .jpg
    "one_pixel": (1, 1),
    "very_wide": (8000, 20),
    "upper_case_extension": (60, 40),
    "non_utf8_name": (60, 40),
    "accented_name": (60, 40),
    "nested": (60, 40),
    "hidden_file": (60, 40),
    "in_hidden_folder": (60, 40),
}

# Good pictures that folder discovery must skip (unless include_hidden).
HIDDEN_IMAGES = frozenset({"hidden_file", "in_hidden_folder"})

# Where each good picture has a known pixel, and what it must decode to on a white background.
# png_16bit: 65535 at (0, 0) -> 255, 0 at (1, 0) -> 0, 1000 at (2, 0) -> 4 (not clipped to 255).
# png_rgba / png_palette_transparent: fully transparent at (0, 0) -> the background colour.
KNOWN_PIXELS: dict[str, dict[tuple[int, int], tuple[int, int, int]]] = {
    "png_16bit": {(0, 0): (255, 255, 255), (1, 0): (0, 0, 0), (2, 0): (4, 4, 4)},
    "png_rgba": {(0, 0): (255, 255, 255)},
    "png_palette_transparent": {(0, 0): (255, 255, 255)},
}

# The MediaError reason each bad file must give (its start: details may follow).
BAD_IMAGE_REASONS: dict[str, str] = {
    "empty": "empty file",
    "truncated_jpeg": "truncated or corrupt image",
    "truncated_png": "truncated or corrupt image",
    "text_named_jpg": "not an image or unsupported format",
    "png_claiming_40000x40000": "image too large: 40000x40000 pixels",
    "broken_symlink": "broken symlink",
}

NON_UTF8_NAME = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 'café.jpg': not valid UTF-8
ACCENTED_NAME = "été à Noël.png"


def photo(which: str = "chelsea", size: tuple[int, int] | None = None) -> Image.Image:
    """A real RGB photograph from scikit-image (chelsea, coffee, astronaut, rocket...)."""
    image = Image.fromarray(getattr(photos, which)()).convert("RGB")
    return image.resize(size, Image.Resampling.LANCZOS) if size else image


def make_good_images(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write one picture per format, mode and naming trap we must read; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, filename: str, image: Image.Image, **params) -> None:
        path = folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **params)
        out[name] = path

    cat = photo("chelsea", (120, 80))
    save("jpeg", "cat.jpg", cat, quality=85)
    save("png", "coffee.png", photo("coffee", (120, 80)))
    save("webp", "astronaut.webp", photo("astronaut", (64, 64)), quality=80)
    save("bmp", "cat.bmp", photo("chelsea", (40, 30)))
    frames = animation_frames()
    save("gif_animated", "animated.gif", frames[0], save_all=True, append_images=frames[1:])
    save(
        "webp_animated",
        "animated.webp",
        frames[0],
        save_all=True,
        append_images=frames[1:],
        lossless=True,
    )
    save("tiff", "coffee.tif", photo("coffee", (60, 40)), compression="tiff_lzw")
    save("cmyk_jpeg", "cmyk.jpg", photo("chelsea", (90, 60)).convert("CMYK"), quality=90)
    save("png_16bit", "grey16.png", grey_16_bit((90, 60)))
    save("png_palette_transparent", "palette.png", palette_with_transparency((60, 40)))
    save("png_rgba", "rgba.png", rgba_with_transparency((60, 40)))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    save("jpeg_exif_rotated", "rotated.jpg", cat, exif=exif, quality=85)
    save(
        "jpeg_multi_picture",
        "phone.jpg",
        photo("coffee", (60, 40)),
        format="MPO",
        save_all=True,
        append_images=[photo("chelsea", (60, 40))],
    )
    save("one_pixel", "one_pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))
    save("very_wide", "very_wide.jpg", photo("rocket", (8000, 20)), quality=70)
    small = photo("coffee", (60, 40))
    save("upper_case_extension", "PHOTO.JPG", small)
    save("non_utf8_name", NON_UTF8_NAME, small)
    save("accented_name", ACCENTED_NAME, small)
    save("nested", "sub/deeper/nested.png", small)
    save("hidden_file", ".hidden.jpg", small)
    save("in_hidden_folder", ".hidden_folder/inside.jpg", small)
    (folder / "notes.txt").write_text("not a picture, and not named like one\n")
    return out


def make_bad_images(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write damaged and hostile files with image names; return their paths.

    ``symlink_loop`` is a folder link pointing to its parent, for discovery (not a picture).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def write(name: str, filename: str, content: bytes) -> None:
        out[name] = folder / filename
        out[name].write_bytes(content)

    write("empty", "empty.jpg", b"")
    write("truncated_jpeg", "truncated.jpg", _first_half(encode(photo("chelsea"), "JPEG")))
    write("truncated_png", "truncated.png", _first_half(encode(photo("coffee", (120, 80)), "PNG")))
    write("text_named_jpg", "notes.jpg", b"These are my holiday notes, not a picture.\n" * 4)
    write("png_claiming_40000x40000", "huge.png", png_claiming_size(40000, 40000))
    out["broken_symlink"] = folder / "broken.png"
    out["broken_symlink"].symlink_to(folder / "no-such-target.png")
    (folder / "loop").mkdir()
    out["symlink_loop"] = folder / "loop" / "parent"
    out["symlink_loop"].symlink_to("..", target_is_directory=True)
    return out


def animation_frames(size: tuple[int, int] = (48, 32)) -> list[Image.Image]:
    """Three different photographs, to tell the first frame from the others."""
    return [photo(which, size) for which in ("chelsea", "coffee", "astronaut")]


def grey_16_bit(size: tuple[int, int]) -> Image.Image:
    """A 16-bit grey photograph (mode I;16) with 65535, 0 and 1000 in its first three pixels."""
    grey = np.asarray(photo("chelsea", size).convert("L")).astype(np.uint16) * 257
    grey[0, :3] = (65535, 0, 1000)
    image = Image.fromarray(grey)
    assert image.mode == "I;16", image.mode
    return image


def palette_with_transparency(size: tuple[int, int]) -> Image.Image:
    """A 16-colour palette photograph whose pixel (0, 0) uses a fully transparent entry."""
    image = photo("coffee", size).quantize(colors=15)
    palette = [*image.getpalette()[: 15 * 3], 0, 255, 0]  # entry 15: green, fully transparent
    image.putpalette(palette)
    image.putpixel((0, 0), 15)
    image.info["transparency"] = 15
    return image


def rgba_with_transparency(size: tuple[int, int]) -> Image.Image:
    """A photograph whose alpha goes from 0 (left column) to 255 (right), black under pixel (0, 0)."""
    image = photo("coffee", size).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, size[0]).round().astype(np.uint8), (size[1], 1))
    image.putalpha(Image.fromarray(alpha))
    image.putpixel((0, 0), (0, 0, 0, 0))
    return image


def png_claiming_size(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming ``width`` x ``height`` RGB pixels, with almost no data.

    Decoding it would need width * height * 3 bytes of memory before finding the data missing.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _first_half(content: bytes) -> bytes:
    return content[: len(content) // 2]


# --- large pictures (heritage scans, clip-art): written as streams, never held whole -----------


def clip_art(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Flat clip-art: outlined ellipses and boxes of solid colours on a transparent background."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = (
            x0 + int(rng.integers(w // 20 + 1, w // 3 + 2)),
            y0 + int(rng.integers(h // 20 + 1, h // 3 + 2)),
        )
        colour = (*(int(c) for c in rng.integers(0, 256, 3)), 255)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0, 255), width=max(1, w // 300))
    return image


def large_clip_art(size: tuple[int, int], seed: int = 0, zoom: int = 10):
    """A libvips image of ``size``: :func:`clip_art` at 1/``zoom``, enlarged (smooth edges).

    Lazy: saving it streams rows, so a 170-megapixel PNG is written in seconds and ~100 MB.
    """
    import pyvips

    w, h = size
    small = clip_art((-(-w // zoom), -(-h // zoom)), seed)
    vips = pyvips.Image.new_from_array(np.asarray(small)).copy(interpretation="srgb")
    return vips.resize(zoom, kernel="linear").crop(0, 0, w, h)


def write_large_png(path: str | os.PathLike[str], size: tuple[int, int], seed: int = 0) -> Path:
    """A flat clip-art RGBA PNG of ``size`` (a few MB even at 170 megapixels)."""
    large_clip_art(size, seed).pngsave(str(path), compression=6)
    return Path(path)


def write_pyramid_tiff(
    path: str | os.PathLike[str], size: tuple[int, int], seed: int = 0, compression: str = "jpeg"
) -> Path:
    """A tiled (256 x 256) pyramidal RGB TIFF of clip-art, as libvips and scanners write them."""
    large_clip_art(size, seed).flatten(background=[255, 255, 255]).cast("uchar").tiffsave(
        str(path), tile=True, pyramid=True, compression=compression, tile_width=256, tile_height=256
    )
    return Path(path)


def write_telltale_pyramid(
    path: str | os.PathLike[str],
    size: tuple[int, int],
    full: tuple[int, int, int] = (255, 0, 0),
    reduced: tuple[int, int, int] = (0, 0, 255),
    levels: int = 5,
) -> Path:
    """A tiled page pyramid whose full level is all ``full`` and whose halved levels are all
    ``reduced``: the colour decoded says which level a reader used."""
    import tifffile

    def tiles(colour: tuple[int, int, int], w: int, h: int):
        tile = np.empty((256, 256, 3), np.uint8)
        tile[:] = colour
        for _ in range(-(-w // 256) * -(-h // 256)):
            yield tile

    w, h = size
    with tifffile.TiffWriter(path) as tif:
        options = dict(dtype=np.uint8, tile=(256, 256), compression="zlib", photometric="rgb")
        tif.write(tiles(full, w, h), shape=(h, w, 3), **options)
        for _ in range(levels):
            w, h = -(-w // 2), -(-h // 2)
            tif.write(tiles(reduced, w, h), shape=(h, w, 3), subfiletype=1, **options)
    return Path(path)


def write_jpeg2000(
    path: str | os.PathLike[str], image: Image.Image, resolutions: int = 6, **params
) -> Path:
    """``image`` as JPEG 2000 (a .jp2 file, or a bare codestream for .j2k), tiled 1024 x 1024,
    with ``resolutions`` resolution levels (``resolutions - 1`` halvings)."""
    image.save(
        path,
        "JPEG2000",
        tile_size=(1024, 1024),
        num_resolutions=resolutions,
        irreversible=True,
        quality_mode="dB",
        quality_layers=[38],
        **params,
    )
    return Path(path)
