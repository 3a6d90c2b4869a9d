"""The embedding kernel's pipeline: decoding workers feed batches to the model.

Decoding and preprocessing run in a pool of threads (PIL releases the GIL while it decodes and
resizes), a bounded window ahead of the model, so the model never waits for the disk and memory
stays flat however long the list is. Results come back in input order, one :class:`Batch` at a
time, with bad pictures (a :class:`MediaError`) reported instead of raised; any other exception
in a worker is a bug or a broken environment, and fails the run.

Pictures are decoded shrunk to what the model needs (:func:`decode_size`: twice the side its
preprocess resizes to), so a 170-megapixel scan costs ~100 MB and a second, not gigabytes: see
:mod:`snoop_nb.media.large`. Pictures smaller than that are decoded whole, exactly as before.

An embedder that takes tensors (:meth:`~snoop_nb.embed.base.Embedder.encode_tensor`: open_clip's)
gets its batches put together in two reused host buffers, pinned on CUDA and sent with
non-blocking copies; each batch is started on the device before the previous one's vectors are
collected, so the next batch is gathered while the device computes. :class:`PipelineStats` says
how long the device sat waiting. On a CUDA GPU with a hardware JPEG decoder, JPEGs are read and
hashed by the workers, then decoded on the GPU a batch at a time
(:func:`torchvision.io.decode_jpeg`) and preprocessed there; :func:`device_jpeg_header` says which
(baseline, YCbCr or grey, complete, not large), and a JPEG the GPU refuses is decoded on the CPU.
On the CPU nothing changes: pictures decode through PIL and give the same vectors as before.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import MediaError, UsageError
from snoop_nb.media import large
from snoop_nb.media.decode import DEFAULT_MAX_PIXELS, load_image

if TYPE_CHECKING:
    import torch

    from snoop_nb.embed.base import Embedder

#: Where JPEGs are decoded: ``auto`` (on the device when :func:`device_decodes_jpeg` says it
#: pays), ``device`` (always, for the JPEGs it can take: also torchvision's CPU decoder, which
#: the tests use), ``cpu`` (never: PIL, as for every other format).
JPEG_DECODE = ("auto", "device", "cpu")
#: CUDA compute capabilities of the GPUs whose nvJPEG decodes baseline JPEGs in hardware, in
#: batches: A100 and A30 (8.0), H100 and H200 (9.0), B100 and B200 (10.0). Elsewhere nvJPEG
#: decodes one picture at a time behind torchvision's lock, with its Huffman pass on one host
#: thread: slower than the decoding threads, so ``auto`` leaves JPEGs to them.
HARDWARE_JPEG_CAPABILITIES = frozenset({(8, 0), (9, 0), (10, 0)})
#: JPEG files larger than this are decoded on the CPU (never read whole for the device).
DEVICE_JPEG_MAX_BYTES = 64 << 20

_SOI, _EOI = b"\xff\xd8\xff", b"\xff\xd9"
_SEQUENTIAL_SOF = (0xC0, 0xC1)  # baseline and extended sequential, Huffman-coded
_PROGRESSIVE_SOF = 0xC2


@dataclass
class Decoded:
    """One picture ready for the model, and what we learnt about its file.

    ``array`` is the preprocessed picture, or None for a JPEG left to the device's decoder:
    then ``encoded`` holds its bytes and ``orientation`` its EXIF orientation.
    """

    array: np.ndarray | None
    width: int
    height: int
    digest: str | None = None
    size: int | None = None
    encoded: bytearray | None = None
    orientation: int = 1


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


@dataclass
class PipelineStats:
    """What a run of :func:`embed_stream` did, filled in as it goes (pass one to it).

    ``device_seconds`` is the time the model's device spent on the batches (the copy there, the
    forward pass and the copy back: CUDA events on a GPU, the model's wall time on the CPU);
    ``device_wait_seconds`` the rest of the run, when the device had no batch. Of that wait,
    ``input_wait_seconds`` was spent waiting for the decoding threads and
    ``device_decode_seconds`` decoding JPEGs on the device (``device_decoded`` of them;
    ``device_fallbacks`` more were refused by its decoder and decoded on the CPU).
    """

    device: str = "cpu"
    jpeg_decode: str = "cpu"
    images: int = 0
    errors: int = 0
    batches: int = 0
    seconds: float = 0.0
    device_seconds: float = 0.0
    input_wait_seconds: float = 0.0
    device_decode_seconds: float = 0.0
    device_decoded: int = 0
    device_fallbacks: int = 0

    @property
    def device_wait_seconds(self) -> float:
        return max(0.0, self.seconds - self.device_seconds)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["device_wait_seconds"] = self.device_wait_seconds
        out["images_per_second"] = self.images_per_second
        return out


def default_workers(device: str = "cpu") -> int:
    """Decoding threads: one per core beyond the first, at least one, at most eight on the CPU
    (where the model needs cores too) and 32 when the model runs on a GPU."""
    cores = (os.cpu_count() or 1) - 1
    return max(1, min(32 if device.startswith("cuda") else 8, cores))


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


def _open_file(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")  # the callers close it
    except FileNotFoundError:
        reason = "broken symlink" if path.is_symlink() else "file not found"
        raise MediaError(reason, path) from None
    except IsADirectoryError:
        raise MediaError("is a directory", path) from None
    except OSError as e:
        raise MediaError(f"cannot read file: {e.strerror or e}", path) from None


def _digest(data: bytes | bytearray) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


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
        with _open_file(path) as fp:
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


# --- JPEGs for the device's decoder ---------------------------------------------------------
def _jpeg_frame(data: bytes | bytearray) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, precision, width, height, components) from a JPEG's frame header."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > n or length < 8:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return marker, data[i + 4], width, height, data[i + 9]
        if marker in (0xDA, 0xD9) or length < 2:  # scan data (or the end) before a frame
            return None
        i += 2 + length
    return None


def device_jpeg_header(
    data: bytes | bytearray, max_pixels: int = DEFAULT_MAX_PIXELS, *, progressive: bool = False
) -> tuple[int, int, int] | None:
    """``(width, height, orientation)`` (upright size) of a JPEG the device decodes, or None.

    Taken: 8-bit sequential JPEGs (progressive ones too with ``progressive``) of 1 or 3
    components that PIL reads as grey or RGB (no Adobe marker: CMYK and YCCK go to the CPU),
    that end with their end-of-image marker (a truncated file gets the CPU's error) and have
    at most ``max_pixels`` and :data:`~snoop_nb.media.large.LARGE_PIXELS` pixels (larger ones
    keep the CPU's shrink-on-load, and its limits and errors).
    """
    if not data.startswith(_SOI) or not data.endswith(_EOI):
        return None
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    marker, precision, width, height, components = frame
    allowed = _SEQUENTIAL_SOF + ((_PROGRESSIVE_SOF,) if progressive else ())
    if marker not in allowed or precision != 8 or components not in (1, 3):
        return None
    pixels = width * height
    if pixels == 0 or pixels > max_pixels or large.is_large((width, height)):
        return None
    from PIL import ExifTags, Image

    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L") or "adobe" in image.info:
                return None
            orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # anything PIL cannot read here is the CPU path's to report
        return None
    if orientation not in range(1, 9):
        orientation = 1  # as PIL's exif_transpose: an unknown value leaves the picture as stored
    if orientation >= 5:
        width, height = height, width
    return width, height, orientation


def read_for_device(
    embedder: Embedder,
    source: Any,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    *,
    progressive: bool = False,
) -> Decoded:
    """A JPEG read whole and hashed for the device's decoder (``array`` None), when
    :func:`device_jpeg_header` takes it; any other source as :func:`decode_for` gives it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytearray(source)
        header = device_jpeg_header(data, max_pixels, progressive=progressive)
        if header is None:
            return decode_for(embedder, source, max_pixels, min_size)
        return Decoded(None, header[0], header[1], encoded=data, orientation=header[2])
    if not isinstance(source, (str, Path)):
        return decode_for(embedder, source, max_pixels, min_size)
    path = Path(source)
    with _open_file(path) as fp:
        try:
            jpeg = fp.read(3) == _SOI and os.fstat(fp.fileno()).st_size <= DEVICE_JPEG_MAX_BYTES
            if jpeg:
                fp.seek(0)
                data = bytearray(fp.read())
        except OSError as e:
            raise MediaError(f"cannot read file: {e.strerror or e}", path) from None
    if not jpeg:
        return decode_for(embedder, path, max_pixels, min_size)
    digest = _digest(data)
    header = device_jpeg_header(data, max_pixels, progressive=progressive)
    if header is None:  # decoded here from the bytes read: the same pixels as from the file
        if min_size is None:
            min_size = decode_size(embedder)
        image = load_image(io.BytesIO(data), max_pixels=max_pixels, name=path, min_size=min_size)
        width, height = image.info.get("original_size", image.size)
        return Decoded(embedder.preprocess(image), width, height, digest, len(data))
    return Decoded(None, header[0], header[1], digest, len(data), data, header[2])


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A CHW tensor turned as PIL's ``exif_transpose`` turns a picture of this orientation."""
    import torch

    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(1, 2))
    return image


def device_decodes_jpeg(jpeg_decode: str, device: str, embedder: Embedder) -> str | None:
    """Which JPEGs go to the device's decoder: ``"baseline"``, ``"any"`` or None (none).

    ``auto``: baseline ones when ``device`` is a CUDA GPU with a hardware JPEG decoder
    (:data:`HARDWARE_JPEG_CAPABILITIES`) and the embedder can preprocess tensors; ``device``:
    baseline and progressive ones, on any device; ``cpu``: none.
    """
    if jpeg_decode not in JPEG_DECODE:
        raise UsageError(f"unknown jpeg_decode {jpeg_decode!r}: use {', '.join(JPEG_DECODE)}")
    if jpeg_decode == "cpu":
        return None
    if embedder.tensor_device is None or embedder.tensor_preprocess() is None:
        if jpeg_decode == "device":
            raise UsageError(
                f"{embedder.name} cannot preprocess pictures on a device: use jpeg_decode='cpu'"
            )
        return None
    if jpeg_decode == "device":
        return "any"
    if not device.startswith("cuda"):
        return None
    import torch

    capability = tuple(torch.cuda.get_device_capability(torch.device(device)))
    return "baseline" if capability in HARDWARE_JPEG_CAPABILITIES else None


class _DeviceJpegs:
    """Decodes a batch's JPEGs on the device in one call, turns them upright, preprocesses them."""

    def __init__(self, device: str, preprocess: Callable[[torch.Tensor], torch.Tensor]):
        self.device = device
        self.preprocess = preprocess

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():  # deprecated in favour of TorchCodec, not yet gone
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)

    def __call__(self, items: list[Decoded]) -> list[torch.Tensor | None]:
        """Each JPEG as the model's input on the device, or None where the decoder refused it."""
        import torch

        data = [torch.frombuffer(d.encoded, dtype=torch.uint8) for d in items]  # type: ignore[arg-type]
        try:
            images: list[torch.Tensor | None] = list(self._decode(data))
        except (RuntimeError, ValueError):  # one bad file fails the whole call: one at a time
            images = []
            for one in data:
                try:
                    images.append(self._decode([one])[0])
                except (RuntimeError, ValueError):
                    images.append(None)
        return [
            None if image is None else self.preprocess(upright(image, d.orientation))
            for d, image in zip(items, images, strict=True)
        ]


# --- running batches ------------------------------------------------------------------------
class _HostRunner:
    """Numpy batches through ``encode_preprocessed``, one at a time (as the pipeline always did)."""

    overlaps = False

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def launch(self, rows: list[Any]) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        vectors = self.embedder.encode_preprocessed(np.stack(rows))
        return vectors, time.perf_counter() - start

    def finish(self, launched: tuple[np.ndarray, float]) -> tuple[np.ndarray, float]:
        return launched


@dataclass
class _Launched:
    out: Any
    start: Any = None
    end: Any = None
    busy: float = 0.0


class _TensorRunner:
    """Batches through ``encode_tensor`` on ``device``, started before the last is collected.

    Pictures decoded on the CPU are stacked into one of two reused host buffers (pinned on
    CUDA, so the copy to the device is asynchronous) and pictures decoded on the device are
    stacked there; the features come back into a reused (pinned) host buffer. A buffer is used
    again two batches later, after its batch's end event: nothing is overwritten in flight.
    """

    overlaps = True

    def __init__(self, embedder: Embedder, device: str, pin: bool):
        import torch

        self.torch = torch
        self.embedder = embedder
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.pin = pin
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._turn = 0

    def _host(self, kind: str, slot: int, shape: tuple[int, ...]) -> torch.Tensor:
        buf = self._buffers.get((kind, slot))
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = self.torch.empty(shape, dtype=self.torch.float32, pin_memory=self.pin)
            self._buffers[(kind, slot)] = buf
        return buf[: shape[0]]

    def launch(self, rows: list[Any]) -> _Launched:
        torch = self.torch
        slot, self._turn = self._turn, 1 - self._turn
        t0 = time.perf_counter()
        start = end = None
        if self.cuda:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
        host = [j for j, r in enumerate(rows) if isinstance(r, np.ndarray)]
        on_host = None
        if host:
            staged = self._host("in", slot, (len(host), *rows[host[0]].shape))
            np.stack([rows[j] for j in host], out=staged.numpy())
            on_host = staged.to(self.device, non_blocking=self.pin)
        if len(host) == len(rows):
            x = on_host
        else:
            others = [j for j in range(len(rows)) if j not in set(host)]
            on_device = torch.stack([rows[j].to(self.device) for j in others])
            if on_host is None:
                x = on_device
            else:
                x = torch.empty((len(rows), *on_device.shape[1:]), device=self.device)
                x[torch.tensor(host, device=self.device)] = on_host
                x[torch.tensor(others, device=self.device)] = on_device
        features = self.embedder.encode_tensor(x).float()
        out = self._host("out", slot, tuple(features.shape))
        out.copy_(features, non_blocking=self.pin)
        if end is not None:
            end.record()
        return _Launched(out, start, end, time.perf_counter() - t0)

    def finish(self, launched: _Launched) -> tuple[np.ndarray, float]:
        from snoop_nb.embed.base import l2_normalise

        busy = launched.busy
        if launched.end is not None:
            launched.end.synchronize()
            busy = launched.start.elapsed_time(launched.end) / 1000.0
        return l2_normalise(launched.out.numpy()), busy


def embed_stream(
    embedder: Embedder,
    sources: Sequence[Any],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    desc: str = "embedding",
    device: str | None = None,
    jpeg_decode: str = "auto",
    prefetch: int = 2,
    pin_memory: bool | None = None,
    stats: PipelineStats | None = None,
) -> Iterator[Batch]:
    """Embed ``sources`` batch by batch, decoding ahead in a thread pool.

    A picture that cannot be decoded (a :class:`MediaError`, including one of more than
    ``max_pixels`` pixels) is reported in its batch's ``errors``; any other exception raised
    while decoding or preprocessing is re-raised here and ends the run (after the batches
    before it are handed out). ``progress=None`` shows a tqdm bar only for runs of more than
    one batch.

    ``device`` (default: the embedder's) is where a tensor-taking embedder's batches are put
    together and JPEGs are decoded (``jpeg_decode``: see :data:`JPEG_DECODE`); ``pin_memory``
    (default: on CUDA) pins the host buffers. ``prefetch`` batches are decoded ahead. ``stats``,
    a :class:`PipelineStats`, is filled in as the run goes.

    >>> stats = PipelineStats()
    >>> for batch in embed_stream(emb, paths, batch_size=256, stats=stats):  # doctest: +SKIP
    ...     store(batch)
    >>> stats.device_wait_seconds                                  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if prefetch < 1:
        raise ValueError("prefetch must be at least 1")
    stats = stats if stats is not None else PipelineStats()
    begun = time.perf_counter()
    tensor_device = embedder.tensor_device
    if device is None:
        device = tensor_device or embedder.device
    else:
        from snoop_nb.embed import resolve_device

        device = resolve_device(device)
    decode_on_device = device_decodes_jpeg(jpeg_decode, device, embedder)
    if tensor_device is None:
        runner: Any = _HostRunner(embedder)
    else:
        pin = device.startswith("cuda") if pin_memory is None else pin_memory
        runner = _TensorRunner(embedder, device, pin)
    on_device = None
    if decode_on_device is not None:
        on_device = _DeviceJpegs(device, embedder.tensor_preprocess())  # type: ignore[arg-type]
    stats.device = device
    stats.jpeg_decode = "device" if decode_on_device else "cpu"
    n = len(sources)
    workers = workers or default_workers(device)
    show = progress if progress is not None else n > batch_size
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", smoothing=0.1)
    window = max(prefetch * batch_size, 4 * workers)
    min_size = decode_size(embedder)
    if decode_on_device is None:
        task: Callable[..., Decoded] = decode_for
        extra: dict[str, Any] = {}
    else:
        task, extra = read_for_device, {"progressive": decode_on_device == "any"}
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="snoop-decode") as pool:
            pending: deque[tuple[int, Future[Decoded]]] = deque()
            next_i = 0

            def fill() -> None:
                nonlocal next_i
                while next_i < n and len(pending) < window:
                    source = sources[next_i]
                    fut = pool.submit(task, embedder, source, max_pixels, min_size, **extra)
                    pending.append((next_i, fut))
                    next_i += 1

            def gather() -> tuple[Batch, list[Any], int]:
                """The next batch's pictures: arrays, tensors on the device, and errors."""
                batch = Batch()
                rows: list[Any] = []
                consumed = 0
                while pending and len(rows) < batch_size:
                    i, fut = pending.popleft()
                    consumed += 1
                    t0 = time.perf_counter()
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
                        rows.append(dec.array)
                        dec.array = None  # type: ignore[assignment]  # free it early
                    stats.input_wait_seconds += time.perf_counter() - t0
                    fill()
                if on_device is not None:
                    _decode_jpegs(batch, rows)
                return batch, rows, consumed

            def _decode_jpegs(batch: Batch, rows: list[Any]) -> None:
                """Decode the batch's JPEGs on the device; those it refuses on the CPU."""
                jpegs = [j for j, info in enumerate(batch.infos) if info.encoded is not None]
                if not jpegs:
                    return
                t0 = time.perf_counter()
                decoded = on_device([batch.infos[j] for j in jpegs])  # type: ignore[misc]
                stats.device_decode_seconds += time.perf_counter() - t0
                refused = []
                for j, tensor in zip(jpegs, decoded, strict=True):
                    batch.infos[j].encoded = None
                    if tensor is None:
                        refused.append(j)
                    else:
                        rows[j] = tensor
                stats.device_decoded += len(jpegs) - len(refused)
                stats.device_fallbacks += len(refused)
                again = {
                    j: pool.submit(decode_for, embedder, sources[batch.indices[j]], max_pixels)
                    for j in refused
                }
                failed = set()
                for j, fut in again.items():
                    try:
                        dec = fut.result()
                    except MediaError as e:
                        batch.errors.append((batch.indices[j], e))
                        failed.add(j)
                    else:
                        rows[j] = dec.array
                        batch.infos[j] = dec
                if failed:
                    keep = [j for j in range(len(rows)) if j not in failed]
                    batch.indices = [batch.indices[j] for j in keep]
                    batch.infos = [batch.infos[j] for j in keep]
                    rows[:] = [rows[j] for j in keep]
                    batch.errors.sort(key=lambda pair: pair[0])

            def finish(held: tuple[Batch, Any, int]) -> Batch:
                batch, launched, consumed = held
                if launched is None:
                    batch.vectors = np.zeros((0, embedder.dim), dtype=np.float16)
                else:
                    batch.vectors, busy = runner.finish(launched)
                    stats.device_seconds += busy
                stats.images += len(batch.indices)
                stats.errors += len(batch.errors)
                stats.batches += 1
                stats.seconds = time.perf_counter() - begun
                if bar is not None:
                    bar.update(consumed)
                return batch

            fill()
            held: tuple[Batch, Any, int] | None = None
            while pending:
                try:
                    batch, rows, consumed = gather()
                except BaseException:
                    if held is not None:  # the batches before the failure are good
                        yield finish(held)
                    raise
                launched = runner.launch(rows) if rows else None
                del rows
                if held is not None:
                    yield finish(held)
                held = (batch, launched, consumed)
                if not runner.overlaps:
                    yield finish(held)
                    held = None
            if held is not None:
                yield finish(held)
    finally:
        stats.seconds = time.perf_counter() - begun
        if bar is not None:
            bar.close()
