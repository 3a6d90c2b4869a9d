"""The GPU path: ViT-B-32 images/s from JPEG files, and exact top-k against reading the vectors.

    python benchmarks/scale_gpu.py                      # auto: a GPU if there is one, else CPU
    python benchmarks/scale_gpu.py --device cuda        # H100/H200: 5,120 JPEGs, 10M vectors
    python benchmarks/scale_gpu.py --images 64 --vectors 200000 --repeat 2   # a smoke run

**embed**: :func:`snoop_nb.embed.pipeline.embed_stream`, the project's kernel, end to end: the
decoding threads read and hash each file, decode it (PIL on the CPU, or nvJPEG on the GPU when
``jpeg decode`` says ``device``), preprocess it and the model (open_clip ViT-B-32, random
weights: the same work as trained ones; float16 autocast on CUDA) embeds batches of
``--batch-size`` (256). The JPEGs are ``--images`` files made from scikit-image's photographs
(random crops, the long side 256-1024 px, quality 70-95, 4:2:0 or 4:4:4 chroma) in a temporary
folder. Each run follows an untimed warm-up run (the model, cuDNN, nvJPEG start up). On a GPU
both JPEG decoders are run (``--jpeg-decode auto,cpu``). Columns: ``img/s``; ``device s``, the
time the device spent on batches (CUDA events); ``device wait s``, the rest of the run;
``input wait s``, the part of it spent waiting for the decoding threads; ``GPU-decoded``, the
share of pictures nvJPEG decoded. Target on one H100/H200: >= 5,000 img/s (twice
clip-retrieval's 2,500 per A100).

**search**: ``--vectors`` x 512 float16 unit vectors (10M on a GPU, 1M on the CPU) in an
:class:`~snoop_nb.index.ExactIndex` (``device`` auto: PyTorch's float16 kernel, on the GPU with
the matrix resident there; its upload is timed apart), exact top-10 for 1 and 16 queries, and
:func:`~snoop_nb.learn.rank.score_matrix` for one linear class, each against **reading the
vectors once**: ``torch.sum`` over the same float16 matrix on the same device (it reads every
byte once and writes nothing; below numpy's cache size on the CPU, over the float32 copy that
numpy scores). ``ratio`` = the operation's time / the read's; the target is
<= 2 at 10M on a GPU. Median of ``--repeat`` runs (after one warm-up).

A table of each is printed and both go to ``--json`` (default
``benchmarks/results/scale_gpu-<cpu|cuda>.json``) with the machine's facts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
)
EMBED_COLUMNS = [
    "device",
    "jpeg decode",
    "images",
    "batch",
    "img/s",
    "device s",
    "device wait s",
    "input wait s",
    "GPU-decoded",
    "wall s",
]
SEARCH_COLUMNS = ["op", "device", "vectors", "queries", "k", "ms", "read ms", "ratio", "GB/s"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--model", default="ViT-B-32", help="an open_clip model (random weights)")
    p.add_argument("--images", type=int, default=None, help="JPEGs (5,120 GPU / 256 CPU)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: auto)")
    p.add_argument("--jpeg-decode", default=None, help="auto,cpu on a GPU; cpu on the CPU")
    p.add_argument("--progressive", type=float, default=0.0, help="share of progressive JPEGs")
    p.add_argument("--vectors", type=int, default=None, help="rows (10M GPU / 1M CPU)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeat", type=int, default=None, help="timed runs (10 GPU / 3 CPU)")
    p.add_argument("--skip", choices=["embed", "search"], default=None)
    p.add_argument("--json", type=Path, default=None)
    return p


def make_jpegs(folder: Path, n: int, progressive: float = 0.0, seed: int = 0) -> list[Path]:
    """``n`` JPEG files of real photographs: random crops, long side 256-1024, varied quality."""
    from PIL import Image
    from skimage import data

    sources = []
    for name in PHOTOS:
        a = getattr(data, name)()
        sources.append(Image.fromarray(a).convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> Path:
        rng = np.random.default_rng((seed, i))
        image = sources[i % len(sources)]
        w, h = image.size
        s = rng.uniform(0.6, 1.0)
        cw, ch = max(16, int(w * s)), max(16, int(h * s * rng.uniform(0.75, 1.0)))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        side = int(rng.integers(256, 1025))
        scale = side / max(cw, ch)
        crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))))
        path = folder / f"{i:06d}.jpg"
        crop.save(
            path,
            "JPEG",
            quality=int(rng.integers(70, 96)),
            subsampling=0 if rng.random() < 0.25 else 2,
            progressive=bool(rng.random() < progressive),
        )
        return path

    with ThreadPoolExecutor() as pool:
        return list(pool.map(one, range(n)))


def embed_rows(args: argparse.Namespace, device: str, folder: Path) -> list[dict[str, Any]]:
    """One row per JPEG decoder: the kernel's img/s and where the time went."""
    from snoop_nb.embed.openclip import OpenCLIPEmbedder
    from snoop_nb.embed.pipeline import PipelineStats, embed_stream

    cuda = device.startswith("cuda")
    n = args.images or (5120 if cuda else 256)
    paths = make_jpegs(folder, n, args.progressive)
    emb = OpenCLIPEmbedder(args.model, None, device=device)
    modes = (args.jpeg_decode or ("auto,cpu" if cuda else "cpu")).split(",")
    rows = []
    for mode in modes:
        warm = paths[: 2 * args.batch_size] if cuda else paths[:8]
        kw = {"device": device, "jpeg_decode": mode, "workers": args.workers, "progress": False}
        for _ in embed_stream(emb, warm, batch_size=min(args.batch_size, len(warm)), **kw):
            pass
        stats = PipelineStats()
        out = np.zeros((n, emb.dim), np.float16)  # as a collection keeps them
        for batch in embed_stream(emb, paths, batch_size=args.batch_size, stats=stats, **kw):
            out[batch.indices] = batch.vectors
        rows.append(
            {
                "device": device,
                "jpeg decode": f"{mode} -> {stats.jpeg_decode}",
                "images": stats.images,
                "batch": args.batch_size,
                "img/s": stats.images_per_second,
                "device s": stats.device_seconds,
                "device wait s": stats.device_wait_seconds,
                "input wait s": stats.input_wait_seconds,
                "GPU-decoded": f"{stats.device_decoded / max(1, stats.images):.0%}",
                "wall s": stats.seconds,
                "stats": stats.as_dict(),
            }
        )
    return rows


def _timed(fn, repeat: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_rows(n: int, dim: int, device: str) -> np.ndarray:
    """``n`` float16 unit rows (made on the GPU when there is one: 10M take a second there)."""
    import torch

    out = np.empty((n, dim), np.float16)
    gen = torch.Generator(device=device).manual_seed(0)
    step = 1 << 20
    for start in range(0, n, step):
        m = min(step, n - start)
        x = torch.randn((m, dim), generator=gen, device=device)
        x /= x.norm(dim=1, keepdim=True)
        out[start : start + m] = x.half().cpu().numpy()
    return out


def search_rows(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """Exact top-k and one class's scores over the vectors, against one read of them."""
    import torch

    from snoop_nb.index import ExactIndex
    from snoop_nb.index.exact import RESIDENT, vector_device
    from snoop_nb.learn.rank import NUMPY_MAX_VALUES, score_matrix

    cuda = device.startswith("cuda")
    n = args.vectors or (10_000_000 if cuda else 1_000_000)
    repeat = args.repeat or (10 if cuda else 3)
    vectors = random_rows(n, args.dim, device)
    index = ExactIndex.from_arrays(np.arange(n), vectors, device="auto" if cuda else "cpu")
    engine = index.engine()
    start = time.perf_counter()
    index.search(vectors[:1], 10)  # the upload to the GPU, once
    upload = time.perf_counter() - start
    # the very matrix the index scores: on the device, or numpy's float32 copy (small, CPU)
    m = torch.from_numpy(index._f32) if engine == "numpy" else RESIDENT.get(vectors, engine)
    sync = torch.cuda.synchronize if m.is_cuda else (lambda: None)
    read = _timed(lambda: m.sum(), repeat, sync)
    gb = m.numel() * m.element_size() / 1e9
    rows = []
    rng = np.random.default_rng(1)
    for nq in (1, 16):
        q = rng.standard_normal((nq, args.dim)).astype(np.float32)
        took = _timed(lambda q=q: index.search(q, 10), repeat, sync)
        rows.append({"op": "exact top-k", "queries": nq, "k": 10, "ms": 1000 * took})
    for row in rows:
        row["device"] = engine
    w = rng.standard_normal(args.dim).astype(np.float32)
    took = _timed(lambda: score_matrix(vectors, w, 0.1, device=device), repeat, sync)
    where = vector_device(device, vectors.nbytes) if vectors.size > NUMPY_MAX_VALUES else "numpy"
    rows.append({"op": "score_matrix (1 class)", "device": where, "queries": 1, "ms": 1000 * took})
    for row in rows:
        row.update(
            vectors=n,
            **{"read ms": 1000 * read, "ratio": row["ms"] / (1000 * read), "GB/s": gb / read},
        )
    rows.append(
        {
            "op": {"numpy": "first search (f32 copy)", "cpu": "first search"}.get(
                engine, "first search (upload)"
            ),
            "device": engine,
            "vectors": n,
            "ms": 1000 * upload,
            "GB/s": gb / upload,
        }
    )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both tables (see the module docstring) and the machine's facts."""
    import torch

    from snoop_nb.embed import resolve_device

    device = resolve_device(args.device)
    payload: dict[str, Any] = {
        "machine": machine_info(("numpy", "torch", "torchvision", "open_clip_torch", "pillow")),
        "device": device,
        "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        "args": vars(args),
        "embed": [],
        "search": [],
    }
    if args.skip != "embed":
        with tempfile.TemporaryDirectory(prefix="snoop-bench-gpu-") as tmp:
            payload["embed"] = embed_rows(args, device, Path(tmp))
    if args.skip != "search":
        payload["search"] = search_rows(args, device)
    return payload


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    payload = run(args)
    kind = "cuda" if payload["device"].startswith("cuda") else "cpu"
    where = payload["gpu"] or payload["machine"]["cpu_model"]
    if payload["embed"]:
        print(f"\n{args.model} (random weights) from JPEG files through embed_stream, {where}")
        print(format_table(payload["embed"], EMBED_COLUMNS))
    if payload["search"]:
        print(f"\nExact search over float16 vectors of {args.dim} ('read' = torch.sum of them)")
        print(format_table(payload["search"], SEARCH_COLUMNS))
    path = args.json or ROOT / f"benchmarks/results/scale_gpu-{kind}.json"
    print(f"wrote {write_json(path, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
