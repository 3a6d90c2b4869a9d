"""Scale benchmarks, one section each (every section also runs on its own):

    python benchmarks/scale.py                          # every section, default sizes
    python benchmarks/scale.py --quick                  # smoke sizes, a few minutes
    python benchmarks/scale.py --only codes,shards      # some sections

- ``dask``   (benchmarks/scale_dask.py): images/s of the single-process kernel next to Dask
  LocalClusters of 1, 2 and 4 workers, on the demo pictures;
- ``shards`` (benchmarks/scale_shards.py): sharded against single indexes, build time,
  queries/s and recall@10;
- ``codes``  (benchmarks/scale_codes.py): compressed vectors (``pca-sq8``) at 1M and 10M
  items: build rate, one feedback round (label 20, train, rank the top 100), resident memory,
  recall@100 against exact ranking;
- ``gpu``    (benchmarks/scale_gpu.py): ViT-B-32 images/s from JPEG files at batch 256, and
  exact top-k over float16 vectors against reading them once (on a GPU when there is one).

Each section prints its table and writes its JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTIONS = {
    "dask": "scale_dask",
    "shards": "scale_shards",
    "codes": "scale_codes",
    "gpu": "scale_gpu",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--quick", action="store_true", help="each section's --quick")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}: use {', '.join(SECTIONS)}")
    failed = []
    for name in wanted:
        print(f"\n=== {name} ({SECTIONS[name]}.py) ===", flush=True)
        module = importlib.import_module(SECTIONS[name])
        rc = module.main(["--quick"] if args.quick else [])
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
