"""Serve the Voila dashboard (``dashboards/snoop.ipynb``) on one collection, locked down.

The server shows the dashboard and nothing else: it runs from a fresh directory that holds
only a copy of the dashboard notebook (so no file of the collection or of its folder is under
its root), with Voila's file allowlist empty, sources stripped, tracebacks hidden, and bound
to 127.0.0.1. Voila itself accepts only widget (comm) messages from the page, never code.

Voila keeps one kernel *preheated*: it has run the dashboard up to the visitor (imports, the
collection opened, the model loaded) before anyone asks, so a visitor gets a page at once and
a first search without the model's load time; :func:`dashboard_app` does the waiting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from snoop_nb.errors import UsageError

#: The dashboard notebook's name, in ``dashboards/`` beside the package.
DASHBOARD = "snoop.ipynb"

#: Largest websocket message the server accepts (bytes): room for an upload at the UI's
#: limit (snoop_nb.ui.search.MAX_UPLOAD_BYTES) encoded in a widget message.
WEBSOCKET_MAX_BYTES = 32 * 1024 * 1024


def dashboard_notebook() -> Path:
    """The dashboard notebook of this installation."""
    here = Path(__file__).resolve()
    # the wheel's copy (setup.py puts it in the package), then a source checkout's
    for base in (here.parent / "dashboards", here.parents[2] / "dashboards"):
        if (base / DASHBOARD).is_file():
            return base / DASHBOARD
    raise UsageError(f"the dashboard notebook {DASHBOARD} is missing from this installation")


def voila_config(*, ip: str = "127.0.0.1", preheat: int = 1) -> dict:
    """Voila's settings (written as ``voila.json`` beside the notebook): serve the notebook and
    no other file, keep ``preheat`` kernels ready for the next visitors (0: none, each visitor
    waits for their own kernel)."""
    return {
        "Voila": {
            "ip": ip,
            "port_retries": 0,
            "open_browser": False,
            "tornado_settings": {"websocket_max_message_size": WEBSOCKET_MAX_BYTES},
        },
        "VoilaConfiguration": {
            "file_allowlist": [],
            "file_denylist": [".*"],
            "show_tracebacks": False,
            "strip_sources": True,
            "preheat_kernel": preheat > 0,
            "default_pool_size": max(preheat, 1),
        },
    }


def voila_command(notebook: Path, port: int) -> list[str]:
    """The Voila command line; it reads ``voila.json`` from its working directory."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}"]


def dashboard_app(collection: str | os.PathLike | None = None):
    """The dashboard's one cell: open the collection, get ready, wait for the visitor, and
    return the :class:`~snoop_nb.ui.App` for them.

    In a kernel that Voila preheats, the model is loaded and a text encoded before the
    visitor arrives; outside Voila (JupyterLab, nbval) it goes straight on.
    """
    from snoop_nb.collection import open_collection
    from snoop_nb.ui.app import App

    if collection is None:
        collection = os.environ.get("SNOOP_COLLECTION") or Path("..", "data", "demo", "collection")
    col = open_collection(collection)
    preheated = os.environ.get("VOILA_PREHEAT") == "True"
    if preheated:
        from voila.utils import wait_for_request

        col.embedder.encode_texts(["a picture"])
        wait_for_request()  # returns with the visitor's request (QUERY_STRING) in os.environ
    return App(col, warm_up=not preheated)


def serve(
    collection: str | os.PathLike,
    *,
    port: int = 8866,
    user: str | None = None,
    preheat: int = 1,
) -> int:
    """Serve the dashboard on ``collection`` at http://127.0.0.1:PORT/ until interrupted."""
    from snoop_nb.collection import open_collection

    root = Path(collection).expanduser().absolute()
    with open_collection(root) as col:  # a clear error now, not in the visitor's page
        items = len(col)
    env = {**os.environ, "SNOOP_COLLECTION": str(root)}
    if user:
        from snoop_nb.kb import check_name

        env["SNOOP_USER"] = check_name("user", user)
    else:
        env.pop("SNOOP_USER", None)
    with tempfile.TemporaryDirectory(prefix="snoop-dashboard-") as run_dir:
        notebook = Path(run_dir) / DASHBOARD
        shutil.copyfile(dashboard_notebook(), notebook)
        config = json.dumps(voila_config(preheat=preheat), indent=2)
        (Path(run_dir) / "voila.json").write_text(config)
        print(
            f"snoop dashboard: {root.name} ({items} items) at http://127.0.0.1:{port}/ "
            "(Ctrl-C stops it)",
            flush=True,
        )
        proc = subprocess.Popen(voila_command(notebook, port), cwd=run_dir, env=env)

        def stop(*_):  # SIGTERM/SIGINT: Voila shuts its kernels down, then we leave
            proc.terminate()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:
                    stop()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
