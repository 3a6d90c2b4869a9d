"""Benchmark the dashboard as a class uses it: N visitors in real browser pages, clicking tiles.

    python benchmarks/ui.py                                  # 30 visitors, a click each every 2 s, 2 min
    python benchmarks/ui.py --visitors 5 --duration 30       # a quick check
    python benchmarks/ui.py --visitors 30 --duration 120 --interval 2 --preheat 1

What it does: copies the demo collection (built by ``make demo``) into a temporary folder,
serves it with ``snoop dashboard`` (127.0.0.1, ``--max-kernels`` at least the visitors), and
opens one headless Debian Chromium (Playwright) with one browser context per visitor, each a
different user (``?user=bench-I``) with their own class. The visitors arrive one after the
other (``first render``: navigation to the first thumbnails and the search box shown), then all
click at once for ``--duration`` seconds, each a tile of their page every ``--interval``
seconds (their clicks spread over the interval so the server sees a steady stream):

- *click to stored*: from a tile's click to its label attribute changing, in the page's own
  clock. The attribute changes only once the kernel has written the label to the knowledge
  base (catalog.sqlite) and sent it back, so this is the whole round trip. Target: p95 under
  250 ms.
- *labels lost*: every visitor's labels are read back from catalog.sqlite by this process at
  the end and compared with the last label each tile showed; a click that never came back
  counts as lost too. Target: 0.
- *memory*: sampled every few seconds during the clicking: RSS and PSS of each kernel (PSS
  shares a page among the processes that map it, so PSS adds up), and the total PSS of the
  server and all its kernels (the browser not counted). Target: total under 16 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import format_table, machine_info, write_json  # noqa: E402
from dashboard import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    CLICK_AND_WAIT,
    LOCAL_ONLY,
    copy_demo_collection,
    dashboard,
    memory_mb,
    processes_of,
)

CLASS = "bench"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def _stats(name: str, values: list[float], target: float | None, unit: str = "ms") -> dict:
    if not values:
        return {"measure": name, "n": 0, "median": None, "p95": None, "max": None,
                "unit": unit, "target": target, "met": False}  # fmt: skip
    p95 = percentile(values, 95)
    return {
        "measure": name,
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "p95": round(p95, 1),
        "max": round(max(values), 1),
        "unit": unit,
        "target": target,
        "met": None if target is None else p95 < target,
    }


class MemorySampler(threading.Thread):
    """Samples the memory of the dashboard's server and kernels every ``every`` seconds."""

    def __init__(self, collection: Path, every: float = 3.0):
        super().__init__(daemon=True)
        self.collection, self.every = collection, every
        self.samples: list[dict] = []
        self._halt = threading.Event()

    def sample(self) -> dict:
        kernels = {}
        for pid in processes_of(self.collection):
            try:
                kernels[pid] = memory_mb(pid)
            except OSError:  # it went away meanwhile
                continue
        servers = processes_of(self.collection, "server")
        server = memory_mb(servers[0]) if servers else {"rss": 0.0, "pss": 0.0, "uss": 0.0}
        total = server["pss"] + sum(k["pss"] for k in kernels.values())
        return {"t": time.monotonic(), "server": server, "kernels": kernels, "total_pss": total}

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append(self.sample())


async def new_page(browser):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()

    async def only_local(route):
        host = route.request.url.split("/")[2].split(":")[0]
        if host in LOCAL_ONLY or route.request.url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            await route.abort()

    await page.route("**/*", only_local)
    return page


async def arrive(browser, url: str, user: str) -> tuple[object, float, list[int]]:
    """A visitor opens the dashboard and creates their class: (page, first render ms, tiles)."""
    page = await new_page(browser)
    t0 = time.perf_counter()
    await page.goto(f"{url}?user={user}", timeout=180_000)
    await page.wait_for_selector(".snoop-tile img", timeout=180_000)
    await page.wait_for_selector(".snoop-search-text input", timeout=180_000)
    render_ms = 1000 * (time.perf_counter() - t0)
    await page.fill(".snoop-new-class input", CLASS)
    await page.press(".snoop-new-class input", "Enter")
    await page.wait_for_function(
        "() => /relevant/.test(document.querySelector('.snoop-counts').textContent)",
        timeout=60_000,
    )
    ids = await page.eval_on_selector_all(".snoop-tile", "ts => ts.map(t => +t.dataset.id)")
    return page, render_ms, ids


async def click_for(page, ids: list[int], *, start: float, duration: float, interval: float,
                    offset: float, timeout_ms: float = 15_000) -> dict:  # fmt: skip
    """Click ``ids`` in turn, one every ``interval`` s from ``start + offset`` until
    ``start + duration``; returns latencies, the last label each tile showed, and failures."""
    latencies, final, failed = [], {}, 0
    n = 0
    while True:
        due = start + offset + n * interval
        if due >= start + duration:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        item = ids[n % len(ids)]
        n += 1
        try:
            result = await asyncio.wait_for(page.evaluate(CLICK_AND_WAIT, item), timeout_ms / 1000)
        except (asyncio.TimeoutError, Exception):
            failed += 1
            final[item] = None
            continue
        latencies.append(result["ms"])
        final[item] = int(result["label"])
    return {"latencies": latencies, "final": final, "failed": failed, "clicks": n}


async def classroom(url: str, args) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            visitors, renders = [], []
            for i in range(args.visitors):  # a class arrives one by one
                page, render_ms, ids = await arrive(browser, url, f"bench-{i}")
                visitors.append((f"bench-{i}", page, ids[: args.tiles]))
                renders.append(render_ms)
                print(f"  visitor {i + 1}/{args.visitors} in: {render_ms:.0f} ms", flush=True)
            start = time.monotonic() + 1.0
            rng = random.Random(0)
            runs = await asyncio.gather(
                *[
                    click_for(
                        page,
                        ids,
                        start=start,
                        duration=args.duration,
                        interval=args.interval,
                        offset=rng.uniform(0, args.interval),
                    )
                    for _, page, ids in visitors
                ]
            )
            for _, page, _ in visitors:
                await page.context.close()
        finally:
            await browser.close()
    return {"renders": renders, "runs": dict(zip([u for u, _, _ in visitors], runs, strict=True))}


def labels_lost(col_dir: Path, runs: dict) -> tuple[int, int]:
    """(labels checked, labels lost): each tile's last shown label against catalog.sqlite."""
    from snoop_nb import open_collection

    checked = lost = 0
    with open_collection(col_dir) as col:
        for user, run in runs.items():
            lab = col.kb.labels(col.kb.get_class(user, CLASS))
            stored = {int(i): int(v) for i, v in zip(lab["item_id"], lab["value"], strict=True)}
            for item, shown in run["final"].items():
                checked += 1
                if shown is None or stored.get(item, 0) != shown:
                    lost += 1
    return checked, lost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--visitors", type=int, default=30, help="browser pages at once (default 30)")
    p.add_argument("--duration", type=float, default=120, help="seconds of clicking (default 120)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between a visitor's clicks")
    p.add_argument("--tiles", type=int, default=12, help="tiles each visitor cycles through")
    p.add_argument("--preheat", type=int, default=1, help="kernels the server keeps ready")
    p.add_argument("--out", type=Path, default=HERE / "results" / "ui.json")
    args = p.parse_args(argv)
    if args.visitors < 1 or args.duration <= 0 or args.interval <= 0:
        p.error("--visitors, --duration and --interval must be positive")

    with tempfile.TemporaryDirectory(prefix="snoop-bench-ui-") as tmp:
        col_dir = copy_demo_collection(Path(tmp) / "collection")
        cli = ("--max-kernels", str(max(40, args.visitors)), "--cull-after", "120")
        with dashboard(col_dir, preheat=args.preheat, args=cli) as url:
            sampler = MemorySampler(col_dir)
            idle = sampler.sample()
            print(f"serving {url} ({args.visitors} visitors)", flush=True)
            t0 = time.monotonic()
            sampler.start()
            try:
                result = asyncio.run(classroom(url, args))
            finally:
                sampler.stop()
            wall = time.monotonic() - t0
        checked, lost = labels_lost(col_dir, result["runs"])

    runs = result["runs"].values()
    clicks = [ms for run in runs for ms in run["latencies"]]
    samples = sampler.samples
    peak = max(samples, key=lambda s: s["total_pss"])
    last = samples[-2] if len(samples) > 1 else samples[-1]  # the last one while clicking
    kernel_pss = [k["pss"] for k in last["kernels"].values()]
    kernel_rss = [k["rss"] for k in last["kernels"].values()]
    rows = [
        _stats("first render (usable)", result["renders"], None),
        _stats("click -> stored (tile updated)", clicks, 250),
        _stats("kernel PSS (end of clicking)", kernel_pss, 500, "MB"),
        _stats("kernel RSS (end of clicking)", kernel_rss, None, "MB"),
    ]
    memory = {
        "idle_total_pss_mb": round(idle["total_pss"], 1),
        "peak_total_pss_mb": round(peak["total_pss"], 1),
        "peak_total_target_mb": 16 * 1024,
        "peak_total_met": peak["total_pss"] < 16 * 1024,
        "kernels_at_peak": len(peak["kernels"]),
        "server_pss_mb": round(peak["server"]["pss"], 1),
    }
    made = sum(run["clicks"] for run in runs)
    failed = sum(run["failed"] for run in runs)
    print(
        f"{args.visitors} visitors, a click each every {args.interval} s for {args.duration} s "
        f"(preheat {args.preheat}); wall {wall:.0f} s"
    )
    print(format_table(rows, list(rows[0])))
    print(
        f"memory (PSS, server + kernels): idle {memory['idle_total_pss_mb']:.0f} MB, peak "
        f"{memory['peak_total_pss_mb']:.0f} MB with {memory['kernels_at_peak']} kernels "
        f"(target < {16 * 1024} MB: {'met' if memory['peak_total_met'] else 'NOT met'})"
    )
    print(f"clicks made {made}, came back {len(clicks)}, failed {failed}; "
          f"labels checked in catalog.sqlite {checked}, lost {lost}")  # fmt: skip
    path = write_json(
        args.out,
        {
            "benchmark": "ui",
            "visitors": args.visitors,
            "duration_s": args.duration,
            "interval_s": args.interval,
            "preheat": args.preheat,
            "machine": machine_info(("voila", "ipyvuetify", "ipywidgets", "playwright")),
            "results": rows,
            "memory": memory,
            "clicks_made": made,
            "clicks_failed": failed,
            "labels_checked": checked,
            "labels_lost": lost,
            "raw_ms": {"render": result["renders"], "click": clicks},
            "memory_samples": [
                {
                    "t": round(s["t"] - samples[0]["t"], 1),
                    "total_pss_mb": round(s["total_pss"], 1),
                    "kernels": len(s["kernels"]),
                }
                for s in samples
            ],
        },
    )
    print(f"wrote {path}")
    ok = lost == 0 and failed == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
