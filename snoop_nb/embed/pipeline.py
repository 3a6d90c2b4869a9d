"""The embedding kernel's pipeline: decoding workers feed batches to the model.

Decoding and preprocessing run in a pool of threads (PIL releases the GIL while it decodes and
resizes), a bounded window ahead of the model, so the model never waits for the disk and memory
stays flat however long the list is. Results come back in input order, one :class:`Batch` at a
time, with bad pictures (a :class:`MediaError`) reported instead of raised; any other exception
in a worker is a bug or a broken environment, and fails the run.

Pictures are decoded shrunk to what the model needs (:func:`decode_size`: twice the side its
preprocess resizes to), so a 170-megapixel scan costs ~100 MB and a second, not gigabytes: see
:mod:`snoop_nb.media.large`. Pictures smaller than that are decoded whole, exactly as before.
"""

from __future__ import annotations

import hashlib
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


# The decoded picture's short side is at least this many times the side the model's preprocess
# resizes to, so that its own (antialiased) resize does the last step, as it would from the
# whole picture; and this side is assumed for a model whose preprocess says nothing.
_MARGIN = 2
_UNKNOWN_SIDE = 512
_READ_CHUNK = 1 << 20


def decode_size(embedder: Embedder) -> tuple[int, int]:
    """The ``min_size`` at which pictures are decoded for ``embedder``.

    Twice the side its preprocess resizes the short side to: the default model's
    ``resize_size`` (256, from timm's data config), or an open_clip transform's ``Resize``
    (224 for ViT-B-32); 2 x 512 for a model that tells neither.
    """
    side = 0
    for attr in ("resize_size", "input_size"):
        value = getattr(embedder, attr, None)
        if isinstance(value, int) and value > 0:
            side = max(side, value)
    transforms = getattr(getattr(embedder, "_preprocess", None), "transforms", ())
    for transform in transforms:  # torchvision: Resize(224), CenterCrop((224, 224)), ...
        size = getattr(transform, "size", None)
        values = [size] if isinstance(size, int) else list(size or ())
        side = max([side, *(v for v in values if isinstance(v, int))])
    side = _MARGIN * (side or _UNKNOWN_SIDE)
    return (side, side)


def decode_for(
    embedder: Embedder,
    source: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
) -> Decoded:
    """Read, decode and preprocess one source; file sources also get size and digest.

    ``min_size`` (default :func:`decode_size`) lets a large file be shrunk while decoded. A file
    is hashed in chunks and decoded from the same open file, never read whole into memory.
    """
    if min_size is None:
        min_size = decode_size(embedder)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            fp = open(path, "rb")  # noqa: SIM115 -- closed below, after decoding
        except FileNotFoundError:
            reason = "broken symlink" if path.is_symlink() else "file not found"
            raise MediaError(reason, path) from None
        except IsADirectoryError:
            raise MediaError("is a directory", path) from None
        except OSError as e:
            raise MediaError(f"cannot read file: {e.strerror or e}", path) from None
        with fp:
            hasher = hashlib.blake2b(digest_size=8)
            size = 0
            try:
                while chunk := fp.read(_READ_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                fp.seek(0)
            except OSError as e:
                raise MediaError(f"cannot read file: {e.strerror or e}", path) from None
            image = load_image(fp, max_pixels=max_pixels, name=path, min_size=min_size)
        digest: str | None = hasher.hexdigest()
    else:
        image = load_image(source, max_pixels=max_pixels, min_size=min_size)
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

    A picture that cannot be decoded (a :class:`MediaError`, including one of more than
    ``max_pixels`` pixels) is reported in its batch's ``errors``; any other exception raised
    while decoding or preprocessing is re-raised here and ends the run.
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
    min_size = decode_size(embedder)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="snoop-decode") as pool:
            pending: deque[tuple[int, Future[Decoded]]] = deque()
            next_i = 0

            def fill() -> None:
                nonlocal next_i
                while next_i < n and len(pending) < window:
                    fut = pool.submit(decode_for, embedder, sources[next_i], max_pixels, min_size)
                    pending.append((next_i, fut))
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
                    except MediaError as e:  # the file's fault: record it and go on
                        batch.errors.append((i, e))
                    except BaseException:  # our bug or a broken environment: stop the run
                        for _, later in pending:
                            later.cancel()
                        raise
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
