"""Discovery and safe decoding of real picture files (snoop_nb.media)."""

from __future__ import annotations

import io
import logging
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from mediafiles import (
    ACCENTED_NAME,
    BAD_IMAGE_REASONS,
    GOOD_IMAGE_SIZES,
    HIDDEN_IMAGES,
    KNOWN_PIXELS,
    NON_UTF8_NAME,
    animation_frames,
    encode,
    make_bad_images,
    make_good_images,
    photo,
    png_claiming_size,
    rgba_with_transparency,
)
from PIL import Image

from snoop_nb.errors import MediaError, UsageError
from snoop_nb.media import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, decode, discover_images, load_image


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    return make_good_images(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return make_bad_images(tmp_path_factory.mktemp("bad"))


def stored(path: Path) -> tuple[str, tuple[int, int], int, np.ndarray]:
    """Mode, size, frame count and pixels of a file as PIL stores it (nothing converted)."""
    with Image.open(path) as image:
        return image.mode, image.size, getattr(image, "n_frames", 1), np.asarray(image)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


# --- decoding good pictures -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOOD_IMAGE_SIZES))
def test_every_good_picture_decodes_to_rgb_at_its_size(good, name):
    image = load_image(good[name])
    assert image.mode == "RGB"
    assert image.size == GOOD_IMAGE_SIZES[name]
    assert image.info["original_size"] == GOOD_IMAGE_SIZES[name]
    assert pixels(image).std() > 0 or name == "one_pixel"  # real content, not a blank canvas


@pytest.mark.parametrize("name", sorted(KNOWN_PIXELS))
def test_known_pixels_decode_to_their_expected_colours(good, name):
    image = load_image(good[name])
    for xy, colour in KNOWN_PIXELS[name].items():
        assert image.getpixel(xy) == colour, (name, xy)


def test_jpeg_decodes_close_to_the_photograph_it_was_made_from(good):
    assert mean_difference(load_image(good["jpeg"]), photo("chelsea", (120, 80))) < 6


def test_exif_rotated_jpeg_is_upright(good):
    assert stored(good["jpeg_exif_rotated"])[1] == (120, 80)
    image = load_image(good["jpeg_exif_rotated"])
    assert image.size == (80, 120)
    assert image.info["original_size"] == (80, 120)
    # Orientation 6 means "rotate 90 degrees clockwise to display".
    upright = photo("chelsea", (120, 80)).transpose(Image.Transpose.ROTATE_270)
    assert mean_difference(image, upright) < 6
    assert mean_difference(image, upright.transpose(Image.Transpose.ROTATE_180)) > 20


def test_cmyk_jpeg_keeps_its_colours(good):
    assert stored(good["cmyk_jpeg"])[0] == "CMYK"
    assert mean_difference(load_image(good["cmyk_jpeg"]), photo("chelsea", (90, 60))) < 6


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(good):
    mode, _, _, source = stored(good["png_16bit"])
    assert mode == "I;16"
    expected = (source.astype(np.uint32) + 128) // 257
    image = load_image(good["png_16bit"])
    channels = pixels(image)
    assert (channels[:, :, 0] == channels[:, :, 2]).all()
    np.testing.assert_array_equal(channels[:, :, 0], expected)
    assert image.getpixel((2, 0)) == (4, 4, 4)  # 1000 / 257, where a clip would give 255


def test_transparent_rgba_pixels_are_composited_on_the_background(good):
    source = stored(good["png_rgba"])[3].astype(np.float64)
    red = (255, 0, 0)
    image = load_image(good["png_rgba"], background=red)
    assert image.getpixel((0, 0)) == red
    alpha = source[:, :, 3:] / 255
    expected = source[:, :, :3] * alpha + np.array(red) * (1 - alpha)
    assert np.abs(pixels(image) - expected).max() <= 1
    half = 30  # a half-transparent column: a blend, neither the photo nor the background
    assert 0.3 < alpha[0, half, 0] < 0.7
    assert not np.allclose(pixels(image)[:, half], source[:, half, :3], atol=2)


def test_palette_transparency_is_composited_not_dropped(good):
    assert stored(good["png_palette_transparent"])[0] == "P"
    # The transparent entry is pure green: dropping alpha would show it.
    assert load_image(good["png_palette_transparent"]).getpixel((0, 0)) == (255, 255, 255)
    blue = load_image(good["png_palette_transparent"], background=(0, 0, 255))
    assert blue.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("name", ["gif_animated", "webp_animated"])
def test_animated_picture_gives_its_first_frame(good, name):
    assert stored(good[name])[2] == 3
    image = load_image(good[name])
    distances = [mean_difference(image, frame) for frame in animation_frames()]
    assert distances[0] < 12
    assert distances[0] < min(distances[1:]) / 2


def test_jpeg_draft_decodes_smaller_but_reports_the_original_size(tmp_path):
    path = tmp_path / "big.jpg"
    photo("chelsea").save(path, quality=90)  # 451x300
    image = load_image(path, draft=(100, 100))
    assert image.mode == "RGB"
    assert image.size == (226, 150)  # JPEG's 1/2 scale: the smallest not below the target
    assert image.info["original_size"] == (451, 300)
    assert load_image(path).size == (451, 300)  # without draft, full size


def test_jpeg_draft_target_is_upright_for_rotated_pictures(good):
    image = load_image(good["jpeg_exif_rotated"], draft=(20, 30))
    assert image.size == (20, 30)
    assert image.info["original_size"] == (80, 120)


def test_draft_is_ignored_for_formats_other_than_jpeg(good):
    assert load_image(good["png"], draft=(10, 10)).size == (120, 80)


def test_multi_picture_jpeg_gives_its_first_picture(good):
    assert stored(good["jpeg_multi_picture"])[2] == 2
    image = load_image(good["jpeg_multi_picture"])
    first, second = (mean_difference(image, photo(w, (60, 40))) for w in ("coffee", "chelsea"))
    assert first < 12
    assert first < second / 2


def test_accepts_bytes_file_objects_and_unseekable_streams(good):
    data = good["jpeg"].read_bytes()
    expected = load_image(good["jpeg"])

    class Unseekable(io.RawIOBase):
        def __init__(self, content: bytes):
            self._stream = io.BytesIO(content)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            return self._stream.readinto(buffer)

    for source in (data, bytearray(data), io.BytesIO(data), Unseekable(data), str(good["jpeg"])):
        image = load_image(source)
        assert image.mode == "RGB"
        assert pixels(image).tolist() == pixels(expected).tolist()


def test_pil_image_is_converted_without_modifying_the_callers_image():
    rgba = rgba_with_transparency((60, 40))
    before = rgba.tobytes()
    image = load_image(rgba)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert rgba.mode == "RGBA" and rgba.tobytes() == before
    assert "original_size" not in rgba.info
    cat = photo("chelsea", (30, 20))
    copy = load_image(cat)
    assert copy is not cat and "original_size" not in cat.info


def test_pil_image_with_exif_orientation_is_made_upright(good):
    with Image.open(good["jpeg_exif_rotated"]) as opened:
        image = load_image(opened)
        assert image.size == (80, 120)
        assert opened.size == (120, 80)


def test_numpy_arrays_of_every_supported_shape_and_dtype():
    rgb = np.asarray(photo("coffee", (30, 20)))
    grey = rgb[:, :, 0]
    cases = {
        "uint8 HxWx3": (rgb, rgb),
        "uint8 HxW": (grey, np.repeat(grey[:, :, None], 3, axis=2)),
        "uint8 HxWx1": (grey[:, :, None], np.repeat(grey[:, :, None], 3, axis=2)),
        "float in [0, 1]": (rgb / 255.0, rgb),
        "uint16": (rgb.astype(np.uint16) * 257, rgb),
        "int64 in [0, 255]": (rgb.astype(np.int64), rgb),
        "bool": (grey > 128, np.repeat(((grey > 128) * 255)[:, :, None], 3, axis=2)),
    }
    for label, (array, expected) in cases.items():
        image = load_image(array)
        assert image.mode == "RGB", label
        assert image.size == (30, 20), label
        assert image.info["original_size"] == (30, 20), label
        np.testing.assert_array_equal(np.asarray(image), expected, err_msg=label)


def test_numpy_alpha_is_composited_and_uint16_full_scale_is_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)
    rgba[0, 1] = (10, 20, 30, 255)
    image = load_image(rgba, background=(0, 255, 0))
    assert image.getpixel((0, 0)) == (0, 255, 0)
    assert image.getpixel((1, 0)) == (10, 20, 30)
    assert load_image(np.full((3, 3), 65535, np.uint16)).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.full((4, 4, 3), 2.0), "float pixel values must lie in [0, 1]"),
        (np.full((4, 4), np.nan, np.float32), "float pixel values must lie in [0, 1]"),
        (np.full((4, 4, 3), 300, np.int32), "int32 pixel values must lie in [0, 255]"),
        (np.zeros((4, 4, 2), np.uint8), "unsupported array shape"),
        (np.zeros((4,), np.uint8), "unsupported array shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty image"),
    ],
)
def test_unusable_numpy_arrays_raise_media_error(array, reason):
    with pytest.raises(MediaError) as caught:
        load_image(array, name="frame 7")
    assert caught.value.reason.startswith(reason)
    assert caught.value.path == "frame 7"


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "La", "P", "PA", "I", "I;16", "I;16B", "F", "CMYK", "YCbCr", "RGBa"]
)
def test_every_pil_mode_converts_to_rgb(mode):
    image = load_image(Image.new(mode, (5, 4)))
    assert image.mode == "RGB"
    assert image.size == (5, 4)


def test_float_and_32_bit_pil_images_are_scaled_not_clipped():
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    image = load_image(Image.fromarray(ramp))  # mode F, values in [0, 1]
    assert image.getpixel((15, 15)) == (255, 255, 255)
    assert image.getpixel((8, 0)) == (8, 8, 8)
    wide = Image.fromarray((ramp * 1_000_000).astype(np.int32))  # mode I, beyond 16 bits
    assert wide.mode == "I"
    stretched = load_image(wide)
    assert stretched.getpixel((0, 0)) == (0, 0, 0)
    assert stretched.getpixel((15, 15)) == (255, 255, 255)
    assert 100 < stretched.getpixel((0, 8))[0] < 155


def test_non_utf8_and_accented_file_names_are_read(good):
    assert good["non_utf8_name"].name == NON_UTF8_NAME
    assert os.fsencode(good["non_utf8_name"].name) == b"caf\xe9.jpg"
    assert good["accented_name"].name == ACCENTED_NAME
    for name in ("non_utf8_name", "accented_name"):
        assert load_image(good[name]).size == (60, 40)
        assert load_image(os.fspath(good[name])).size == (60, 40)


# --- refusing bad pictures --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_IMAGE_REASONS))
def test_each_bad_file_raises_media_error_with_its_reason(bad, name):
    with pytest.raises(MediaError) as caught:
        load_image(bad[name])
    assert caught.value.reason.startswith(BAD_IMAGE_REASONS[name])
    assert caught.value.path == bad[name]


@pytest.mark.parametrize("name", sorted(set(BAD_IMAGE_REASONS) - {"broken_symlink"}))
def test_bad_bytes_raise_the_same_reason_named_by_the_caller(bad, name):
    # The embedding pipeline reads files itself and hands the bytes over with their path.
    with pytest.raises(MediaError) as caught:
        load_image(io.BytesIO(bad[name].read_bytes()), name=bad[name])
    assert caught.value.reason.startswith(BAD_IMAGE_REASONS[name])
    assert caught.value.path == bad[name]
    assert str(bad[name]) in str(caught.value)


def test_png_claiming_40000x40000_is_refused_before_decoding(bad):
    start = time.perf_counter()
    with pytest.raises(MediaError) as caught:
        load_image(bad["png_claiming_40000x40000"])
    assert time.perf_counter() - start < 0.5
    # Decoding would have failed on the missing data ("truncated"): the header check came first.
    assert DEFAULT_MAX_PIXELS == 1_000_000_000  # one gigapixel
    assert caught.value.reason == (
        "image too large: 40000x40000 pixels (1,600,000,000 > 1,000,000,000; "
        "raise the limit with --max-pixels)"
    )


def test_huge_header_with_garbage_pixel_data_is_still_too_large():
    data = bytearray(png_claiming_size(40000, 30000))  # 1.2 gigapixels
    idat = data.index(b"IDAT") + 4
    data[idat : idat + 8] = b"\xde\xad\xbe\xef" * 2  # not zlib any more
    for min_size in (None, (512, 512)):
        with pytest.raises(MediaError) as caught:
            load_image(bytes(data), min_size=min_size)
        assert caught.value.reason == (
            "image too large: 40000x30000 pixels (1,200,000,000 > 1,000,000,000; "
            "raise the limit with --max-pixels)"
        )


def test_pixel_limit_is_ours_not_pils(good):
    with pytest.raises(MediaError) as caught:
        load_image(good["jpeg"], max_pixels=5000)
    assert caught.value.reason == (
        "image too large: 120x80 pixels (9,600 > 5,000; raise the limit with --max-pixels)"
    )
    assert load_image(good["jpeg"], max_pixels=120 * 80).size == (120, 80)
    # Above PIL's own ceiling (about 179 million pixels) our larger limit still decides: this
    # header passes it, and decoding then finds the pixel data missing.
    with pytest.raises(MediaError) as caught:
        load_image(png_claiming_size(15000, 15000), max_pixels=300_000_000)
    assert caught.value.reason.startswith("truncated or corrupt image")


def test_pil_bomb_warnings_turned_into_errors_do_not_refuse_allowed_pictures():
    # 95 million pixels: under our default limit, over the level where PIL warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MediaError) as caught:
            load_image(png_claiming_size(10000, 9500))
    assert caught.value.reason.startswith("truncated or corrupt image")


def test_opening_past_pils_ceiling_reads_the_same_picture(good):
    # Our opener (PIL's registry without its ceiling) must give PIL's own result.
    with good["tiff"].open("rb") as fp:
        image = decode._open(fp, "x")
        image.load()
        assert image.format == "TIFF"
        assert pixels(image).tolist() == stored(good["tiff"])[3].tolist()


def test_formats_run_by_external_programs_are_refused(tmp_path):
    eps = tmp_path / "drawing.jpg"  # PostScript: PIL would hand it to Ghostscript
    photo("coffee", (30, 20)).save(eps, "EPS")
    assert eps.read_bytes().startswith(b"%!PS")
    with pytest.raises(MediaError) as caught:
        load_image(eps)
    assert caught.value.reason == "not an image or unsupported format"
    assert "JPEG" in decode.FORMATS and "EPS" not in decode.FORMATS


def test_a_malformed_background_is_a_caller_error(good):
    with pytest.raises(ValueError, match="background"):
        load_image(good["png_rgba"], background="white")
    black = load_image(good["png_rgba"], background=np.zeros(3, np.uint8))
    assert black.getpixel((0, 0)) == (0, 0, 0)


def test_directory_and_missing_file_raise_media_error(tmp_path):
    with pytest.raises(MediaError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(MediaError) as caught:
        load_image(tmp_path / "gone.jpg")
    assert caught.value.reason == "file not found"


def test_unsupported_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="not list"):
        load_image([[0, 1], [2, 3]])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_damaged_files_only_ever_raise_media_error(fmt):
    content = encode(photo("astronaut", (48, 48)), fmt)
    rng = random.Random(fmt)
    damaged = [content[:cut] for cut in sorted(rng.sample(range(1, len(content)), 25))]
    for _ in range(40):
        corrupt = bytearray(content)
        for _ in range(rng.randint(1, 6)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        damaged.append(bytes(corrupt))
    failures = 0
    for data in damaged:
        try:
            image = load_image(data)
        except MediaError as e:
            failures += 1
            assert e.reason
        else:  # damage the decoder cannot see (a changed pixel, or a header field) is allowed
            assert image.mode == "RGB"
            assert image.info["original_size"] == image.size
    assert failures > 0


# --- discovery --------------------------------------------------------------------------------


def test_image_extensions_are_the_documented_ones():
    assert {
        *(".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
        *(".jp2", ".jpx", ".j2k"),
    } == IMAGE_EXTENSIONS


def test_discovery_yields_every_visible_picture_sorted(good):
    folder = good["jpeg"].parent
    found = list(discover_images([folder]))
    expected = sorted(path for name, path in good.items() if name not in HIDDEN_IMAGES)
    assert found == expected
    assert all(isinstance(path, Path) for path in found)
    assert good["upper_case_extension"] in found  # PHOTO.JPG
    assert good["nested"] in found  # sub/deeper/nested.png
    assert folder / "notes.txt" not in found


def test_discovery_includes_hidden_files_only_when_asked(good):
    folder = good["jpeg"].parent
    found = list(discover_images([folder], include_hidden=True))
    assert found == sorted(good.values())
    assert good["hidden_file"] in found and good["in_hidden_folder"] in found


def test_discovery_order_does_not_depend_on_creation_order(tmp_path):
    names = [f"{letter}{i}.png" for letter in "bca" for i in range(5)] + ["A.JPG", "z/a.gif"]
    orders = []
    for attempt in range(2):
        folder = tmp_path / f"tree{attempt}"
        random.Random(attempt).shuffle(names)
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
        orders.append([p.relative_to(folder).as_posix() for p in discover_images([folder])])
    assert orders[0] == orders[1] == sorted(names)


def test_discovery_survives_a_symlink_loop_and_yields_the_broken_symlink(bad):
    folder = bad["empty"].parent
    assert bad["symlink_loop"].resolve() == folder.resolve()
    found = list(discover_images([folder]))
    assert len(found) == len(set(found))
    assert bad["broken_symlink"] in found
    assert not bad["broken_symlink"].exists()
    expected = sorted(path for name, path in bad.items() if name != "symlink_loop")
    assert found == expected


def test_linked_folders_are_followed_but_each_picture_comes_once(good, tmp_path):
    source = good["jpeg"].parent
    (tmp_path / "link").symlink_to(source, target_is_directory=True)
    (tmp_path / "also_cat.jpg").symlink_to(good["jpeg"])
    found = list(discover_images([tmp_path]))
    assert tmp_path / "also_cat.jpg" in found
    assert tmp_path / "link" / "cat.jpg" not in found  # the same file, seen first as also_cat
    assert tmp_path / "link" / "coffee.png" in found
    # Overlapping arguments: the folder and a file in it, the folder twice.
    again = list(discover_images([source, good["png"], source / "sub", source]))
    assert again == list(discover_images([source]))


def test_discovery_handles_non_utf8_names(good):
    found = list(discover_images([good["jpeg"].parent]))
    names = {os.fsencode(path.name) for path in found}
    assert b"caf\xe9.jpg" in names
    assert ACCENTED_NAME.encode() in names


def test_a_file_argument_is_yielded_if_it_is_a_picture(good, tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    found = list(discover_images([good["png"], text, str(good["upper_case_extension"])]))
    assert found == [good["png"], good["upper_case_extension"]]
    assert list(discover_images([good["hidden_file"]])) == [good["hidden_file"]]


def test_missing_path_is_a_usage_error_before_anything_is_yielded(good, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UsageError, match=f"{missing}: no such file or directory"):
        discover_images([good["jpeg"].parent, missing])


def test_unreadable_folder_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    for name in ("open/a.jpg", "locked/b.jpg", "z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    # Running as root, chmod would not lock anything: make the folder unreadable this way.
    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="snoop_nb.media.discover"):
        found = list(discover_images([tmp_path]))
    assert found == [tmp_path / "open" / "a.jpg", tmp_path / "z.png"]
    assert "locked" in caplog.text and "Permission denied" in caplog.text
