"""Copies and near-duplicates (snoop_nb.copies): copies made by real transformations of real
photographs are grouped, similar pictures that are no copies are not, an unreadable file is
skipped and reported, `snoop duplicates --json` prints the groups, and a segment two real videos
share is found with its offset and duration."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mediafiles import photo
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from snoop_nb import open_collection
from snoop_nb.copies import connected_groups

pytestmark = pytest.mark.slow  # the default model, and real videos encoded and cut into shots


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _copies(base: Image.Image, logo: Image.Image) -> dict[str, Image.Image]:
    """One copy per transformation the issue names."""
    w, h = base.size
    colour = ImageEnhance.Color(ImageEnhance.Brightness(base).enhance(1.2)).enhance(0.5)
    text = base.copy()
    ImageDraw.Draw(text).text(
        (10, h - 40), "BREAKING NEWS", fill=(255, 255, 0), font=ImageFont.load_default(size=28)
    )
    logoed = base.copy()
    mark = logo.copy()
    mark.thumbnail((w // 5, h // 5))
    logoed.paste(mark, (w - mark.width - 8, 8))
    return {
        "crop": base.crop((int(w * 0.12), int(h * 0.1), int(w * 0.88), int(h * 0.85))),
        "resized": _jpeg(base.resize((w // 2, h // 2), Image.Resampling.BICUBIC), 40),
        "colour": colour,
        "text": text,
        "logo": logoed,
        "mirror": ImageOps.mirror(base),
    }


@pytest.fixture(scope="module")
def copies_col(tmp_path_factory, default_embedder):
    """Two photographs with six copies each; two halves of a third photograph (alike, but no
    copies of each other); two more photographs. Indexed with the default model."""
    root = tmp_path_factory.mktemp("dups")
    pics = root / "pics"
    pics.mkdir()
    families: dict[str, list[Path]] = {}
    for name in ("chelsea", "rocket"):
        base = photo(name)
        families[name] = [pics / f"{name}.png"]
        base.save(families[name][0])
        for kind, image in _copies(base, photo("coffee")).items():
            p = pics / f"{name}_{kind}.jpg"
            image.save(p, quality=85)
            families[name].append(p)
    astronaut = photo("astronaut")  # 512 x 512: left and right halves, no pixel in common
    halves = [pics / "astronaut_left.png", pics / "astronaut_right.png"]
    astronaut.crop((0, 0, 256, 512)).save(halves[0])
    astronaut.crop((256, 0, 512, 512)).save(halves[1])
    for name in ("camera", "immunohistochemistry"):
        photo(name).save(pics / f"{name}.png")
    col = open_collection(root / "col", create=True, embedder=default_embedder)
    col.add([pics], progress=False)
    return col, families, halves


def _group_of(found, path: Path):
    uri = str(path)
    return next((g for g in found.groups if uri in g.uris), None)


def test_copies_are_grouped_and_look_alikes_are_not(copies_col):
    col, families, halves = copies_col
    found = col.duplicates()
    assert found.skipped == []
    for name, paths in families.items():
        group = _group_of(found, paths[0])
        assert group is not None, f"{name} not found"
        assert sorted(group.uris) == sorted(str(p) for p in paths), name
        assert len(group.ids) == len(group.uris)
    # alike (same photograph, same style) but no copies: never grouped, with each other or any
    assert all(_group_of(found, h) is None for h in halves)
    assert len(found.groups) == 2
    pairs = found.pairs
    assert {"id_a", "id_b", "similarity", "inliers", "mirrored", "verified", "score"} <= set(pairs)
    by_path = {str(p): i for i, p in col.paths(col.ok_ids()).items()}
    mirror = (by_path[str(families["chelsea"][0])], by_path[str(families["chelsea"][-1])])
    row = pairs[(pairs["id_a"] == min(mirror)) & (pairs["id_b"] == max(mirror))].iloc[0]
    assert row["verified"] and row["mirrored"] and row["inliers"] >= 15
    assert pairs["score"].is_monotonic_decreasing


def test_restricting_ids_and_global_only(copies_col):
    col, families, _ = copies_col
    by_path = {str(p): i for i, p in col.paths(col.ok_ids()).items()}
    rocket = [by_path[str(p)] for p in families["rocket"]]
    found = col.duplicates(ids=rocket[:4])
    assert [g.ids for g in found.groups] == [sorted(rocket[:4])]
    # the global vectors alone: no local matching done, cosine as the score
    alone = col.duplicates(verify=False, threshold=0.95)
    assert (alone.pairs["inliers"] == -1).all()
    assert (alone.pairs["similarity"] >= 0.95).all()
    assert all(len(g) >= 2 for g in alone.groups)


def test_unreadable_file_is_skipped_and_reported(copies_col, tmp_path):
    col, families, _ = copies_col
    bad = families["rocket"][1]  # the crop: a candidate of the rocket's group
    kept = bad.read_bytes()
    try:
        bad.write_bytes(kept[: len(kept) // 3])  # truncated after indexing
        found = col.duplicates()
    finally:
        bad.write_bytes(kept)
    assert [s["uri"] for s in found.skipped] == [str(bad)]
    assert found.skipped[0]["reason"]
    group = _group_of(found, families["rocket"][0])
    assert str(bad) not in group.uris and len(group) == len(families["rocket"]) - 1
    assert _group_of(found, families["chelsea"][0]) is not None


def test_cli_duplicates_json_and_listing(copies_col):
    col, families, _ = copies_col
    run = [sys.executable, "-m", "snoop_nb.cli", "duplicates", "--collection", str(col.root)]
    r = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    groups = json.loads(r.stdout)
    assert isinstance(groups, list) and len(groups) == 2
    for g in groups:
        assert set(g) == {"uris", "ids"} and len(g["uris"]) == len(g["ids"])
        assert all(isinstance(i, int) for i in g["ids"])
    assert sorted(map(sorted, (g["uris"] for g in groups))) == sorted(
        sorted(str(p) for p in paths) for paths in families.values()
    )
    r = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("group ") == 2 and str(families["chelsea"][-1]) in r.stdout
    bad = subprocess.run([*run, "--threshold", "3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "threshold" in bad.stderr


def test_connected_groups_union_find():
    assert connected_groups([(1, 2), (3, 4), (2, 5), (9, 9)]) == [[1, 2, 5], [3, 4], [9]]


# --- kept in the collection ------------------------------------------------------------------
def _kept_copy(copies_col, tmp_path):
    """A copy of the module's collection directory (items keep their absolute paths)."""
    import shutil

    col, families, halves = copies_col
    shutil.copytree(col.root, tmp_path / "col")
    return open_collection(tmp_path / "col"), families, halves


def _count_verified(monkeypatch) -> list[tuple[int, int]]:
    from snoop_nb.copies import LocalVerifier

    done: list[tuple[int, int]] = []
    real = LocalVerifier.verify

    def counting(self, a, b):
        done.append((int(a), int(b)))
        return real(self, a, b)

    monkeypatch.setattr(LocalVerifier, "verify", counting)
    return done


def test_kept_copies_are_read_and_updated_for_new_items_only(copies_col, tmp_path, monkeypatch):
    from snoop_nb.copies import COPIES_FILE

    col, families, _ = _kept_copy(copies_col, tmp_path)
    assert col.saved_duplicates() is None
    done = _count_verified(monkeypatch)
    first = col.update_duplicates()
    assert (col.root / COPIES_FILE).is_file() and done
    full = len(done)
    truth = sorted(sorted(str(p) for p in paths) for paths in families.values())
    assert sorted(sorted(g.uris) for g in first.groups) == truth
    done.clear()
    kept = col.saved_duplicates()  # a file read: nothing verified
    assert not done and kept.saved and kept.unchecked == []
    assert [g.ids for g in kept.groups] == [g.ids for g in first.groups]
    assert kept.pairs["verified"].all()
    # a new copy of the cat and an unrelated photograph
    cat = Image.open(families["chelsea"][0]).convert("RGB")
    new_copy = tmp_path / "chelsea_again.jpg"
    _jpeg(cat.crop((20, 10, cat.width - 30, cat.height - 5)), 50).save(new_copy)
    other = tmp_path / "coins.png"
    photo("coins").save(other)
    col.add([new_copy, other], progress=False)
    new_ids = set(col.ids_under([new_copy, other]).tolist())
    assert set(col.saved_duplicates().unchecked) == new_ids
    done.clear()
    updated = col.update_duplicates()
    assert done and len(done) < full
    assert all(a in new_ids or b in new_ids for a, b in done)  # only the new items' pairs
    cats = next(g for g in updated.groups if str(families["chelsea"][0]) in g.uris)
    assert str(new_copy) in cats.uris and len(cats) == len(families["chelsea"]) + 1
    assert col.saved_duplicates().unchecked == []
    # a removed item leaves its group, without anything verified again
    gone = col.ids_under([families["rocket"][1]])
    col.remove(gone)
    done.clear()
    after = col.saved_duplicates()
    rockets = next(g for g in after.groups if str(families["rocket"][0]) in g.uris)
    assert int(gone[0]) not in rockets.ids and len(rockets) == len(families["rocket"]) - 1
    assert not done


def test_kept_copies_survive_a_bad_file_and_busy_finders(copies_col, tmp_path, caplog):
    from snoop_nb.copies import _COPIES_LOCK, COPIES_FILE, CopiesBusyError
    from snoop_nb.store.lock import file_lock

    col, _, _ = _kept_copy(copies_col, tmp_path)
    col.update_duplicates()
    path = col.root / COPIES_FILE
    path.write_text(path.read_text()[:100])  # cut short (by hand, or a full disk elsewhere)
    with caplog.at_level("WARNING"):
        assert col.saved_duplicates() is None
    assert "unreadable" in caplog.text
    assert len(col.update_duplicates().groups) == 2  # found again, kept again
    assert col.saved_duplicates() is not None
    # another process finding the copies: a clear error after waiting, the kept ones intact
    busy = RuntimeError("test holds the lock")
    with file_lock(col.root / _COPIES_LOCK, busy=lambda: busy):
        with pytest.raises(CopiesBusyError, match="another process"):
            col.update_duplicates(wait=0.3)
        assert len(col.saved_duplicates().groups) == 2
    # other options than the kept ones: everything verified again under them
    again = col.update_duplicates(min_inliers=40)
    assert again.params["min_inliers"] == 40
    assert col.saved_duplicates().params["min_inliers"] == 40


def test_collapsing_reads_kept_copies_and_verifies_only_new_items(
    copies_col, tmp_path, monkeypatch
):
    from snoop_nb.copies import collapse, copies_among

    col, families, _ = _kept_copy(copies_col, tmp_path)
    col.update_duplicates()
    done = _count_verified(monkeypatch)
    by_path = {str(p): i for i, p in col.paths(col.ok_ids()).items()}
    chelsea = [by_path[str(p)] for p in families["chelsea"]]
    res = col.search(item=chelsea[0], k=20)
    folded = collapse(res, copies_among(col, res["id"]))
    assert not done  # kept: nothing verified at search time
    row = folded[folded["id"].isin(chelsea)].iloc[0]
    assert row["copies"] == len(chelsea) - 2
    # a group linked through an item outside the page stays one group
    page = [chelsea[1], chelsea[-1]]
    among = copies_among(col, page)
    assert [g.ids for g in among.groups] == [sorted(page)] and not done
    # an item added since: verified now, against the page only
    cat = Image.open(families["chelsea"][0]).convert("RGB")
    new_copy = tmp_path / "chelsea_small.jpg"
    _jpeg(cat.resize((cat.width // 3, cat.height // 3)), 60).save(new_copy)
    col.add([new_copy], progress=False)
    new_id = int(col.ids_under([new_copy])[0])
    among = copies_among(col, [*page, new_id])
    assert done and all(new_id in pair for pair in done)
    assert [g.ids for g in among.groups] == [sorted([*page, new_id])]


def test_cli_keeps_copies_and_prints_them(copies_col, tmp_path):
    col, _, _ = _kept_copy(copies_col, tmp_path)
    run = [sys.executable, "-m", "snoop_nb.cli", "duplicates", "--collection", str(col.root)]
    r = subprocess.run([*run, "--saved"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--save" in r.stderr
    r = subprocess.run([*run, "--save", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    saved = json.loads(r.stdout)
    r = subprocess.run([*run, "--saved", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == saved and len(saved) == 2
    r = subprocess.run([*run, "--saved", "--rebuild"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not allowed" in r.stderr


# --- video -----------------------------------------------------------------------------------
FPS = 25
SHOT = 1.5  # seconds each photograph is held


def _write(path: Path, shots: list[str], size: tuple[int, int]) -> Path:
    """A real H.264 video: each photograph held SHOT seconds, panning slowly, hard cuts."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for name in shots:
            base = photo(name).resize((size[0] + 24, size[1] + 24))
            for i in range(int(SHOT * FPS)):
                x = i // 3
                frame = base.crop((x, 6, x + size[0], 6 + size[1]))
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_rebroadcast_segment_found_with_offset_and_duration(tmp_path, default_embedder):
    shared = ["coffee", "rocket", "astronaut"]  # 4.5 s shown in both
    folder = tmp_path / "videos"
    folder.mkdir()
    a = _write(folder / "evening.mp4", ["chelsea", *shared, "camera"], (320, 240))
    # the rebroadcast: later in its programme, at another size (scaled by the broadcaster)
    b = _write(folder / "night.mp4", ["moon", "immunohistochemistry", *shared], (400, 300))
    col = open_collection(tmp_path / "col", create=True, embedder=default_embedder)
    col.add([folder], detector="adaptive", progress=False)
    segments = col.repeated_segments()
    assert len(segments) == 1, segments
    s = segments.iloc[0]
    assert {s["video_a"], s["video_b"]} == {str(a), str(b)}
    ta, tb = (s["t_a"], s["t_b"]) if s["video_a"] == str(a) else (s["t_b"], s["t_a"])
    assert ta == pytest.approx(1 * SHOT, abs=0.2)
    assert tb == pytest.approx(2 * SHOT, abs=0.2)
    assert s["duration"] == pytest.approx(len(shared) * SHOT, abs=0.3)
    assert s["keyframes"] == len(shared)
    # the same in the CLI's listing
    r = subprocess.run(
        [sys.executable, "-m", "snoop_nb.cli", "duplicates", "--collection", str(col.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "repeated" in r.stdout and "evening.mp4" in r.stdout and "night.mp4" in r.stdout
    assert np.isclose(abs(s["offset"]), SHOT, atol=0.2)


# --- UI --------------------------------------------------------------------------------------
def test_search_panel_collapses_copies_and_the_grid_shows_the_badge(copies_col):
    from snoop_nb.ui import App

    col, families, _ = copies_col
    by_path = {str(p): i for i, p in col.paths(col.ok_ids()).items()}
    chelsea = [by_path[str(p)] for p in families["chelsea"]]
    rocket = [by_path[str(p)] for p in families["rocket"]]
    app = App(col, user="dup-ui", warm_up=False)
    app.search.search_item(chelsea[0])  # its six copies come back, the query item does not
    plain = app.grid.frame
    assert set(chelsea[1:]) <= set(plain["id"]) and "copies" not in plain
    app.search.collapse.v_model = True
    app.search.search_item(chelsea[0])
    folded = app.grid.frame
    assert len(folded) == len(plain) - (len(chelsea) - 2) - (len(rocket) - 1)
    row = folded[folded["id"].isin(chelsea)].iloc[0]
    assert row["copies"] == len(chelsea) - 2
    assert sorted([row["id"], *row["copy_ids"]]) == sorted(chelsea[1:])
    assert row["id"] == plain[plain["id"].isin(chelsea)]["id"].iloc[0]  # the best one stays
    assert folded["rank"].tolist() == list(range(1, len(folded) + 1))
    tile = next(t for t in app.grid.tiles if t["id"] in chelsea)
    assert tile["copies"] == len(chelsea) - 2
    assert not any(line.startswith("cop") for line in tile["meta"])
    others = [t for t in app.grid.tiles if t["id"] not in chelsea + rocket]
    assert others and all("copies" not in t for t in others)


def test_copies_tab_lists_the_groups_with_thumbnails(copies_col, tmp_path):
    from snoop_nb.ui import App

    col, families, _ = _kept_copy(copies_col, tmp_path)  # the tab keeps what it finds
    app = App(col, user="dup-tab", warm_up=False)
    assert "copies" in [tab.value for tab in app.tabs.children]
    assert app.copies.status.children == ["copies not looked for yet"]
    found = app.copies.find()
    assert len(found.groups) == 2
    boxes = [b for b in app.copies.groups_box.children if "snoop-copies-group" in b._dom_classes]
    assert len(boxes) == 2
    thumbs = [
        img
        for b in boxes
        for tile in b.children[1].children
        for img in tile.children
        if hasattr(img, "format")
    ]
    assert len(thumbs) == sum(len(p) for p in families.values())
    assert all(img.value[:2] == b"\xff\xd8" for img in thumbs)  # JPEG bytes, not paths
    assert "2 groups of copies" in app.copies.status.children[0]
    # the next visitor's tab opens on the kept groups, verifying nothing
    later = App(col, user="dup-tab-2", warm_up=False)
    assert [g.ids for g in later.copies.found.groups] == [g.ids for g in found.groups]
    status = later.copies.status.children[0]
    assert status.startswith("2 groups of copies") and "(found 20" in status
    assert later.copies.button.children == ["Find copies again"]


def test_copies_tab_finds_in_the_background_and_waits_for_another_finder(copies_col, tmp_path):
    """The tab's button verifies in a thread (the page stays live, the status counts the
    pairs); while another process holds the copies' lock it says so, waits, then shows."""
    import threading
    import time

    from snoop_nb.copies import _COPIES_LOCK
    from snoop_nb.store.lock import file_lock
    from snoop_nb.ui import App

    col, _, _ = _kept_copy(copies_col, tmp_path)
    app = App(col, user="dup-bg", warm_up=False)
    seen: list[str] = []
    app.copies.status.observe(lambda c: seen.append(str(c["new"])), names="children")
    release = threading.Event()
    held = threading.Event()

    def other_finder():
        with file_lock(col.root / _COPIES_LOCK, busy=lambda: RuntimeError("held")):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=other_finder)
    holder.start()
    held.wait(10)
    thread = app.copies.find_in_background()
    assert thread is not None and app.copies.find_in_background() is None  # one at a time
    deadline = time.monotonic() + 30
    while not any("another visitor" in s for s in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("another visitor is finding copies" in s for s in seen), seen
    assert thread.is_alive()  # waiting in its thread, not in the kernel's
    release.set()
    holder.join(10)
    thread.join(120)
    assert not thread.is_alive()
    assert len(app.copies.found.groups) == 2
    assert any("pairs verified" in s for s in seen), seen
    assert app.copies.status.children[0].startswith("2 groups of copies")
    assert col.saved_duplicates() is not None


def test_root_sift_is_hellinger_on_l2_normalised_rows():
    from snoop_nb.copies import root_sift

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 200, (2, 128)).astype(np.float32)
    rx, ry = root_sift(np.stack([x, y]))
    assert np.linalg.norm(rx) == pytest.approx(1.0, abs=1e-5)
    hellinger = np.sum(np.sqrt((x / x.sum()) * (y / y.sum())))
    assert np.sum((rx - ry) ** 2) == pytest.approx(2 - 2 * hellinger, abs=1e-5)
    assert np.isfinite(root_sift(np.zeros((1, 128), np.float32))).all()  # a blank descriptor
