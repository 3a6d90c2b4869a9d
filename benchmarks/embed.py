"""Benchmark the offline default embedder: images/s of each stage, and the quality of each runtime.

    python benchmarks/embed.py                                   # data/demo/stamps, all images
    python benchmarks/embed.py --images DIR --limit 256 --json out.json
    python benchmarks/embed.py --device cuda                     # on a GPU machine
    python benchmarks/embed.py --threads 1                       # one model thread per runtime

Rows
----
- ``naive``: the loop a user writes first: decode a picture, preprocess it, and every 32 run the
  batch through eager float32 PyTorch (NCHW, no slicing), all in one thread with no overlap. Its
  vectors are the reference for the quality columns.
- ``decode+preprocess``: :func:`snoop_nb.media.load_image` and the embedder's ``preprocess``, one
  thread, no model.
- ``model-only``: one batch of 32 preprocessed pictures through each runtime, best and median of
  ``--repeat`` runs: ``eager-nchw`` (the naive loop's model), ``torch`` (channels_last, slices
  of 4; float16 autocast on a GPU), ``onnx`` (ONNX Runtime, CPU only).
- ``kernel``: :func:`snoop_nb.embed.pipeline.embed_stream` (decoding threads ahead of the model,
  batches of 32) over every picture, with each runtime; ``auto`` marks the one the embedder picks.

Columns: ``img/s``; ``speed-up`` = img/s / the naive loop's; ``top10 overlap``: for each picture,
the share of its 10 nearest neighbours (cosine, itself excluded) under the row's vectors that are
also among its 10 nearest under the naive float32 vectors, averaged; ``cos min``: the lowest cosine
between a picture's row vector and its reference vector.

Every timed run follows an untimed warm-up. Other processes on the machine slow every row alike;
the JSON records the load average next to the timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

from snoop_nb.embed.efficientnet import EfficientNetLite0
from snoop_nb.embed.pipeline import embed_stream
from snoop_nb.errors import MediaError
from snoop_nb.media import discover_images, load_image

ROOT = Path(__file__).resolve().parent.parent
BATCH = 32
K = 10
COLUMNS = ["stage", "runtime", "img/s", "best img/s", "speed-up", "top10 overlap", "cos min", "n"]


def top_k(vectors: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's k nearest rows by cosine, itself excluded."""
    v = vectors.astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(v) - 1)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def quality(vectors: np.ndarray, reference: np.ndarray, ref_top: np.ndarray) -> dict[str, float]:
    """Top-10 overlap with the reference neighbours, and the lowest per-row cosine."""
    got = top_k(vectors, ref_top.shape[1])
    overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(got, ref_top, strict=True)])
    v = vectors.astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cos = (v * reference).sum(axis=1)
    return {"top10 overlap": float(overlap), "cos min": float(cos.min())}


def decode_all(emb: EfficientNetLite0, paths: list[Path]) -> tuple[list[Path], list[str], float]:
    """Decode and preprocess every picture in one thread: the good paths, the bad, img/s."""
    good, bad = [], []
    start = time.perf_counter()
    for path in paths:
        try:
            emb.preprocess(load_image(path))
        except MediaError as e:
            bad.append(f"{path}: {e.reason}")
        else:
            good.append(path)
    return good, bad, len(paths) / (time.perf_counter() - start)


def naive_loop(net: Any, emb: EfficientNetLite0, paths: list[Path], device: str) -> np.ndarray:
    """Decode, preprocess, and every 32 pictures run eager float32 PyTorch; one thread."""
    import torch

    out, arrays = [], []

    def flush() -> None:
        x = torch.from_numpy(np.stack(arrays)).to(device)
        with torch.inference_mode():
            out.append(net(x).float().cpu().numpy())
        arrays.clear()

    for path in paths:
        arrays.append(emb.preprocess(load_image(path)))
        if len(arrays) == BATCH:
            flush()
    if arrays:
        flush()
    return np.concatenate(out)


def timed(fn: Any, repeat: int) -> list[float]:
    """Seconds of ``repeat`` runs of ``fn()``, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def kernel(emb: EfficientNetLite0, paths: list[Path]) -> tuple[np.ndarray, float]:
    """The embedding kernel over ``paths``: its float16 vectors and img/s (after a warm-up)."""
    for _ in embed_stream(emb, paths[: 2 * BATCH], batch_size=BATCH, progress=False):
        pass
    vectors = np.zeros((len(paths), emb.dim), dtype=np.float16)
    start = time.perf_counter()
    for batch in embed_stream(emb, paths, batch_size=BATCH, progress=False):
        if batch.errors:
            raise batch.errors[0][1]
        vectors[batch.indices] = batch.vectors
    return vectors, len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT / "data" / "demo" / "stamps")
    parser.add_argument("--limit", type=int, default=0, help="at most N pictures (0: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=None, help="model threads (default: the usable cores)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of model-only rows")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "embed.json")
    args = parser.parse_args(argv)

    import torch

    if not args.images.exists():
        print(f"{args.images} not found: run `make demo`, or pass --images DIR", file=sys.stderr)
        return 2
    paths = list(discover_images([args.images]))
    if args.limit:
        paths = paths[: args.limit]
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    auto = EfficientNetLite0(device=args.device, threads=args.threads)
    load_s = time.perf_counter() - t0
    device = auto.device
    cuda = device.startswith("cuda")
    runtimes = {auto.runtime: auto}
    for name in ("torch",) if cuda else ("torch", "onnx"):
        if name not in runtimes:
            runtimes[name] = EfficientNetLite0(device=device, runtime=name, threads=args.threads)
    print(f"{len(paths)} pictures under {args.images}; {auto!r} loaded in {load_s:.1f} s")

    rows: list[dict[str, Any]] = []
    paths, bad, rate = decode_all(auto, paths)
    if len(paths) <= K:
        print(f"only {len(paths)} decodable pictures: need more than {K}", file=sys.stderr)
        return 2
    rows.append({"stage": "decode+preprocess", "runtime": "-", "img/s": rate, "n": len(paths)})

    # The naive loop's model: timm's network as built, NCHW, float32, whole batches.
    plain = auto._net.module
    plain = _plain_copy(plain, device)
    reference_raw = naive_loop(plain, auto, paths[: 2 * BATCH], device)  # warm-up
    start = time.perf_counter()
    reference_raw = naive_loop(plain, auto, paths, device)
    naive_rate = len(paths) / (time.perf_counter() - start)
    reference = reference_raw / np.linalg.norm(reference_raw, axis=1, keepdims=True)
    ref_top = top_k(reference)
    rows.append(
        {"stage": "naive", "runtime": "eager-nchw", "img/s": naive_rate, "speed-up": 1.0,
         "n": len(paths), **quality(reference_raw, reference, ref_top)}
    )  # fmt: skip

    batch = np.stack([auto.preprocess(load_image(p)) for p in paths[:BATCH]])
    xb = torch.from_numpy(batch).to(device)

    def eager() -> None:
        with torch.inference_mode():
            plain(xb).float().cpu()

    model_fns = {"eager-nchw": eager}
    for name, emb in runtimes.items():
        model_fns[name] = lambda emb=emb: emb._encode_batch(batch)
    for name, fn in model_fns.items():
        times = timed(fn, args.repeat)
        rows.append(
            {"stage": "model-only", "runtime": name, "img/s": BATCH / statistics.median(times),
             "best img/s": BATCH / min(times), "n": BATCH}
        )  # fmt: skip

    for name, emb in runtimes.items():
        vectors, rate = kernel(emb, paths)
        label = f"{name} (auto)" if emb is auto else name
        rows.append(
            {"stage": "kernel", "runtime": label, "img/s": rate, "speed-up": rate / naive_rate,
             "n": len(paths), **quality(vectors, reference, ref_top)}
        )  # fmt: skip

    print(format_table(rows, COLUMNS))
    if bad:
        print(f"{len(bad)} pictures could not be decoded and were left out, e.g. {bad[0]}")
    payload = {
        "benchmark": "embed",
        "images": str(args.images),
        "pictures": len(paths),
        "undecodable": len(bad),
        "batch_size": BATCH,
        "repeat": args.repeat,
        "embedder": {**auto.describe(), "device": device, "load_seconds": load_s},
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "machine": machine_info(("numpy", "torch", "timm", "onnxruntime", "pillow")),
        "rows": rows,
    }
    print(f"wrote {write_json(args.json, payload)}")
    return 0


def _plain_copy(net: Any, device: str) -> Any:
    """A copy of timm's network in PyTorch's default layout, returning the pooled features."""
    import copy

    import torch

    from snoop_nb.embed.efficientnet import pooled_features

    net = copy.deepcopy(net).to(device).to(memory_format=torch.contiguous_format).eval()
    return pooled_features(net)


if __name__ == "__main__":
    sys.exit(main())
