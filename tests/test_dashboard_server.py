"""The dashboard's server (snoop_nb.ui.server) as clients meet it: a websocket client on the
legacy framing is refused and cannot make the server grow; kernels of visitors who left are
shut down; a full server says so; beyond localhost a token is required."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dashboard import (
    copy_demo_collection,
    dashboard,
    kernel_id_in,
    kernel_pid,
    memory_mb,
    processes_of,
    request_widget_states,
)
from jupyter_server.services.kernels.connection.base import (
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from snoop_nb.cli import main as snoop
from snoop_nb.ui.dashboard import voila_config
from snoop_nb.ui.server import FULL_PAGE, read_v1_header

#: A file every Voila serves: is the server answering?
STATIC = "voila/templates/lab/static/index.css"


@pytest.fixture
def col_dir(tmp_path) -> Path:
    return copy_demo_collection(tmp_path / "collection")


def get(url: str, timeout: float = 120) -> tuple[int, str, dict]:
    """(status, body, headers) of a GET, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)


def wait_until(condition, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def alive(pid: int | None) -> bool:
    return pid is not None and Path(f"/proc/{pid}").exists()


# --- quick checks ----------------------------------------------------------------------------
def a_message(buffers: list[bytes]) -> dict:
    header = {"msg_id": "1", "msg_type": "comm_msg", "session": "s", "username": "u"}
    header |= {"date": "2026-01-01T00:00:00Z", "version": "5.3"}
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {"data": {"method": "update_states"}},
        "channel": "iopub",
        "buffers": buffers,
    }


def test_v1_header_reader_reads_v1_and_refuses_other_framings_at_once():
    msg = a_message([b"\x00" * 1000, b"pixels"])
    parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata")]
    parts += [json.dumps(msg["content"]).encode(), *msg["buffers"]]
    assert read_v1_header(serialize_msg_to_ws_v1(parts, "iopub"))["msg_type"] == "comm_msg"
    # the legacy framing read as v1 gives a count of offsets in the billions: Voila's own
    # reader built a list that long; ours says "not v1" without allocating
    legacy = serialize_binary_message(msg)
    assert int.from_bytes(legacy[:8], "little") > 10**15
    t0 = time.perf_counter()
    assert read_v1_header(legacy) is None
    assert time.perf_counter() - t0 < 0.01
    v1 = serialize_msg_to_ws_v1(parts, "iopub")
    for bad in (b"", v1[:20], v1[:60], (3).to_bytes(8, "little") + b"\xff" * 40):
        assert read_v1_header(bad) is None


def test_culling_settings_shut_a_kernel_down_within_cull_after():
    for cull_after in (6, 120, 600):
        km = voila_config(cull_after=cull_after)["MappingKernelManager"]
        assert km["cull_idle_timeout"] + km["cull_interval"] <= cull_after
        assert km["cull_connected"] is False  # a visitor still there keeps their kernel
    assert voila_config(cull_after=0)["MappingKernelManager"]["cull_idle_timeout"] == 0


def test_serving_beyond_localhost_with_an_empty_token_is_refused(col_dir, capsys):
    assert snoop(["dashboard", "--collection", str(col_dir), "--ip", "0.0.0.0", "--token", ""]) == 2
    assert "--token" in capsys.readouterr().err


# --- the server, for real --------------------------------------------------------------------
@pytest.mark.slow
def test_legacy_websocket_client_is_refused_and_the_server_stays_small(col_dir):
    from tornado.httpclient import HTTPClientError

    with dashboard(col_dir, args=("--cull-after", "0")) as url:
        status, html, _ = get(url + "?user=probe")
        assert status == 200
        kernel = kernel_id_in(html)
        (server,) = processes_of(col_dir, "server")
        before = memory_mb(server)["rss"]
        # what a plain client does: no subprotocol, then ask for every widget's state
        with pytest.raises(HTTPClientError) as refused:
            asyncio.run(request_widget_states(url, kernel, v1=False, timeout=20))
        assert refused.value.code == 400
        # the server goes on answering at once and does not grow (Voila alone: +70 MB/s and
        # no answer at all after a second)
        for _ in range(8):
            t0 = time.perf_counter()
            assert get(url + STATIC, timeout=5)[0] == 200
            assert time.perf_counter() - t0 < 1.0
            time.sleep(0.5)
        assert memory_mb(server)["rss"] - before < 50
        # the framing every Jupyter front-end uses still gets the states, binary buffers too
        content, buffers = asyncio.run(request_widget_states(url, kernel, v1=True))
        assert len(content["data"]["states"]) > 20
        assert buffers and len(buffers) == len(content["data"]["buffer_paths"])
        assert memory_mb(server)["rss"] - before < 50


async def _hold_websocket(url: str, kernel: str, seconds: float) -> None:
    """Stay connected to ``kernel`` for ``seconds``, as a visitor with the page open."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = url.replace("http://", "ws://") + f"api/kernels/{kernel}/channels?session_id=v"
    ws = await websocket_connect(
        HTTPRequest(ws_url), subprotocols=["v1.kernel.websocket.jupyter.org"]
    )
    await asyncio.sleep(seconds)
    ws.close()


@pytest.mark.slow
def test_full_server_says_so_and_kernels_of_visitors_who_left_are_shut_down(col_dir):
    args = ("--max-kernels", "2", "--cull-after", "8")
    with dashboard(col_dir, preheat=1, args=args) as url:
        pages = [get(url + f"?user={name}") for name in ("ann", "ben")]
        assert [status for status, _, _ in pages] == [200, 200]
        ann, ben = (kernel_pid(kernel_id_in(html)) for _, html, _ in pages)
        status, body, headers = get(url + "?user=cy")
        assert status == 503
        # (while the pool's kernel restarts it may count as a third visitor for a second)
        assert body in (FULL_PAGE.format(n=2), FULL_PAGE.format(n=3))
        assert "The dashboard is full" in body and "try again" in body
        assert int(headers["Retry-After"]) > 0
        # the pool's kernel refills: two visitors and one kernel ready
        assert wait_until(lambda: len(processes_of(col_dir)) == 3, 60), processes_of(col_dir)
        pooled = (set(processes_of(col_dir)) - {ann, ben}).pop()

        # ann keeps her page open (a websocket, no message) past --cull-after; ben has left
        asyncio.run(_hold_websocket(url, kernel_id_in(pages[0][1]), 14))
        assert alive(ann), "a connected visitor's kernel was shut down"
        assert not alive(ben), "the kernel of a visitor who left is still running"
        # ann leaves too: her kernel goes within --cull-after; the ready one stays
        assert wait_until(lambda: not alive(ann), 8 + 4)
        assert processes_of(col_dir) == [pooled]
        assert get(url + "?user=cy")[0] == 200  # there is room again


@pytest.mark.slow
def test_serving_beyond_localhost_needs_the_token_it_prints(col_dir):
    with dashboard(col_dir, args=("--ip", "0.0.0.0")) as url:
        log = next(col_dir.parent.glob("dashboard-*.log")).read_text()
        token = re.search(r"\?token=([\w-]+)", log).group(1)
        assert len(token) >= 16
        status, _, headers = get(url + "?user=intruder")
        assert status in (302, 403)
        assert status == 403 or "/login" in headers["Location"]
        assert get(url + "?user=intruder&token=wrong" + token)[0] in (302, 403)
        assert processes_of(col_dir) == []  # no kernel was started for them
        status, html, _ = get(url + f"?user=guest&token={token}")
        assert status == 200
        assert kernel_id_in(html) and len(processes_of(col_dir)) == 1
