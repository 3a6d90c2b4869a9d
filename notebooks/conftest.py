"""Run the notebooks (``pytest --nbval-lax notebooks``) on a throwaway copy of the demo collection.

The notebooks open ``$SNOOP_COLLECTION`` when it is set. Here it is set, before any kernel
starts, to a fresh copy of ``data/demo/collection``, so the users, labels and classes the
notebooks make never reach the real demo collection.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo" / "collection"
# the demo video collection (made-up videos: `make demo-collection` builds it)
DEMO_VIDEOS = Path(__file__).resolve().parent.parent / "data" / "demo" / "videos" / "collection"

_tmp_key = pytest.StashKey[Path]()
_env_key = pytest.StashKey["str | None"]()


def pytest_configure(config: pytest.Config) -> None:
    if not (DEMO / "manifest.json").is_file():
        raise pytest.UsageError(
            f"the notebooks run on the demo collection, and there is none at {DEMO}: "
            "run `make demo` first"
        )
    tmp = Path(tempfile.mkdtemp(prefix="snoop-notebooks-"))
    copy = tmp / "collection"
    copy.mkdir()
    # Plain file copies: nothing is opened, locked or written in the demo collection. The
    # catalog (with its write-ahead log) goes first: it is the truth, and vector rows or
    # index entries it does not vouch for are ignored or repaired when the copy is opened.
    files = [
        p
        for p in DEMO.iterdir()
        if p.is_file() and p.name != ".writer.lock" and not p.name.endswith("-shm")
    ]
    for path in sorted(files, key=lambda p: not p.name.startswith("catalog.sqlite")):
        shutil.copy2(path, copy / path.name)
    if (DEMO_VIDEOS / "manifest.json").is_file():
        shutil.copytree(
            DEMO_VIDEOS,
            tmp / "videos",
            ignore=shutil.ignore_patterns(".writer.lock", "*-shm"),
        )
        os.environ["SNOOP_VIDEO_COLLECTION"] = str(tmp / "videos")
    config.stash[_tmp_key] = tmp
    config.stash[_env_key] = os.environ.get("SNOOP_COLLECTION")
    os.environ["SNOOP_COLLECTION"] = str(copy)


def pytest_unconfigure(config: pytest.Config) -> None:
    tmp = config.stash.get(_tmp_key, None)
    if tmp is None:
        return
    shutil.rmtree(tmp, ignore_errors=True)
    os.environ.pop("SNOOP_VIDEO_COLLECTION", None)
    previous = config.stash[_env_key]
    if previous is None:
        os.environ.pop("SNOOP_COLLECTION", None)
    else:
        os.environ["SNOOP_COLLECTION"] = previous
