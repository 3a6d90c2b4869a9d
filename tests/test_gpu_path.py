"""The GPU path, run on the CPU: device choice, the tensor pipeline (host buffers, batches started
before the last is collected, the device's wait measured), JPEGs decoded by torchvision against
PIL, the fallbacks to the CPU, and exact top-k and classifier scoring by the PyTorch float16
code path against numpy. Each CUDA-only check has a CPU twin that runs the same code."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from mediafiles import BAD_IMAGE_REASONS, make_bad_images, make_good_images, photo
from PIL import Image

from snoop_nb.embed import resolve_device
from snoop_nb.embed.base import l2_normalise
from snoop_nb.embed.pipeline import (
    PipelineStats,
    _DeviceJpegs,
    decode_for,
    device_jpeg_header,
    embed_stream,
    read_for_device,
)
from snoop_nb.errors import UsageError
from snoop_nb.index import ExactIndex
from snoop_nb.index.exact import RESCORE, ResidentMatrices, device_top_k, vector_device
from snoop_nb.learn import rank
from snoop_nb.media import load_image

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU here: the CPU twin runs the code")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


def write_jpegs(folder, n: int = 10, **params) -> list:
    """``n`` JPEG files of real photographs, of varied sizes and subsamplings."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = photo(PHOTOS[i % len(PHOTOS)], (64 + 23 * i, 48 + 17 * (i % 4)))
        path = folder / f"p{i}.jpg"
        image.save(path, "JPEG", quality=85 + i % 10, subsampling=i % 3, **params)
        paths.append(path)
    return paths


def unit_rows(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


# --- devices ------------------------------------------------------------------------------------
def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_clearly(tiny_embedder, tmp_path):
    if CUDA:
        assert resolve_device("auto") == "cuda"
        assert vector_device("auto", 1 << 20) == "cuda"
        assert vector_device("auto", 1 << 60) == "cpu"  # does not fit: stays on the CPU
        return
    assert resolve_device("auto") == "cpu"
    assert vector_device("auto", 1 << 30) == "cpu"
    rows = unit_rows(10)
    for call in (
        lambda: vector_device("cuda", 100),
        lambda: ExactIndex.from_arrays(np.arange(10), rows, device="cuda").search(rows[0], 1),
        lambda: rank.score_matrix(rows, np.ones(64, np.float32), device="cuda"),
        lambda: list(embed_stream(tiny_embedder, write_jpegs(tmp_path, 1), device="cuda")),
    ):
        with pytest.raises(UsageError, match="no CUDA GPU"):
            call()
    with pytest.raises(UsageError, match="jpeg_decode"):
        list(embed_stream(tiny_embedder, [], jpeg_decode="gpu"))


# --- the tensor pipeline --------------------------------------------------------------------------
def test_tensor_pipeline_on_the_cpu_gives_the_vectors_of_before(tiny_embedder, photo_set):
    """Reused host buffers and overlapped batches change nothing: the vectors equal, bit for
    bit, those of the code before them (stack the decoded pictures, run the network)."""
    paths = [p for group in photo_set.values() for p in group][:14]
    stats = PipelineStats()
    batches = list(
        embed_stream(tiny_embedder, paths, batch_size=4, workers=2, progress=False, stats=stats)
    )
    assert [len(b.indices) for b in batches] == [4, 4, 4, 2]
    net = tiny_embedder._net
    for batch in batches:
        arrays = np.stack([decode_for(tiny_embedder, paths[i]).array for i in batch.indices])
        with torch.inference_mode():
            before = l2_normalise(net.encode_image(torch.from_numpy(arrays)).float().numpy())
        assert np.array_equal(batch.vectors, before)
    assert stats.device == "cpu" and stats.jpeg_decode == "cpu" and stats.device_decoded == 0
    assert stats.images == 14 and stats.batches == 4 and stats.errors == 0
    assert 0 < stats.device_seconds <= stats.seconds
    assert stats.device_wait_seconds == pytest.approx(stats.seconds - stats.device_seconds)
    assert stats.as_dict()["images_per_second"] > 0


def test_a_bug_in_a_worker_still_hands_out_the_batches_before_it(tiny_embedder, tmp_path):
    """With the next batch gathered before the last is handed out, a failure in it must not
    swallow the batch already computed."""
    good = write_jpegs(tmp_path, 4)

    class Bug(Exception):
        pass

    def preprocess(image, real=tiny_embedder.preprocess):
        if image.width == 64 + 23 * 3:
            raise Bug("preprocess bug")
        return real(image)

    seen = []
    tiny_embedder.preprocess = preprocess
    try:
        with pytest.raises(Bug):
            for batch in embed_stream(tiny_embedder, good, batch_size=2, progress=False):
                seen.append(batch.indices)
    finally:
        del tiny_embedder.preprocess
    assert seen == [[0, 1]]


# --- JPEGs decoded by torchvision ---------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_jpeg_gives_pil_pixels_upright(tmp_path, orientation):
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "photo.jpg"
    photo("chelsea", (120, 80)).save(path, "JPEG", quality=90, exif=exif)
    grey = tmp_path / "grey.jpg"
    photo("camera", (50, 70)).convert("L").save(grey, "JPEG", exif=exif)
    decode = _DeviceJpegs("cpu", lambda x: x)
    items = [read_for_device(None, p) for p in (path, grey)]  # type: ignore[arg-type]
    assert all(item.array is None and item.encoded is not None for item in items)
    for p, item, tensor in zip((path, grey), items, decode(items), strict=True):
        want = np.asarray(load_image(p))
        assert (item.width, item.height) == (want.shape[1], want.shape[0])
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), want)


def test_device_decoded_jpegs_embed_as_pil_decoded_ones(tiny_embedder, tmp_path):
    paths = write_jpegs(tmp_path, 12)
    by_cpu = list(embed_stream(tiny_embedder, paths, batch_size=5, progress=False))
    stats = PipelineStats()
    by_device = list(
        embed_stream(
            tiny_embedder, paths, batch_size=5, progress=False, jpeg_decode="device", stats=stats
        )
    )
    assert stats.jpeg_decode == "device" and stats.device_decoded == 12
    assert stats.device_fallbacks == 0 and stats.device_decode_seconds > 0
    for a, b in zip(by_cpu, by_device, strict=True):
        assert a.indices == b.indices and not a.errors and not b.errors
        for x, y in zip(a.infos, b.infos, strict=True):
            assert (x.width, x.height, x.digest, x.size) == (y.width, y.height, y.digest, y.size)
        cos = (a.vectors.astype(np.float32) * b.vectors.astype(np.float32)).sum(axis=1)
        assert cos.min() > 0.999  # only the resize's rounding differs (PIL's against torch's)


def test_pictures_the_device_cannot_take_are_decoded_on_the_cpu(tiny_embedder, tmp_path):
    good = make_good_images(tmp_path / "good")
    bad = make_bad_images(tmp_path / "bad")
    jpeg = write_jpegs(tmp_path / "jpeg", 1)[0]
    progressive = tmp_path / "progressive.jpg"
    photo("coffee", (80, 60)).save(progressive, "JPEG", progressive=True)
    data = bytearray(jpeg.read_bytes())
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16  # a bogus Huffman table: header fine, data not
    corrupt = tmp_path / "bogus_huffman.jpg"
    corrupt.write_bytes(bytes(data))
    sources = [jpeg, good["png"], good["cmyk_jpeg"], bad["truncated_jpeg"], corrupt, progressive]
    # the header check sends the PNG, the CMYK JPEG and the truncated one to the CPU
    taken = [device_jpeg_header(p.read_bytes()) is not None for p in sources]
    assert taken == [True, False, False, False, True, False]
    assert device_jpeg_header(progressive.read_bytes(), progressive=True) is not None
    stats = PipelineStats()
    (cpu,) = embed_stream(tiny_embedder, sources, batch_size=8, progress=False, jpeg_decode="cpu")
    (dev,) = embed_stream(
        tiny_embedder, sources, batch_size=8, progress=False, jpeg_decode="device", stats=stats
    )
    # the bogus table fails torchvision's decoder, then PIL's: the CPU path's error
    assert stats.device_decoded == 2 and stats.device_fallbacks == 1  # jpeg, progressive
    assert dev.indices == cpu.indices == [0, 1, 2, 5]
    assert [(i, e.reason) for i, e in dev.errors] == [(i, e.reason) for i, e in cpu.errors]
    assert dev.errors[0][1].reason.startswith(BAD_IMAGE_REASONS["truncated_jpeg"])
    assert [i for i, _ in dev.errors] == [3, 4]
    assert np.array_equal(dev.vectors[1:3], cpu.vectors[1:3])  # PNG, CMYK: the CPU's own


def test_a_jpeg_the_device_decoder_refuses_gets_the_cpu_vector(
    tiny_embedder, tmp_path, monkeypatch
):
    paths = write_jpegs(tmp_path, 6)
    refused = paths[2].read_bytes()
    real = _DeviceJpegs._decode

    def picky(self, data):
        if any(bytes(t.numpy()) == refused for t in data):
            raise RuntimeError("Error while decoding JPEG images")
        return real(self, data)

    monkeypatch.setattr(_DeviceJpegs, "_decode", picky)
    stats = PipelineStats()
    kw = {"batch_size": 6, "progress": False}
    (dev,) = embed_stream(tiny_embedder, paths, jpeg_decode="device", stats=stats, **kw)
    (cpu,) = embed_stream(tiny_embedder, paths, jpeg_decode="cpu", **kw)
    assert stats.device_decoded == 5 and stats.device_fallbacks == 1
    assert dev.indices == cpu.indices == list(range(6))
    assert np.array_equal(dev.vectors[2], cpu.vectors[2])


# --- exact search and classifier scoring on a device -------------------------------------------
def near_duplicates(n: int = 3000, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows with a cluster of 300 near-copies (closer than float16's rounding) of one
    direction, and queries next to it: the float16 pass must widen past RESCORE to be exact."""
    rng = np.random.default_rng(5)
    rows = unit_rows(n, dim, seed=5).astype(np.float32)
    centre = rows[0]
    rows[:300] = centre + 3e-3 * rng.standard_normal((300, dim)) / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = centre + 0.05 * rng.standard_normal((5, dim)).astype(np.float32)
    return rows.astype(np.float16), np.concatenate([queries, rows[1000:1005].astype(np.float32)])


def assert_same_top(got: tuple, want: tuple, rows: np.ndarray, queries: np.ndarray, ids) -> None:
    """The same ids in the same order, but for rows that tie to float32 rounding (which comes
    first depends on the order of the sums, and numpy breaks exact ties in no set order), and
    the same scores to float32 rounding."""
    assert np.abs(got[1] - want[1]).max() < 1e-5
    differ = got[0] != want[0]
    if differ.any():
        where = {int(i): r for r, i in enumerate(ids)}
        exact = queries / np.linalg.norm(queries, axis=1, keepdims=True) @ rows.astype(np.float32).T
        for q, j in zip(*np.nonzero(differ), strict=True):
            a, b = where[int(got[0][q, j])], where[int(want[0][q, j])]
            assert abs(exact[q, a] - exact[q, b]) <= 1e-6  # a tie


def check_exact_on(device: str, tmp_path) -> None:
    rows, queries = near_duplicates()
    assert RESCORE + 10 < 300  # the cluster is larger than the float16 pass's first take
    ids = np.arange(len(rows)) * 3 + 1
    by_numpy = ExactIndex.from_arrays(ids, rows).search(queries, 10)
    on_device = ExactIndex.from_arrays(ids, rows, device=device)
    on_device.cache_bytes = 0  # on the CPU too: PyTorch's float16 kernel, not numpy
    assert on_device.engine() == device
    assert_same_top(on_device.search(queries, 10), by_numpy, rows, queries, ids)
    scores = on_device.scores(queries)
    assert np.abs(scores - ExactIndex.from_arrays(ids, rows).scores(queries)).max() < 1e-5
    # a collection's memory map and its live rows, with k past the live count: padded
    path = tmp_path / "vectors.f16"
    rows.tofile(path)
    mapped = np.memmap(path, np.float16, mode="r", shape=rows.shape)
    live = np.arange(0, len(rows), 7)
    want = ExactIndex.from_arrays(live, rows[live]).search(queries, 500)
    index = ExactIndex.from_arrays(live, mapped, rows=live, device=device)
    index.cache_bytes = 0
    got = index.search(queries, 500)
    assert (got[0][:, 429:] == -1).all() and np.isneginf(got[1][:, 429:]).all()
    assert_same_top(
        (got[0][:, :429], got[1][:, :429]),
        (want[0][:, :429], want[1][:, :429]),
        rows[live],
        queries,
        live,
    )
    index.add([1], rows[2000:2001])  # a change leaves the memory map behind
    assert 1 in index and index.search(rows[2000], 1)[0][0, 0] == 1


def test_exact_top_k_by_the_float16_code_path_equals_numpy_on_the_cpu(tmp_path):
    check_exact_on("cpu", tmp_path)


@needs_cuda
def test_exact_top_k_on_cuda_equals_numpy(tmp_path):
    check_exact_on("cuda", tmp_path)


def check_scores_on(device: str) -> None:
    rows = unit_rows(5000, 1280, seed=3)
    w = np.random.default_rng(4).standard_normal(1280).astype(np.float32)
    want = rank._score_numpy(rows, w, 0.5)
    got = rank.score_matrix(rows, w, 0.5, device=device) if device != "cpu" else None
    got = rank._score_torch(rows, w, 0.5, device) if got is None else got
    assert got.dtype == np.float32 and got.shape == (5000,)
    assert np.abs(got - want).max() < 2 * np.abs(w).sum() * 2.0**-11


def test_score_matrix_by_the_float16_code_path_equals_numpy_on_the_cpu():
    check_scores_on("cpu")
    rows = unit_rows(100, 1280)
    w = np.ones(1280, np.float32)
    small = rank.score_matrix(rows, w, device="cpu")  # small: numpy, whatever the device
    assert np.array_equal(small, rank._score_numpy(rows, w, 0.0))


@needs_cuda
def test_score_matrix_on_cuda_equals_numpy():
    check_scores_on("cuda")


def test_device_top_k_widens_past_float16_ties():
    rows, queries = near_duplicates()
    m = torch.from_numpy(rows)
    pos, vals = device_top_k(m, queries, 20)
    exact = queries @ rows.astype(np.float32).T
    np.testing.assert_array_equal(pos, np.argsort(-exact, axis=1, kind="stable")[:, :20])
    assert np.abs(vals - np.take_along_axis(exact, pos, axis=1)).max() < 1e-5


def test_a_growing_memory_map_is_sent_to_the_device_once(tmp_path):
    """The resident matrices' bookkeeping, copying on the CPU as it would to a GPU."""
    rows = unit_rows(1000)
    path = tmp_path / "vectors.f16"
    rows[:600].tofile(path)
    held = ResidentMatrices(entries=2, copy=True)
    first = held.get(np.memmap(path, np.float16, mode="r", shape=(600, 64)), "cpu")
    assert held.uploaded_rows == 600 and np.array_equal(first.numpy(), rows[:600])
    with open(path, "ab") as f:  # the collection grows: only the new rows are sent
        rows[600:].tofile(f)
    grown = held.get(np.memmap(path, np.float16, mode="r", shape=(1000, 64)), "cpu")
    assert held.uploaded_rows == 1000 and np.array_equal(grown.numpy(), rows)
    again = held.get(np.memmap(path, np.float16, mode="r", shape=(800, 64)), "cpu")
    assert held.uploaded_rows == 1000 and np.array_equal(again.numpy(), rows[:800])
    own = rows.copy()  # an array is known by its identity
    held.get(own, "cpu")
    held.get(own, "cpu")
    assert held.uploaded_rows == 2000
    held.get(rows[:10].copy(), "cpu")  # a third matrix: the least recently used goes
    held.get(np.memmap(path, np.float16, mode="r", shape=(1000, 64)), "cpu")
    assert held.uploaded_rows == 3010
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only map is taken without a warning
        ResidentMatrices().get(np.memmap(path, np.float16, mode="r", shape=(10, 64)), "cpu")


def test_the_keeper_builds_the_exact_index_on_the_device_asked(tiny_embedder, tmp_path):
    from snoop_nb import open_collection

    photos = write_jpegs(tmp_path / "photos", 6)
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as col:
        col.add([tmp_path / "photos"], progress=False)
        col.remove(col.ids_under([str(photos[1].absolute())]))
        index = col._keeper.exact("cpu")
        assert index.device == "cpu" and col._keeper.exact("cpu") is index
        assert col._keeper.exact() is not index  # another device: another index
        assert len(index) == 5 and index._rows is not None  # the map and its live rows
        q = col.vectors[0].astype(np.float32)
        np.testing.assert_array_equal(index.search(q, 6)[0], col.exact_index().search(q, 6)[0])


def test_read_for_device_reads_other_sources_as_decode_for(tiny_embedder, tmp_path):
    png = tmp_path / "a.png"
    photo("coffee", (40, 30)).save(png)
    buf = io.BytesIO()
    photo("rocket", (40, 30)).save(buf, "JPEG")
    for source in (png, buf.getvalue(), photo("chelsea", (30, 20))):
        got = read_for_device(tiny_embedder, source)
        want = decode_for(tiny_embedder, source)
        if got.array is None:  # the JPEG's bytes, for the device
            assert isinstance(source, bytes) and got.encoded == bytearray(source)
            continue
        assert np.array_equal(got.array, want.array) and got.digest == want.digest
