"""The embedding kernel's pipeline: decoding workers feed batches to the model.

Decoding and preprocessing run in a pool of threads (PIL releases the GIL while it decodes and
resizes), a bounded window ahead of the model, so the model never waits for the disk and memory
stays flat however long the list is. Results come back in input order, one :class:`Batch` at a
time, with bad pictures reported instead of raised.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import MediaError
from snoop_nb.media.decode import DEFAULT_MAX_PIXELS, load_image

if TYPE_CHECKING:
    from snoop_nb.embed.base import Embedder


@dataclass
class Decoded:
    """One picture ready for the model, and what we learnt about its file."""

    array: np.ndarray
    width: int
    height: int
    digest: str | None = None
    size: int | None = None


@dataclass
class Batch:
    """Results for a run of consecutive inputs.

    ``indices`` are positions in the input list of the pictures that were embedded, in order,
    with ``vectors`` (float16, normalised) and ``infos`` row for row; ``errors`` lists
    ``(index, MediaError)`` for the pictures that could not be decoded.
    """

    indices: list[int] = field(default_factory=list)
    vectors: np.ndarray | None = None
    infos: list[Decoded] = field(default_factory=list)
    errors: list[tuple[int, MediaError]] = field(default_factory=list)


def default_workers() -> int:
    """Decoding threads: one per core beyond the first, at least one, at most eight."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def decode_for(embedder: Embedder, source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Read, decode and preprocess one source; file sources also get size and digest."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            reason = "broken symlink" if path.is_symlink() else "file not found"
            raise MediaError(reason, path) from None
        except IsADirectoryError:
            raise MediaError("is a directory", path) from None
        except OSError as e:
            raise MediaError(f"cannot read file: {e.strerror or e}", path) from None
        image = load_image(io.BytesIO(data), max_pixels=max_pixels, name=path)
        digest = hashlib.blake2b(data, digest_size=8).hexdigest()
        size = len(data)
    else:
        image = load_image(source, max_pixels=max_pixels)
        digest = size = None
    width, height = image.info.get("original_size", image.size)
    return Decoded(embedder.preprocess(image), width, height, digest, size)


def embed_stream(
    embedder: Embedder,
    sources: Sequence[Any],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    desc: str = "embedding",
) -> Iterator[Batch]:
    """Embed ``sources`` batch by batch, decoding ahead in a thread pool.

    ``progress=None`` shows a tqdm bar only for runs of more than one batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    n = len(sources)
    workers = workers or default_workers()
    show = progress if progress is not None else n > batch_size
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", smoothing=0.1)
    window = max(2 * batch_size, 4 * workers)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="snoop-decode") as pool:
            pending: deque[tuple[int, Future[Decoded]]] = deque()
            next_i = 0

            def fill() -> None:
                nonlocal next_i
                while next_i < n and len(pending) < window:
                    pending.append(
                        (next_i, pool.submit(decode_for, embedder, sources[next_i], max_pixels))
                    )
                    next_i += 1

            fill()
            while pending:
                batch = Batch()
                arrays: list[np.ndarray] = []
                consumed = 0
                while pending and len(arrays) < batch_size:
                    i, fut = pending.popleft()
                    consumed += 1
                    try:
                        dec = fut.result()
                    except MediaError as e:
                        batch.errors.append((i, e))
                    except Exception as e:  # a decoder bug must not stop a long run
                        batch.errors.append((i, MediaError(f"cannot decode: {e}", sources[i])))
                    else:
                        batch.indices.append(i)
                        batch.infos.append(dec)
                        arrays.append(dec.array)
                        dec.array = None  # type: ignore[assignment]  # free it early
                    fill()
                if arrays:
                    batch.vectors = embedder.encode_preprocessed(np.stack(arrays))
                else:
                    batch.vectors = np.zeros((0, embedder.dim), dtype=np.float16)
                if bar is not None:
                    bar.update(consumed)
                yield batch
    finally:
        if bar is not None:
            bar.close()
