"""The writer lock: one process (or thread) changes a collection at a time.

An advisory ``flock`` on ``.writer.lock`` in the collection directory (:func:`file_lock` is the
same lock on another file, for work that only one process should do at a time, such as
building the visual map or finding copies). The kernel drops it when
its holder exits, however it exits, so a killed run never leaves a collection locked. Readers
take no lock: SQLite's WAL and append-only vectors let them read while a writer works.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from snoop_nb.errors import CollectionError, SnoopError

LOCK_NAME = ".writer.lock"


class BusyError(CollectionError):
    """Another process holds the collection's writer lock."""


@contextlib.contextmanager
def writer_lock(root: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold ``root``'s writer lock for the ``with`` block.

    ``wait=0`` fails at once with :class:`BusyError` (a clear error beats a corrupt file);
    ``wait>0`` polls for up to that many seconds first.
    """
    busy = f"{root} is being modified by another process; wait for it to finish"
    with file_lock(Path(root) / LOCK_NAME, wait=wait, busy=lambda: BusyError(busy), poll=0.05):
        yield


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    wait: float = 0.0,
    busy: Callable[[], SnoopError],
    poll: float = 0.2,
) -> Iterator[None]:
    """Hold an advisory ``flock`` on ``path`` (made if missing) for the ``with`` block, polling
    every ``poll`` seconds for up to ``wait``; then ``busy()`` is raised. Threads of one
    process exclude each other too (each opens its own file description)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise busy() from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
