"""The Embedder interface every backend implements.

An embedder turns pictures and texts into vectors of one space: L2-normalised float16 rows of
``dim`` columns, so that a dot product is a cosine similarity. Backends implement three small
hooks (``preprocess``, ``_encode_batch``, ``_encode_texts``); batching, decoding workers,
normalisation and progress bars are shared (see :mod:`snoop_nb.embed.pipeline`). A backend that
runs on PyTorch may also take tensors (:meth:`Embedder.encode_tensor`, and
:meth:`Embedder.tensor_preprocess` for pictures decoded on its device): the pipeline then puts
batches together in reused, pinned buffers and keeps the device busy while it reads the next.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

ImageSource = Any  # a path, bytes, a PIL image or an HxWxC uint8 array


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length, as float16 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float16)


class Embedder(ABC):
    """Images and texts to L2-normalised float16 vectors in one space.

    Attributes:
        id: model name and weights digest, e.g. ``"efficientnet_lite0@57934424"``; a collection
            remembers it and refuses to mix vectors of two embedders.
        name: the model's name.
        dim: the vectors' dimension.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    """

    id: str
    name: str
    dim: int
    device: str = "cpu"

    # --- hooks for backends -------------------------------------------------------------
    @abstractmethod
    def preprocess(self, image: Any) -> np.ndarray:
        """An RGB PIL image to the model's float32 CHW input; called from decoding threads."""

    @abstractmethod
    def _encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """A float32 NCHW batch to (N, dim) float32 features (not necessarily normalised)."""

    @abstractmethod
    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts to (N, dim) float32 vectors in the image space (not necessarily normalised)."""

    # --- optional hooks: the tensor path ------------------------------------------------
    #: Where :meth:`encode_tensor` computes (``"cpu"``, ``"cuda"``...), or None for a backend
    #: with only the numpy hook, whose batches then go to :meth:`_encode_batch` as arrays.
    tensor_device: str | None = None

    def encode_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """A float32 NCHW batch (on the host or the device) to (N, dim) features on
        :attr:`tensor_device`, not normalised; on CUDA they may still be being computed."""
        raise NotImplementedError(f"{type(self).__name__} takes numpy batches only")

    def tensor_preprocess(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """:meth:`preprocess` for an upright RGB uint8 CHW tensor, computed on its device, or
        None when the backend has none (its pictures are then all decoded on the CPU)."""
        return None

    # --- public API ---------------------------------------------------------------------
    def encode_images(
        self,
        images: Iterable[ImageSource],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray:
        """Embed pictures (paths, bytes, PIL images or arrays) into an (N, dim) float16 array.

        Raises :class:`~snoop_nb.errors.MediaError` on the first picture that cannot be
        decoded; to embed a folder and record bad files instead, use a collection.

        >>> vecs = embedder.encode_images(["cat.jpg", "dog.png"])  # doctest: +SKIP
        """
        from snoop_nb.embed.pipeline import embed_stream

        items = list(images)
        out = np.zeros((len(items), self.dim), dtype=np.float16)
        for batch in embed_stream(
            self, items, batch_size=batch_size, workers=workers, progress=progress
        ):
            if batch.errors:
                _, err = batch.errors[0]
                raise err
            out[batch.indices] = batch.vectors
        return out

    def encode_image(self, image: ImageSource) -> np.ndarray:
        """One picture to one (dim,) float16 vector."""
        return self.encode_images([image], progress=False)[0]

    def encode_texts(self, texts: Sequence[str] | str) -> np.ndarray:
        """Texts to an (N, dim) float16 array in the same space as the images."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float16)
        return l2_normalise(self._encode_texts(list(texts)))

    def encode_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed float32 NCHW batch to normalised float16 vectors."""
        return l2_normalise(self._encode_batch(batch))

    def describe(self) -> dict[str, Any]:
        """What a collection's manifest records about this embedder."""
        return {"id": self.id, "name": self.name, "dim": self.dim}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} dim={self.dim} device={self.device}>"


def weights_digest(path: str | Path) -> str:
    """The first 16 hex characters of a weights file's SHA-256 (once per file and process).

    It goes into an embedder's id, so that a collection notices when the weights change.
    """
    st = Path(path).stat()
    return _sha256_prefix(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_prefix(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]
