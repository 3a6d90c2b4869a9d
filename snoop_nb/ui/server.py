"""The dashboard's web server: Voila 0.5.13 with three handlers of our own, run in-process.

``python -m snoop_nb.ui.server NOTEBOOK`` (what ``snoop dashboard`` runs, with ``voila.json``
in its working directory) starts :class:`SnoopVoila`, a subclass of Voila's application that
swaps two of Voila's request handlers for subclasses and adds one setting:

- **kernel websockets** (:class:`KernelChannels`): a client must ask for Jupyter's
  ``v1.kernel.websocket.jupyter.org`` subprotocol, as every Jupyter and Voila front-end does,
  or the handshake is refused (HTTP 400). Voila's own handler reads every binary message it
  sends with the v1 framing; a client on the legacy framing gets binary messages whose first 8
  bytes, read as v1, are a count in the billions, and the server grew without bound building a
  list that long (13 GB in minutes) and stopped answering everyone. The header is also read
  with bounds here, so that no framing can make it allocate.
- **the page** (:class:`DashboardPage`): each visitor gets a kernel; when ``max_kernels``
  visitors' kernels are running, a newcomer gets a short HTML page saying the dashboard is
  full (HTTP 503, ``Retry-After``) instead of a kernel the machine cannot hold.
- **culling**: configured, not coded: jupyter_server's kernel manager shuts down kernels that
  have had no websocket connection and no activity for ``MappingKernelManager.cull_idle_timeout``
  seconds, checked every ``cull_interval`` (see :func:`snoop_nb.ui.dashboard.voila_config`).
  Voila's pool of preheated kernels is never culled (Voila's kernel manager sees to that).

Subclassing, not monkeypatching: Voila builds its handler table in ``Voila.init_handlers`` and
the culling is a setting of the kernel manager, so a subclass of the application that swaps two
table entries changes this server only, visibly, and fails loudly (``RuntimeError`` at start)
if a later Voila renames the handlers it replaces.
"""

from __future__ import annotations

import html
import json
import sys
from typing import Any

import tornado.web
from traitlets import Integer
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

#: The kernel websocket subprotocol of Jupyter Server 2 and of every current front-end.
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def read_v1_header(message: bytes) -> dict | None:
    """The header of a binary kernel message in the v1 framing, or None if it is not one.

    v1: a little-endian uint64 count ``n``, then ``n`` uint64 offsets, then the parts (channel,
    header, parent header, metadata, content, buffers...). Offsets are checked against the
    message's length before anything is allocated.
    """
    if len(message) < 8:
        return None
    n = int.from_bytes(message[:8], "little")
    if n < 3 or 8 * (n + 1) > len(message):
        return None
    offsets = [int.from_bytes(message[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(3)]
    start, end = offsets[1], offsets[2]
    if not 8 * (n + 1) <= start <= end <= len(message):
        return None
    try:
        header = json.loads(message[start:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


class KernelChannels(VoilaKernelWebsocketHandler):
    """Voila's kernel websocket, for v1 clients only, with a bounded header reader."""

    async def get(self, *args: Any, **kwargs: Any) -> None:
        offered = {
            p.strip()
            for line in self.request.headers.get_list("Sec-WebSocket-Protocol")
            for p in line.split(",")
        }
        if V1_PROTOCOL not in offered:
            self.log.warning(
                "refused a kernel websocket from %s without the %s subprotocol",
                self.request.remote_ip,
                V1_PROTOCOL,
            )
            raise tornado.web.HTTPError(
                400, reason=f"kernel websockets must use the {V1_PROTOCOL} subprotocol"
            )
        await super().get(*args, **kwargs)

    def write_message(self, message: bytes | dict[str, Any], binary: bool = False):
        if isinstance(message, bytes):
            header = read_v1_header(message)
        elif isinstance(message, dict):
            header = message.get("header")
        else:
            header = None
        if isinstance(header, dict) and header.get("msg_type") == "execute_input":
            return None  # Voila hides the code it runs, as its own handler does
        # Voila's handler reads headers unbounded: skip it, go to jupyter_server's
        return super(VoilaKernelWebsocketHandler, self).write_message(message, binary)


FULL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>snoop · the dashboard is full</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;
color:#222;line-height:1.5}}h1{{font-size:1.4em}}</style></head>
<body class="snoop-full"><h1>The dashboard is full</h1>
<p>{n} people are using this dashboard right now, as many as this server can hold.</p>
<p>Please try again in a minute or two: a place frees itself when someone closes their tab.
This page does not reload by itself.</p>
<p><a href="">Try again</a></p></body></html>
"""


class DashboardPage(TornadoVoilaHandler):
    """Voila's page handler, refusing a visitor (HTTP 503 and a friendly page) when
    ``max_kernels`` visitors' kernels are running."""

    #: Visitors admitted whose kernel has not been counted yet (the page has not started).
    _admitted = 0

    @tornado.web.authenticated
    async def get(self, path: str | None = None) -> None:
        app = self.settings.get("snoop_voila")
        limit = app.max_kernels if app is not None else 0
        n = visitor_kernels(self.kernel_manager) + DashboardPage._admitted
        if limit and n >= limit:
            self.log.warning("dashboard full (%d kernels): refused a visitor", n)
            self.set_status(503)
            self.set_header("Retry-After", "60")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(FULL_PAGE.format(n=html.escape(str(n))))
            return
        DashboardPage._admitted += 1  # no await between the count and this: no race
        counted = False
        try:
            async for chunk in self.get_generator(path=path):
                if not counted:  # the visitor's kernel is running now: the manager counts it
                    DashboardPage._admitted -= 1
                    counted = True
                self.write(chunk)
                self.flush()
        finally:
            if not counted:
                DashboardPage._admitted -= 1


def visitor_kernels(kernel_manager: Any) -> int:
    """Running kernels that serve visitors: all of them but Voila's preheated pool."""
    running = set(kernel_manager.list_kernel_ids())
    pooled = set()
    # Voila's preheating kernel manager keeps its pool in `_pools` (no public accessor): a
    # pool entry is a task whose result names its kernel once started.
    for pool in getattr(kernel_manager, "_pools", {}).values():
        for task in pool:
            if task.done() and not task.cancelled() and task.exception() is None:
                pooled.add(task.result().get("kernel_id"))
    return len(running - pooled)


#: Voila's handlers and ours in their place.
_REPLACED = {VoilaKernelWebsocketHandler: KernelChannels, TornadoVoilaHandler: DashboardPage}


class SnoopVoila(Voila):
    """Voila with :class:`KernelChannels`, :class:`DashboardPage` and a kernel cap."""

    max_kernels = Integer(
        40,
        config=True,
        help="Most visitors' kernels running at once (0: no limit); preheated ones not counted.",
    )

    def init_handlers(self) -> list:
        handlers = []
        found = set()
        for spec in super().init_handlers():
            cls = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else None
            if cls in _REPLACED:
                found.add(cls)
                spec = (spec[0], _REPLACED[cls], *spec[2:])
            handlers.append(spec)
        if found != set(_REPLACED):
            missing = ", ".join(c.__name__ for c in set(_REPLACED) - found)
            raise RuntimeError(f"this Voila has no handler {missing} to replace: pin voila 0.5")
        return handlers

    def init_settings(self) -> dict:
        return {**super().init_settings(), "snoop_voila": self}


def main(argv: list[str] | None = None) -> None:
    """Run the server: the same arguments as ``voila``."""
    SnoopVoila.launch_instance(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
