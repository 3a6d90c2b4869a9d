"""Benchmark the dashboard in a real browser: first render and click-to-tile latency.

    python benchmarks/ui.py                    # 5 page loads, 40 clicks, on the demo collection
    python benchmarks/ui.py --loads 3 --clicks 20
    python benchmarks/ui.py --preheat 1 --gap 40   # visitors arriving at an idle dashboard

What it does: copies the demo collection (built by ``make demo``) into a temporary folder,
serves it with ``snoop dashboard`` (Voila, 127.0.0.1), and drives Debian's headless Chromium
with Playwright (the same helpers as tests/test_dashboard.py).

- *first render*: from navigation start to the first page of thumbnails shown and the search
  box present (the dashboard is usable), in a fresh browser context each time (a new kernel
  each time, as for a new visitor). Target: 5 s. With ``--preheat 0`` each visitor's kernel
  starts when they arrive; with ``--preheat N`` (what ``snoop dashboard`` does, N=1) Voila keeps
  N kernels that have already opened the collection and loaded the model, and ``--gap S``
  leaves S seconds between visitors for the pool to refill.
- *first text search*: then, typing "a bird" and Enter until its results are shown (the first
  query loads the text model unless the dashboard's warm-up has already done it).
- *click*: from a tile's click to its label attribute changing, measured in the page's own
  clock. The attribute changes only when the kernel has written the label to the knowledge
  base and sent it back, so this is the whole round trip. Target: 100 ms. Every label is then
  read back from the knowledge base by this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import format_table, machine_info, write_json  # noqa: E402
from dashboard import (  # noqa: E402
    chromium,
    click_tile,
    copy_demo_collection,
    dashboard,
    new_page,
    open_app,
    search_text,
    tile_ids,
)


def _stats(name: str, values: list[float], target: float | None) -> dict:
    values = sorted(values)
    return {
        "measure": name,
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p90_ms": round(values[min(len(values) - 1, int(0.9 * len(values)))], 1),
        "max_ms": round(values[-1], 1),
        "target_ms": target,
        "met": None if target is None else statistics.median(values) < target,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--loads", type=int, default=5, help="fresh page loads to time")
    p.add_argument("--clicks", type=int, default=40, help="tile clicks to time")
    p.add_argument("--preheat", type=int, default=0, help="kernels Voila keeps ready")
    p.add_argument("--gap", type=float, default=0.0, help="seconds between two page loads")
    p.add_argument("--out", type=Path, default=None, help="default results/ui-preheatN.json")
    args = p.parse_args(argv)

    from snoop_nb import open_collection

    with tempfile.TemporaryDirectory(prefix="snoop-bench-ui-") as tmp:
        col_dir = copy_demo_collection(Path(tmp) / "collection")
        with dashboard(col_dir, preheat=args.preheat) as url, chromium() as browser:
            renders, searches = [], []
            for i in range(args.loads):
                time.sleep(args.gap)
                page = new_page(browser)
                renders.append(1000 * open_app(page, f"{url}?user=bench{i}"))
                t0 = time.perf_counter()
                search_text(page, "a bird")
                searches.append(1000 * (time.perf_counter() - t0))
                page.context.close()
            page = new_page(browser)
            open_app(page, f"{url}?user=clicker")
            search_text(page, "a bird")
            page.fill(".snoop-new-class input", "bench")
            page.press(".snoop-new-class input", "Enter")
            page.wait_for_function(
                "() => /relevant/.test(document.querySelector('.snoop-counts').textContent)"
            )
            ids = tile_ids(page)
            clicks, final = [], {}
            for n in range(args.clicks):
                item = ids[n % len(ids)]
                result = click_tile(page, item)
                clicks.append(result["ms"])
                final[item] = int(result["label"])
            page.context.close()
        with open_collection(col_dir) as col:
            lab = col.kb.labels(col.kb.get_class("clicker", "bench"))
        in_kb = {int(i): int(v) for i, v in zip(lab["item_id"], lab["value"], strict=True)}
        lost = [i for i, v in final.items() if in_kb.get(i, 0) != v]

    rows = [
        _stats("first render (usable)", renders, 5000),
        _stats("first text search", searches, None),
        _stats("click -> tile updated + in KB", clicks, 100),
    ]
    print(f"preheated kernels: {args.preheat}, gap between visitors: {args.gap} s")
    print(format_table(rows, list(rows[0])))
    print(f"labels checked in the knowledge base: {len(final)}, lost: {len(lost)}")
    out = args.out or HERE / "results" / f"ui-preheat{args.preheat}.json"
    path = write_json(
        out,
        {
            "benchmark": "ui",
            "preheat": args.preheat,
            "gap_s": args.gap,
            "machine": machine_info(("voila", "ipyvuetify", "ipywidgets", "playwright")),
            "results": rows,
            "labels_checked": len(final),
            "labels_lost": len(lost),
            "raw_ms": {"render": renders, "search": searches, "click": clicks},
        },
    )
    print(f"wrote {path}")
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
