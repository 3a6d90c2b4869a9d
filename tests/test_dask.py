"""Indexing on a Dask cluster (snoop_nb.scale): a 2-worker LocalCluster builds the collection one
process builds; a worker killed mid-run, a task that fails, a client killed mid-run, and
``snoop index --dask``. Real pictures (variants of scikit-image's photographs) with a broken one,
real videos made by snoop_nb.media.synthvideo with a fake one, embedded by conftest's tiny
open_clip model, which the workers load from its files as a user's would be."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo_set
from mediafiles import photo

from snoop_nb import open_collection
from snoop_nb.cli import main as snoop_main
from snoop_nb.media.synthvideo import make_video
from snoop_nb.scale import ClusterError, add_distributed, connect, parse_scheduler
from snoop_nb.scale import cluster as cluster_module
from snoop_nb.scale.cluster import ShareCores, dashboard_note
from snoop_nb.store.adding import Adder

SHARD = 4  # 24 pictures: 6 shards, and 3 video tasks
FAST = {"detector": "adaptive", "keyframe_every": 2.0}
FLAGS = ["--detector", "adaptive", "--keyframe-every", "2"]  # FAST on the command line
#: Catalog columns that must come out the same (ids and times of adding differ).
SAME = (
    "uri, kind, video, t_start, t_end, size, mtime_ns, digest, width, height, status, error, meta"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 pictures and a broken one; two videos and a fake one."""
    root = tmp_path_factory.mktemp("dask_corpus")
    make_photo_set(root / "photos", per_photo=4)
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a truncated jpeg")
    pictures = [photo(n, (160, 120)) for n in ("chelsea", "rocket", "coffee")]
    common = {"size": (160, 120), "pictures_per_shot": 1, "flashes": 0, "gradual": 0}
    make_video(root / "videos" / "a.mp4", pictures[:2], seconds=4, seed=1, **common)
    make_video(root / "videos" / "b.mkv", pictures[1:], seconds=3, seed=2, **common)
    (root / "videos" / "fake.mp4").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 worker processes for the module (its start-up is paid once)."""
    with connect("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def reference(corpus, tiny_embedder, tmp_path_factory):
    """The corpus indexed in one process by ``col.add``, and its report."""
    col = open_collection(
        tmp_path_factory.mktemp("ref") / "col", create=True, embedder=tiny_embedder
    )
    report = col.add([corpus], progress=False, **FAST)
    yield col, report
    col.close()


@pytest.fixture
def col(tmp_path, tiny_embedder):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        yield c


def rows(col) -> dict[str, tuple]:
    """Each catalogued file's row by uri, checked to be there once."""
    got = col._db.execute(f"SELECT {SAME} FROM items WHERE status != 'deleted'").fetchall()
    uris = [r[0] for r in got]
    assert len(uris) == len(set(uris)), "a file catalogued twice"
    return {r[0]: r[1:] for r in got}


def assert_whole(col) -> None:
    """Vectors, index and catalog agree; every item once."""
    rows(col)
    assert (col.root / "vectors.f16").stat().st_size == col.rows * col.dim * 2
    assert col.index.ids().tolist() == col.ok_ids().tolist()


def by_uri(col) -> dict[str, int]:
    items = col.items()
    return dict(zip(items["uri"], items["id"], strict=True))


def test_parse_scheduler_takes_local_workers_and_addresses():
    assert parse_scheduler("local:3") == 3
    assert parse_scheduler("local") == len(os.sched_getaffinity(0))
    assert parse_scheduler("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert parse_scheduler("tls://[::1]:8786") == "tls://[::1]:8786"
    assert parse_scheduler("tcp://scheduler") == "tcp://scheduler"  # Dask's default port
    for bad in ("local:0", "nowhere", "local:x", "http://host:80", "tcp://", "host:port"):
        with pytest.raises(Exception, match="local"):
            parse_scheduler(bad)
    # two workers on four cores get two each; four on two share them round robin
    assert [ShareCores([0, 1, 2, 3], 2).share(i) for i in (0, 1)] == [{0, 1}, {2, 3}]
    assert [ShareCores([0, 1], 4).share(i) for i in range(4)] == [{0}, {1}, {0}, {1}]


def test_a_two_worker_cluster_builds_the_collection_one_process_builds(
    corpus, client, reference, col, capsys
):
    ref, ref_report = reference
    report = add_distributed(
        col, [corpus], scheduler=client, shard_size=SHARD, progress=True, **FAST
    )
    assert "Dask dashboard:" in capsys.readouterr().err
    for name in ("discovered", "added", "replaced", "skipped", "videos", "keyframes"):
        assert getattr(report, name) == getattr(ref_report, name), name
    assert report.hours == pytest.approx(ref_report.hours)
    assert sorted(report.errors) == sorted(ref_report.errors) and len(report.errors) == 2
    assert sorted(e["uri"] for e in col.errors()) == sorted(e["uri"] for e in ref.errors())
    # the same items, file facts, metadata (a keyframe's t, shot, video) and errors
    mine, theirs = rows(col), rows(ref)
    assert mine.keys() == theirs.keys()
    for uri, row in theirs.items():
        want = row[:-1], {k: v for k, v in json.loads(row[-1] or "{}").items() if k != "video_id"}
        got = (
            mine[uri][:-1],
            {k: v for k, v in json.loads(mine[uri][-1] or "{}").items() if k != "video_id"},
        )
        assert got == want, uri
    # the same videos, shots and keyframe thumbnails
    columns = ["uri", "duration", "fps", "width", "height", "codec", "shots", "keyframes", "status"]
    videos = col.videos(status=None).sort_values("uri")[columns].reset_index(drop=True)
    assert videos.equals(ref.videos(status=None).sort_values("uri")[columns].reset_index(drop=True))
    for uri in videos.loc[videos["status"] == "ok", "uri"]:
        strip = [{k: s[k] for k in ("index", "start", "end", "keyframes")} for s in col.shots(uri)]
        assert strip == [
            {k: s[k] for k in ("index", "start", "end", "keyframes")} for s in ref.shots(uri)
        ]
    ids, ref_ids = by_uri(col), by_uri(ref)
    frames = [u for u in ids if "#t=" in u]
    assert frames
    for uri in frames:
        thumb = (col.root / "keyframes" / f"{ids[uri]}.jpg").read_bytes()
        assert thumb == (ref.root / "keyframes" / f"{ref_ids[uri]}.jpg").read_bytes(), uri
    # the same vectors, within float16 rounding, and the same search results
    uris = sorted(ids)
    got = col.vectors_of([ids[u] for u in uris])
    want = ref.vectors_of([ref_ids[u] for u in uris])
    np.testing.assert_allclose(got, want, atol=2e-3)
    for uri in uris[::5]:
        top = col.search(item=ids[uri], k=5)["uri"].tolist()
        assert top == ref.search(item=ref_ids[uri], k=5)["uri"].tolist(), uri
    assert_whole(col)
    # run again (through Collection.add): only the two bad files are tried again
    again = col.add([corpus], dask=client, progress=False, **FAST)
    assert (again.added, again.retried, len(again.errors)) == (0, 2, 2)
    assert again.skipped == report.discovered - 2 and rows(col) == mine


def test_a_worker_killed_mid_run_loses_no_finished_shard(
    corpus, client, reference, col, monkeypatch
):
    commit, killed = Adder._commit_batch, []

    def commit_then_kill(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        if not killed:  # after the first shard is committed: kill a worker with work on it
            # (tasks running or queued there, or results not yet committed, held there)
            work = {w: len(keys) for w, keys in client.processing().items()}
            for w, keys in client.has_what().items():
                work[w] = work.get(w, 0) + len(keys)
            victim = max(sorted(work), key=work.get)
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, work[victim]))

    monkeypatch.setattr(Adder, "_commit_batch", commit_then_kill)
    report = add_distributed(col, [corpus], scheduler=client, shard_size=2, progress=False, **FAST)
    assert killed and killed[0][1] > 0, "the killed worker had no work to lose"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0][0], 0)
    ref, _ = reference
    assert rows(col).keys() == rows(ref).keys()
    assert report.added == len(ref) and len(col) == len(ref)
    assert_whole(col)
    client.wait_for_workers(2, timeout=60)  # the nanny brings it back for the next tests


def fails_once(marker: str, *args, **kwargs):
    """A task that raises the first time any shard runs it (on a worker), then embeds."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        from snoop_nb.scale import cluster

        return cluster.embed_pictures(*args, **kwargs)
    raise RuntimeError("a passing fault")


@pytest.fixture
def flaky(monkeypatch, tmp_path):
    """Shards of pictures run through :func:`fails_once` (this module goes to the workers by
    value: they cannot import it); yields a function making the next failure happen."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    markers = iter(tmp_path / f"failed-{i}" for i in range(10))

    def arm() -> Path:
        marker = next(markers)
        monkeypatch.setattr(
            cluster_module, "embed_pictures", functools.partial(fails_once, str(marker))
        )
        return marker

    yield arm
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_failed_task_is_retried_and_one_failing_for_good_keeps_what_was_committed(
    corpus, client, col, flaky, monkeypatch
):
    photos = corpus / "photos"
    marker = flaky()
    report = add_distributed(col, [photos], scheduler=client, shard_size=SHARD, retries=1)
    assert marker.exists(), "no task failed"
    assert report.added == 24 and len(col) == 24
    assert_whole(col)

    with open_collection(col.root.parent / "second", create=True, embedder=col.embedder) as other:
        marker = flaky()
        with pytest.raises(ClusterError, match=r"after 0 retries \(RuntimeError: a passing fault"):
            add_distributed(other, [photos], scheduler=client, shard_size=SHARD, retries=0)
        assert marker.exists() and len(other) < 24
        assert_whole(other)
        monkeypatch.undo()
        before = len(other)
        report = add_distributed(other, [photos], scheduler=client, shard_size=SHARD)
        assert (report.skipped, report.added, len(other)) == (before, 24 - before, 24)
        assert_whole(other)


def test_an_unreachable_scheduler_is_a_clear_error(col, corpus):
    with pytest.raises(
        ClusterError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9 "
    ):
        add_distributed(col, [corpus / "photos"], scheduler="127.0.0.1:9", connect_timeout=1)
    assert len(col) == 0


def test_snoop_index_refuses_a_bad_dask_address(tmp_path, corpus, capsys):
    with pytest.raises(SystemExit) as exit:
        snoop_main(["index", str(corpus), "--collection", str(tmp_path / "c"), "--dask", "nowhere"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a Dask scheduler" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_the_dashboard_note_names_the_link_or_says_why_not(client):
    note = dashboard_note(client)
    assert note.startswith("Dask dashboard: ") and client.dashboard_link in note


#: ``snoop index --dask local:2`` in another process, made to stop after its second shard of
#: pictures is committed (and then killed with its cluster).
KILLED_CLIENT = textwrap.dedent(
    """
    import functools, sys, time
    import snoop_nb.scale
    from snoop_nb.cli import main
    from snoop_nb.store.adding import Adder

    commit, done = Adder._commit_batch, []

    def commit_then_stop(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        done.append(1)
        print("committed", len(done), flush=True)
        if len(done) == 2:
            time.sleep(120)

    Adder._commit_batch = commit_then_stop
    snoop_nb.scale.add_distributed = functools.partial(snoop_nb.scale.add_distributed, shard_size=4)
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_a_killed_client_resumes_with_each_file_once(
    corpus, tiny_clip, reference, client, tmp_path, capsys
):
    import psutil

    root = tmp_path / "col"
    args = ["index", str(corpus), "--collection", str(root), "--model", tiny_clip["model"]]
    args += ["--pretrained", tiny_clip["pretrained"], "--dask", "local:2"]
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, *args, *FLAGS, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cluster = []
    try:
        for line in run.stdout:
            if line.startswith("committed 2"):
                break
        else:
            pytest.fail(f"the run ended before the kill: {run.stderr.read()}")
        cluster = psutil.Process(run.pid).children(recursive=True)
        assert cluster, "no worker processes"
        run.send_signal(signal.SIGKILL)
        run.wait(30)
        # the workers notice their parent is gone and exit
        _, alive = psutil.wait_procs(cluster, timeout=30)
        assert not alive, f"workers left running: {alive}"
    finally:
        run.kill()
        run.wait()
        for p in cluster:
            if p.is_running():
                p.kill()
    with open_collection(root) as col:
        pictures = col.items(status=None)["kind"].eq("image").sum()
        assert 7 <= pictures <= 8  # two shards of 4 (the broken file among them, maybe)
        # what the next run skips: the good pictures and videos committed
        committed = (col.items()["kind"] == "image").sum() + len(col.videos())
    # run again, through the CLI and the module's cluster: what was committed is skipped
    again = [*args[: args.index("--dask")], "--dask", client.scheduler.address, *FLAGS, "--json"]
    assert snoop_main(again) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == committed and out["items"] == len(reference[0])
    with open_collection(root) as col:
        assert rows(col).keys() == rows(reference[0]).keys()
        assert_whole(col)
