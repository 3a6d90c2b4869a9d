"""Pictures of every real size: shrink-on-load, pyramids, JPEG 2000, the gigapixel cap, and the
embedding pipeline and grid thumbnails on them (snoop_nb.media.large, load_image(min_size=)).

The files are made here, as streams (tests/mediafiles.py): flat clip-art PNGs, tiled pyramidal
TIFFs, JPEG 2000; nothing is downloaded or committed.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from mediafiles import (
    clip_art,
    large_clip_art,
    photo,
    png_claiming_size,
    write_jpeg2000,
    write_large_png,
    write_pyramid_tiff,
    write_telltale_pyramid,
)
from PIL import Image, ImageFile

from snoop_nb.embed.base import Embedder
from snoop_nb.embed.pipeline import decode_for, decode_size, embed_stream
from snoop_nb.errors import MediaError
from snoop_nb.media import DEFAULT_MAX_PIXELS, discover_images, large, load_image

# 5000 x 3600 = 18 million pixels: just above large.LARGE_PIXELS, quick to write and compare.
LARGE = (5000, 3600)
CAP_MESSAGE = "raise the limit with --max-pixels"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("large")
    out = {"png": write_large_png(folder / "clipart.png", LARGE)}
    import pyvips
    import tifffile

    rotated = large_clip_art(LARGE, seed=1).copy()
    rotated.set_type(pyvips.GValue.gint_type, "orientation", 6)  # display rotated 90 clockwise
    rotated.pngsave(str(folder / "rotated.png"))
    out["png_rotated"] = folder / "rotated.png"
    out["pyramid"] = write_pyramid_tiff(folder / "scan.tif", (6000, 5000))
    out["telltale"] = write_telltale_pyramid(folder / "telltale.tif", (6000, 4000))
    out["jp2"] = write_jpeg2000(folder / "scan.jp2", clip_art(LARGE, seed=2).convert("RGB"))
    grey = (np.linspace(0, 65535, LARGE[0])[None, :] * np.ones((LARGE[1], 1))).astype(np.uint16)
    grey[:, :50] = 65535
    tifffile.imwrite(folder / "grey16.tif", grey, compression="zlib")
    out["grey16"] = folder / "grey16.tif"
    return out


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    b = b.resize(a.size, Image.Resampling.BOX)
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


# --- load_image(min_size=...) -----------------------------------------------------------------


def test_large_png_is_shrunk_while_decoding_to_no_less_than_min_size(files):
    whole = load_image(files["png"], background=(255, 0, 0))
    assert whole.size == LARGE
    shrunk = load_image(files["png"], min_size=(512, 512), background=(255, 0, 0))
    assert shrunk.mode == "RGB"
    assert min(shrunk.size) == 512 and shrunk.size == (711, 512)
    assert shrunk.info["original_size"] == LARGE
    assert mean_difference(shrunk, whole) < 4
    # the clip-art's transparent background is composited on the background asked for
    assert np.asarray(whole)[0, 0].tolist() == [255, 0, 0]
    assert (np.asarray(shrunk)[:, :, 0] > 250).mean() > 0.2


def test_a_non_square_min_size_is_met_on_both_sides(files):
    shrunk = load_image(files["png"], min_size=(100, 900))
    assert shrunk.size[1] >= 900 and shrunk.size[0] >= 100
    assert shrunk.size == (1250, 900)


def test_pictures_up_to_the_threshold_decode_exactly_as_without_min_size(tmp_path):
    side = int(large.LARGE_PIXELS**0.5)  # 4096 x 4096: not "large"
    png = write_large_png(tmp_path / "edge.png", (side, side))
    assert np.array_equal(
        np.asarray(load_image(png, min_size=(512, 512))), np.asarray(load_image(png))
    )
    jpeg = tmp_path / "photo.jpg"
    photo("astronaut", (2048, 2048)).save(jpeg, quality=90)
    assert load_image(jpeg, min_size=(512, 512)).size == (2048, 2048)  # decoded whole
    assert load_image(jpeg, draft=(512, 512)).size == (512, 512)  # a preview may be reduced


def test_exif_rotated_large_png_is_upright(files):
    shrunk = load_image(files["png_rotated"], min_size=(512, 512))
    assert shrunk.info["original_size"] == (LARGE[1], LARGE[0])
    assert shrunk.size[1] > shrunk.size[0] and min(shrunk.size) == 512
    whole = load_image(files["png_rotated"])
    assert whole.size == (LARGE[1], LARGE[0])
    assert mean_difference(shrunk, whole) < 4


def test_16_bit_grey_tiff_is_scaled_to_8_bits_when_shrunk(files):
    shrunk = load_image(files["grey16"], min_size=(256, 256))
    assert min(shrunk.size) == 256
    values = np.asarray(shrunk)[:, :, 0]
    assert values[:, 0].min() == 255  # full scale, not clipped nor wrapped
    assert abs(int(values[:, shrunk.width // 2].mean()) - 128) <= 2  # mid-grey stays mid-grey
    assert mean_difference(shrunk, load_image(files["grey16"])) < 2


def test_pyramidal_tiff_reads_its_smallest_level_big_enough(files):
    # full level red, every halved level blue: the colour says which level was read
    assert load_image(files["telltale"]).getpixel((10, 10)) == (255, 0, 0)
    small = load_image(files["telltale"], min_size=(256, 256))
    assert small.getpixel((10, 10)) == (0, 0, 255)
    assert min(small.size) == 256 and small.info["original_size"] == (6000, 4000)
    level1 = load_image(files["telltale"], min_size=(2900, 1900))  # the first halving: 3000 x 2000
    assert level1.size == (2900, 1933) and level1.getpixel((10, 10)) == (0, 0, 255)
    # needing more than the first halving: the full level
    assert load_image(files["telltale"], min_size=(4000, 3000)).getpixel((10, 10)) == (255, 0, 0)


def test_tiled_jpeg_pyramid_as_libvips_writes_it(files):
    start = time.perf_counter()
    shrunk = load_image(files["pyramid"], min_size=(512, 512))
    elapsed = time.perf_counter() - start
    assert shrunk.size == (614, 512) and shrunk.info["original_size"] == (6000, 5000)
    assert mean_difference(shrunk, load_image(files["pyramid"])) < 4
    assert elapsed < 2


def test_jpeg2000_decodes_whole_and_at_reduced_resolution_levels(files):
    whole = load_image(files["jp2"])
    assert whole.size == LARGE and whole.mode == "RGB"
    assert mean_difference(whole, clip_art(LARGE, seed=2).convert("RGB")) < 3
    shrunk = load_image(files["jp2"], min_size=(512, 512))
    assert shrunk.size == (1250, 900)  # 1/4: at 1/8 it would be 450 high, below 512
    assert shrunk.info["original_size"] == LARGE
    assert mean_difference(shrunk, whole) < 4
    # at 1/32 PIL would size it 156 wide where OpenJPEG makes 157, and fail: 1/16 it is
    assert load_image(files["jp2"], min_size=(64, 64)).size == (313, 225)


def test_jpeg2000_reduction_stops_at_the_codestreams_levels(tmp_path):
    image = photo("coffee", (1200, 800))
    for resolutions, expected in ((2, (600, 400)), (6, (38, 25))):  # 1 and 5 halvings
        for suffix in (".jp2", ".j2k"):
            path = write_jpeg2000(tmp_path / f"r{resolutions}{suffix}", image, resolutions)
            decoded = load_image(path, draft=(1, 1))
            assert decoded.size == expected, (path, decoded.size)
            assert decoded.info["original_size"] == (1200, 800)
    assert load_image(tmp_path / "r6.jp2", draft=(200, 200)).size == (300, 200)


def test_bytes_file_objects_and_paths_give_the_same_shrunk_picture(files):
    expected = np.asarray(load_image(files["png"], min_size=(300, 300)))
    data = files["png"].read_bytes()
    with files["png"].open("rb") as fp:
        sources = [data, io.BytesIO(data), fp, str(files["png"])]
        for source in sources:
            assert np.array_equal(np.asarray(load_image(source, min_size=(300, 300))), expected)


def test_no_pil_global_state_changes_and_no_bomb_warnings(files):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns above 89 million pixels: not through us
        for name in ("png", "pyramid", "jp2", "grey16"):
            load_image(files[name], min_size=(256, 256))
        with pytest.raises(MediaError, match="truncated"):
            load_image(png_claiming_size(12000, 10000), min_size=(256, 256))
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


# --- the cap, and damaged large files ---------------------------------------------------------


def test_default_cap_is_one_gigapixel_and_its_refusal_names_the_option(tmp_path):
    assert DEFAULT_MAX_PIXELS == 1_000_000_000
    start = time.perf_counter()
    with pytest.raises(MediaError) as caught:
        load_image(png_claiming_size(40000, 30000), min_size=(512, 512))
    assert time.perf_counter() - start < 0.5  # from the header, nothing decoded
    assert caught.value.reason == (
        f"image too large: 40000x30000 pixels (1,200,000,000 > 1,000,000,000; {CAP_MESSAGE})"
    )
    # a real file over a lowered cap, through the pipeline's max_pixels
    path = write_large_png(tmp_path / "big.png", LARGE)
    with pytest.raises(MediaError) as caught:
        load_image(path, max_pixels=10_000_000)
    assert caught.value.reason.endswith(f"(18,000,000 > 10,000,000; {CAP_MESSAGE})")


def test_truncated_large_files_are_media_errors(files, tmp_path):
    # (the telltale pyramid's full level comes first: a cut anywhere in it loses tiles)
    for name, fractions in (
        ("png", (0.3, 0.7, 0.98)),
        ("jp2", (0.3, 0.7, 0.98)),
        ("telltale", (0.3, 0.7)),
    ):
        data = files[name].read_bytes()
        for fraction in fractions:
            cut = tmp_path / f"cut-{fraction}-{files[name].name}"
            cut.write_bytes(data[: int(len(data) * fraction)])
            for min_size in ((512, 512), None):
                with pytest.raises(MediaError) as caught:
                    load_image(cut, min_size=min_size)
                assert caught.value.reason.startswith(
                    ("truncated or corrupt image", "not an image or unsupported format")
                ), (cut.name, caught.value.reason)
    # a flipped byte in a large PNG's pixel data is caught by libvips as by PIL
    data = bytearray(files["png"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    with pytest.raises(MediaError, match="truncated or corrupt image"):
        load_image(tmp_path / "flipped.png", min_size=(512, 512))


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_finds_jpeg2000_and_tiff_scans(tmp_path):
    names = ["a.jp2", "b.jpx", "c.j2k", "d.tif", "e.TIFF", "f.JP2", "notes.txt", "g.pdf"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = [p.name for p in discover_images([tmp_path])]
    assert found == ["a.jp2", "b.jpx", "c.j2k", "d.tif", "e.TIFF", "f.JP2"]


# --- the embedding pipeline -------------------------------------------------------------------


def test_decode_size_is_twice_what_each_embedders_preprocess_resizes_to(
    default_embedder, tiny_embedder
):
    assert default_embedder.resize_size == 256
    assert decode_size(default_embedder) == (512, 512)
    resize = tiny_embedder._preprocess.transforms[0].size  # open_clip's Resize(image_size)
    assert decode_size(tiny_embedder) == (2 * resize, 2 * resize)


def test_a_large_png_embeds_like_its_whole_decode(default_embedder, files):
    (batch,) = list(embed_stream(default_embedder, [files["png"]], progress=False))
    assert not batch.errors
    assert (batch.infos[0].width, batch.infos[0].height) == LARGE
    assert batch.infos[0].size == files["png"].stat().st_size
    whole = default_embedder.encode_images([load_image(files["png"])], progress=False)
    cosine = float(batch.vectors[0].astype(np.float32) @ whole[0].astype(np.float32))
    assert cosine > 0.99, cosine


def test_small_pictures_embed_exactly_as_a_whole_decode(default_embedder, tmp_path):
    paths = []
    for i, which in enumerate(("chelsea", "coffee", "astronaut")):
        photo(which).save(tmp_path / f"{i}.jpg", quality=90)
        photo(which).save(tmp_path / f"{i}.png")
        paths += [tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"]
    for path in paths:
        whole = default_embedder.preprocess(load_image(path))
        assert np.array_equal(decode_for(default_embedder, path).array, whole)


def test_embed_stream_max_pixels_reaches_load_image(tiny_embedder, tmp_path):
    photo("chelsea", (400, 300)).save(tmp_path / "big.png")
    photo("coffee", (200, 100)).save(tmp_path / "small.png")
    sources = [tmp_path / "big.png", tmp_path / "small.png"]
    (batch,) = list(embed_stream(tiny_embedder, sources, max_pixels=100_000, progress=False))
    assert batch.indices == [1]
    ((index, error),) = batch.errors
    assert index == 0 and CAP_MESSAGE in error.reason and "400x300" in error.reason


class BrokenPreprocess(Embedder):
    """A real embedder whose preprocess has a bug on some pictures (not the files' fault)."""

    id = name = "broken-preprocess"
    dim = 4

    def preprocess(self, image):
        if image.width != image.height:
            raise ValueError("preprocess bug: only square pictures are handled")
        return np.zeros((3, 8, 8), np.float32)

    def _encode_batch(self, batch):
        return np.ones((len(batch), 4), np.float32)

    def _encode_texts(self, texts):
        return np.ones((len(texts), 4), np.float32)


def test_an_unexpected_exception_in_a_worker_fails_the_run_not_a_bad_file(tmp_path):
    photo("coffee", (64, 64)).save(tmp_path / "square.png")
    photo("coffee", (90, 60)).save(tmp_path / "wide.png")
    (tmp_path / "notes.png").write_text("not a picture")
    square, wide, notes = (tmp_path / n for n in ("square.png", "wide.png", "notes.png"))
    embedder = BrokenPreprocess()
    # the bad file is recorded and the run goes on...
    batches = list(embed_stream(embedder, [square, notes, square], workers=2, progress=False))
    assert [b.indices for b in batches] == [[0, 2]]
    assert batches[0].errors[0][1].reason == "not an image or unsupported format"
    # ...but the bug is raised, whatever batch it falls in, and nothing records it
    stream = embed_stream(embedder, [square, notes, wide, square], batch_size=1, progress=False)
    seen = []
    with pytest.raises(ValueError, match="preprocess bug"):
        for batch in stream:
            seen.append((batch.indices, [i for i, _ in batch.errors]))
    assert seen == [([0], [])]  # the batch that met the bug is never handed out
    with pytest.raises(ValueError, match="preprocess bug"):
        embedder.encode_images([wide], progress=False)


# --- grid thumbnails ----------------------------------------------------------------------------


@pytest.mark.slow
def test_grid_thumbnails_of_large_files_are_small_jpegs(tiny_clip, files, tmp_path):
    from snoop_nb import open_collection
    from snoop_nb.ui.thumbs import THUMB_SIZE, Thumbnails

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("png", "telltale", "jp2"):
        (folder / files[name].name).symlink_to(files[name])
    with open_collection(
        tmp_path / "col", create=True, model=tiny_clip["model"], pretrained=tiny_clip["pretrained"]
    ) as col:
        report = col.add([folder], progress=False)
        assert report.added == 3 and not report.errors, report
        thumbs = Thumbnails(col)
        try:
            made = thumbs.get(range(3))
        finally:
            thumbs.close()
        paths = col.paths(range(3))
    for item, data in made.items():
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and max(image.size) == THUMB_SIZE, (paths[item], image.size)
        if paths[item].name == "telltale.tif":
            assert image.getpixel((10, 10))[2] > 200  # a reduced (blue) level, not the full one


# --- memory -------------------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import json, resource, sys
    from snoop_nb.media import load_image
    image = load_image(sys.argv[1], min_size=(512, 512))
    print(json.dumps({"size": image.size, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def _peak(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_120_megapixel_png_decodes_in_bounded_memory(tmp_path):
    big = write_large_png(tmp_path / "big.png", (10000, 12000))
    small = tmp_path / "small.png"
    photo("chelsea").save(small)
    base, peak = _peak(small), _peak(big)
    assert peak["size"] == [512, 614]
    # decoded whole it would take 480 MB for its RGBA pixels alone
    assert peak["rss_mb"] - base["rss_mb"] < 250, (peak, base)
