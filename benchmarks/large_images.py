"""Benchmark decoding very large pictures for embedding: wall time and peak memory per file.

    python benchmarks/large_images.py                 # all files, JSON to benchmarks/results/
    python benchmarks/large_images.py --quick         # smaller files (a smoke run, ~1 min)
    python benchmarks/large_images.py --json out.json --keep DIR

The files are made here, in a temporary folder (never committed): a small clip-art PNG (the
baseline), a 170-megapixel flat clip-art PNG (10,000 x 17,000, RGBA, a few MB), a 1-gigapixel
tiled pyramidal TIFF (40,000 x 25,000, JPEG tiles), the same gigapixel as a tiled TIFF without
a pyramid, an 80-megapixel JPEG 2000 (tiled, 6 resolution levels), and two other kinds, so the
method is not tuned to one file: a 192-megapixel photo-like noisy JPEG and a 120-megapixel
16-bit grey TIFF (deflate strips, as scanners write them).

Each row runs in a fresh Python process the path ``snoop index`` takes for one file,
:func:`snoop_nb.embed.pipeline.decode_for`: read and hash the file, decode it shrunk to
:func:`~snoop_nb.embed.pipeline.decode_size` (512 x 512 for the default embedder: twice the 256
its preprocess resizes to), preprocess it (the default embedder's transform, without loading
its weights: :class:`DefaultPreprocess`, so that the peak is the decoding's, not the model's).
``wall s`` is that step's time; ``peak MB`` the child's ``ru_maxrss`` (from ``os.wait4``),
interpreter and libraries included; ``above small`` that peak minus the small picture's run:
what the large file costs. Target: under 1 GB. ``VmHWM MB`` is the child's own high-water mark
from ``/proc/self/status``, a cross-check. The row ``PIL whole`` decodes the 170-megapixel
PNG whole (load_image without ``min_size``), as indexing would without shrink-on-load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = [
    "file",
    "pixels",
    "MB on disk",
    "decoded to",
    "route",
    "wall s",
    "peak MB",
    "above small",
    "VmHWM MB",
]
TARGET_MB = 1024


def make_files(folder: Path, quick: bool) -> list[dict[str, Any]]:
    """Write the benchmark's pictures into ``folder``; one dict per row to run."""
    import pyvips
    from mediafiles import clip_art, large_clip_art, write_jpeg2000

    k = 4 if quick else 1  # --quick divides each side by 4
    rows: list[dict[str, Any]] = []

    def add(name: str, path: Path, route: str, **extra: Any) -> None:
        rows.append({"file": name, "path": str(path), "route": route, **extra})
        print(f"  made {name}: {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr, flush=True)

    small = folder / "small.png"
    clip_art((800, 600), seed=3).save(small)
    add("small clip-art PNG", small, "PIL whole")

    png = folder / "clipart-170mp.png"
    large_clip_art((10000 // k, 17000 // k)).pngsave(str(png), compression=6)
    add("170 MP clip-art PNG", png, "libvips stream")
    add("170 MP clip-art PNG", png, "PIL whole", whole=True)

    # The gigapixel: one clip-art tile held in memory, repeated (libvips writes it as a stream).
    tile = large_clip_art((2500, 4250), seed=4).flatten(background=[255, 255, 255])
    giga = tile.cast("uchar").copy_memory().replicate(16, 6).crop(0, 0, 40000 // k, 25000 // k)
    pyramid = folder / "scan-1gp-pyramid.tif"
    giga.tiffsave(str(pyramid), tile=True, pyramid=True, compression="jpeg", Q=85)
    add("1 GP pyramidal TIFF", pyramid, "libvips level")
    flat = folder / "scan-1gp-tiled.tif"
    giga.tiffsave(str(flat), tile=True, compression="deflate")
    add("1 GP tiled TIFF, no pyramid", flat, "libvips stream")

    jp2 = folder / "scan-80mp.jp2"
    write_jpeg2000(jp2, clip_art((10000 // k, 8000 // k), seed=5).convert("RGB"))
    add("80 MP JPEG 2000", jp2, "PIL reduce")

    w, h = 16000 // k, 12000 // k
    photo = large_clip_art((w, h), seed=6, zoom=40).flatten(background=[128, 128, 128])
    noise = pyvips.Image.gaussnoise(w, h, sigma=40, mean=0)
    noisy = (photo * 0.7 + noise.bandjoin([noise, noise]) + 40).cast("uchar")
    jpeg = folder / "photo-192mp.jpg"
    noisy.jpegsave(str(jpeg), Q=90)
    add("192 MP noisy photo JPEG", jpeg, "PIL draft")

    w, h = 12000 // k, 10000 // k
    ramp = pyvips.Image.xyz(w, h)[0] * (65535 / w) + pyvips.Image.gaussnoise(w, h, sigma=30)
    grey = folder / "grey16-120mp.tif"
    ramp.cast("ushort").copy(interpretation="grey16").tiffsave(
        str(grey), compression="deflate", predictor="horizontal"
    )
    add("120 MP 16-bit grey TIFF", grey, "libvips stream")
    return rows


_CHILD = "--child"
_MAKE = "--make"


class DefaultPreprocess:
    """The default embedder's preprocess (timm's evaluation transform for EfficientNet-Lite0:
    the short side to 256, bicubic, the central 224 x 224, as float32 CHW) without loading its
    weights, so that a child's peak memory is the decoding's, not the model's."""

    resize_size, input_size = 256, 224

    def preprocess(self, image: Any) -> Any:
        import numpy as np
        from PIL import Image

        w, h = image.size
        short, crop = self.resize_size, self.input_size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = round((nw - crop) / 2), round((nh - crop) / 2)
        image = image.crop((left, top, left + crop, top + crop))
        return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255


def child(path: str, whole: bool) -> None:
    """One measured run, in its own process: print a JSON line; the parent reads its rusage."""
    from snoop_nb.embed.pipeline import decode_for, decode_size
    from snoop_nb.media import load_image

    embedder = DefaultPreprocess()
    min_size = decode_size(embedder)  # type: ignore[arg-type]
    start = time.perf_counter()
    if whole:
        image = load_image(path)
        decoded = image.size
        array = embedder.preprocess(image)
    else:
        dec = decode_for(embedder, path, min_size=min_size)  # type: ignore[arg-type]
        decoded = dec.width, dec.height  # the original size; the decoded one is measured below
        array = dec.array
    wall = time.perf_counter() - start
    assert array.shape == (3, 224, 224)
    if not whole:
        decoded = load_image(path, min_size=min_size).size
    hwm = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    print(
        json.dumps({"wall_s": wall, "decoded_to": decoded, "min_size": min_size, "vmhwm_mb": hwm})
    )


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """Run one child; its JSON line, plus ``peak_mb``: the child's ``ru_maxrss``."""
    args = [sys.executable, __file__, _CHILD, row["path"]] + (
        ["--whole"] if row.get("whole") else []
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{row['file']}: the child failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = usage.ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="files 16 times smaller")
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "large_images.json")
    )
    parser.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = parser.parse_args(argv)

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # this script's own process only: reading sizes for the table
    with tempfile.TemporaryDirectory(prefix="snoop-large-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"making the files in {folder} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # Made in a child too: the parent stays small, so that no child's ru_maxrss starts from
        # the parent's (Linux carries the forking process's peak over into the exec'ed child).
        made = subprocess.run(
            [sys.executable, __file__, _MAKE, str(folder)] + (["--quick"] if args.quick else []),
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        rows = json.loads(made.stdout.decode().strip().splitlines()[-1])
        made_s = time.perf_counter() - start
        for row in rows:
            path = Path(row["path"])
            with Image.open(path) as header:  # reads the header only
                row["pixels"] = header.width * header.height
                row["size"] = header.size
            row["MB on disk"] = path.stat().st_size / 1e6
            result = run_row(row)
            row.update(result)
            row["wall s"] = result["wall_s"]
            row["peak MB"] = result["peak_mb"]
            row["VmHWM MB"] = result["vmhwm_mb"]
            row["decoded to"] = "x".join(map(str, result["decoded_to"]))
            print(f"  {row['file']} ({row['route']}): {result}", file=sys.stderr, flush=True)
    base = rows[0]["peak_mb"]
    for row in rows:
        row["above small"] = row["peak_mb"] - base
        row["path"] = Path(row["path"]).name
    print(format_table(rows, COLUMNS))
    shrunk = [r for r in rows[1:] if not r.get("whole")]
    worst = max(r["above small"] for r in shrunk)
    verdict = "met" if worst < TARGET_MB else "MISSED"
    print(
        f"\nworst peak above the small picture (shrink-on-load rows): {worst:,.0f} MB; "
        f"target < {TARGET_MB:,} MB: {verdict}"
    )
    payload = {
        "benchmark": "large_images",
        "quick": args.quick,
        "target_mb_above_small": TARGET_MB,
        "worst_mb_above_small": worst,
        "target_met": worst < TARGET_MB,
        "files_made_s": made_s,
        "rows": rows,
        "machine": machine_info(("numpy", "pillow", "pyvips", "pyvips-binary", "onnxruntime")),
    }
    print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == _CHILD:
        child(sys.argv[2], "--whole" in sys.argv[3:])
        sys.exit(0)
    if len(sys.argv) >= 3 and sys.argv[1] == _MAKE:
        print(json.dumps(make_files(Path(sys.argv[2]), "--quick" in sys.argv[3:])))
        sys.exit(0)
    sys.exit(main())
