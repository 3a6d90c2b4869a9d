"""Serve the Voila dashboard (``dashboards/snoop.ipynb``) on one collection, locked down.

The server shows the dashboard and nothing else: it runs from a fresh directory that holds
only a copy of the dashboard notebook (so no file of the collection or of its folder is under
its root), with Voila's file allowlist empty, sources stripped, tracebacks hidden, and bound
to 127.0.0.1 unless told otherwise (then a token is required). Voila itself accepts only
widget (comm) messages from the page, never code; :mod:`snoop_nb.ui.server` adds what a
classroom needs: websockets on Jupyter's v1 framing only, kernels shut down once their
visitor has gone, and a cap on kernels with a friendly page when full.

Voila keeps one kernel *preheated*: it has run the dashboard up to the visitor (imports, the
collection opened) before anyone asks, so a visitor gets a page at once. Models load on first
use only (a text search, a search by picture), never at start: a kernel that only shows and
labels pictures stays small (no PyTorch, no sentence model), which is what lets one machine
hold a class.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
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

#: Seconds after which a kernel whose visitor has gone (no websocket, no activity) is shut down.
CULL_AFTER = 120
#: Visitors' kernels a server runs at once by default. A kernel that has shown and labelled
#: pictures holds about 0.2-0.3 GB (benchmarks/ui.py), one that ran a text search about 1 GB:
#: 40 fit in 24 GB with room for the rest.
MAX_KERNELS = 40
#: Addresses that reach this machine only: serving on any other needs a token.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Environment of the server and so of its kernels: small kernels, many of them. glibc's
#: per-thread malloc arenas (8 per core by default) hold memory that threads freed.
KERNEL_ENV = {"MALLOC_ARENA_MAX": "2"}


def dashboard_notebook() -> Path:
    """The dashboard notebook of this installation."""
    here = Path(__file__).resolve()
    # the wheel's copy (setup.py puts it in the package), then a source checkout's
    for base in (here.parent / "dashboards", here.parents[2] / "dashboards"):
        if (base / DASHBOARD).is_file():
            return base / DASHBOARD
    raise UsageError(f"the dashboard notebook {DASHBOARD} is missing from this installation")


def voila_config(
    *,
    ip: str = "127.0.0.1",
    preheat: int = 1,
    cull_after: int = CULL_AFTER,
    max_kernels: int = MAX_KERNELS,
    token: str = "",
) -> dict:
    """The server's settings (written as ``voila.json`` beside the notebook): serve the
    notebook and no other file, keep ``preheat`` kernels ready for the next visitors (0: none,
    each visitor waits for their own kernel), shut a kernel down within ``cull_after`` seconds
    of its visitor leaving (0: never), run at most ``max_kernels`` visitors' kernels (0: no
    limit), and ask for ``token`` if it is not empty."""
    # jupyter_server culls a kernel idle (no message) for cull_idle_timeout with no websocket
    # open, checking every cull_interval: the two add up to cull_after at most.
    interval = max(1, min(30, cull_after // 4))
    culling = (
        {"cull_idle_timeout": max(1, cull_after - interval), "cull_interval": interval}
        if cull_after > 0
        else {"cull_idle_timeout": 0}
    )
    return {
        "Voila": {
            "ip": ip,
            "port_retries": 0,
            "open_browser": False,
            **({"token": token} if token else {}),
            "tornado_settings": {"websocket_max_message_size": WEBSOCKET_MAX_BYTES},
        },
        "SnoopVoila": {"max_kernels": max_kernels},
        "MappingKernelManager": {"cull_connected": False, "cull_busy": False, **culling},
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
    """The server's command line (:mod:`snoop_nb.ui.server`, Voila with our handlers); it
    reads ``voila.json`` from its working directory."""
    return [
        sys.executable,
        "-m",
        "snoop_nb.ui.server",
        str(notebook),
        "--no-browser",
        f"--port={port}",
    ]


def dashboard_app(collection: str | os.PathLike | None = None):
    """The dashboard's one cell: open the collection, wait for the visitor, and return the
    :class:`~snoop_nb.ui.App` for them.

    In a kernel that Voila preheats, the collection is open before the visitor arrives;
    outside Voila (JupyterLab, nbval) it goes straight on. No model is loaded here or by a
    warm-up: the image model loads on the first search by picture, the text model on the
    first text search, so that a kernel that only browses and labels stays small.
    """
    from snoop_nb.collection import open_collection
    from snoop_nb.ui.app import App

    if collection is None:
        collection = os.environ.get("SNOOP_COLLECTION") or Path("..", "data", "demo", "collection")
    col = open_collection(collection)
    videos = os.environ.get("SNOOP_VIDEO_COLLECTION")
    videos = open_collection(videos) if videos else None
    if os.environ.get("VOILA_PREHEAT") == "True":
        from voila.utils import wait_for_request

        wait_for_request()  # returns with the visitor's request (QUERY_STRING) in os.environ
    return App(col, warm_up=False, videos=videos)


def dashboard_url(host: str, port: int, token: str = "") -> str:
    """The address to give visitors (with ``?token=`` when the server asks for one)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def serve(
    collection: str | os.PathLike,
    *,
    port: int = 8866,
    user: str | None = None,
    preheat: int = 1,
    ip: str = "127.0.0.1",
    token: str | None = None,
    cull_after: int = CULL_AFTER,
    max_kernels: int = MAX_KERNELS,
    videos: str | os.PathLike | None = None,
) -> int:
    """Serve the dashboard on ``collection`` at http://IP:PORT/ until interrupted; its Videos
    tab shows the collection ``videos`` (by default ``collection`` itself when it holds some).

    On an address other than this machine's loopback a token is required: ``token``, or one
    generated and printed in the address to hand out. See :func:`voila_config` for the rest.
    """
    from snoop_nb.collection import open_collection

    if preheat < 0 or cull_after < 0 or max_kernels < 0:
        raise UsageError("--preheat, --cull-after and --max-kernels must be 0 or more")
    if token is not None and token.strip() != token:
        raise UsageError("--token must not start or end with spaces")
    if ip not in LOOPBACK and not token:
        if token == "":
            raise UsageError(
                f"serving on {ip} reaches other machines: give a --token (or leave it out to "
                "have one generated)"
            )
        token = secrets.token_urlsafe(18)
    root = Path(collection).expanduser().absolute()
    with open_collection(root) as col:  # a clear error now, not in the visitor's page
        items = len(col)
    env = {**os.environ, **KERNEL_ENV, "SNOOP_COLLECTION": str(root)}
    env.pop("SNOOP_VIDEO_COLLECTION", None)
    if videos is not None:
        video_root = Path(videos).expanduser().absolute()
        with open_collection(video_root) as vcol:
            if vcol.videos().empty:
                raise UsageError(f"--videos {videos}: that collection holds no videos")
        env["SNOOP_VIDEO_COLLECTION"] = str(video_root)
    if user:
        from snoop_nb.kb import check_name

        env["SNOOP_USER"] = check_name("user", user)
    else:
        env.pop("SNOOP_USER", None)
    settings = voila_config(
        ip=ip, preheat=preheat, cull_after=cull_after, max_kernels=max_kernels, token=token or ""
    )
    with tempfile.TemporaryDirectory(prefix="snoop-dashboard-") as run_dir:
        notebook = Path(run_dir) / DASHBOARD
        shutil.copyfile(dashboard_notebook(), notebook)
        config = Path(run_dir) / "voila.json"
        config.touch(mode=0o600)  # it may hold the token
        config.write_text(json.dumps(settings, indent=2))
        host = socket.gethostname() if ip in ("0.0.0.0", "::", "") else ip
        print(
            f"snoop dashboard: {root.name} ({items} items) at {dashboard_url(host, port, token or '')}"
            " (Ctrl-C stops it)",
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
