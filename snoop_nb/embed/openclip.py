"""The open_clip backend: CLIP-style models with a real text tower.

Weights come from a local checkpoint file or from the local Hugging Face cache, looked up
without any network access: snoop-nb never downloads weights at run time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from snoop_nb.embed.base import Embedder, weights_digest
from snoop_nb.errors import ModelError


def resolve_pretrained(model: str, pretrained: str) -> Path:
    """A checkpoint path, or a pretrained tag found in the local Hugging Face cache.

    Raises :class:`ModelError` when neither gives a file; nothing is fetched from the network.
    """
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if os.sep in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors")):
        raise ModelError(f"checkpoint file not found: {pretrained}")
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = [t for m, t in open_clip.list_pretrained() if m == model]
        raise ModelError(
            f"unknown pretrained tag {pretrained!r} for {model}"
            + (f"; known tags: {', '.join(tags)}" if tags else "")
        )
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        # "org/repo/" means open_clip's default file name; a .safetensors twin is preferred
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        twin = (
            "open_clip_model.safetensors"
            if filename == "open_clip_pytorch_model.bin"
            else str(Path(filename).with_suffix(".safetensors"))
        )
        names = [twin, filename]
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return Path(found)
        raise ModelError(
            f"weights for {model}/{pretrained} are not in the local Hugging Face cache "
            f"(looked for {repo}/{' or '.join(names)}); snoop-nb does not download weights: "
            "copy them into the cache or pass a checkpoint file with --pretrained PATH"
        )
    raise ModelError(
        f"{model}/{pretrained} is only published as a URL; download it yourself and pass the "
        "file with --pretrained PATH"
    )


class OpenCLIPEmbedder(Embedder):
    """An open_clip model: ``OpenCLIPEmbedder("ViT-B-32", "/models/vit-b-32.bin")``.

    ``model`` is a name open_clip knows, or the path of a model config ``.json`` file.

    ``pretrained=None`` builds the model with random weights: only for tests and speed
    measurements, and said so in the id.
    """

    def __init__(self, model: str, pretrained: str | None = None, *, device: str = "auto"):
        import open_clip
        import torch

        from snoop_nb.embed import resolve_device

        arch = model
        if model.endswith(".json"):
            # a model config of one's own, in open_clip's JSON format (named after the file)
            config = Path(model).expanduser()
            if not config.is_file():
                raise ModelError(f"model config not found: {model}")
            open_clip.add_model_config(config)
            arch = config.stem
            model = str(config.absolute())
        if arch not in open_clip.list_models():
            raise ModelError(
                f"unknown open_clip model {arch!r}: see open_clip.list_models(), or pass a "
                "model config .json file"
            )
        self.name = model
        self.device = resolve_device(device)
        self.pretrained = pretrained
        ckpt = resolve_pretrained(arch, pretrained) if pretrained else None
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(ckpt) if ckpt else None, device=self.device
            )
        except Exception as e:  # unpickling, shape mismatches, I/O: all mean "bad weights"
            raise ModelError(f"cannot load {model} from {ckpt}: {e}") from e
        net.eval()
        self._net = net
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(arch)
        self._torch = torch
        self._tensor_preprocess = None
        digest = weights_digest(ckpt) if ckpt else "random-init"
        self.id = f"openclip:{arch}@{digest}"
        self.dim = int(net.visual.output_dim)

    def preprocess(self, image) -> np.ndarray:
        return self._preprocess(image).numpy()

    @property
    def tensor_device(self) -> str:
        return self.device

    def tensor_preprocess(self):
        """open_clip's transform on uint8 CHW tensors (any device), or None for a transform
        with a step it does not know; built once."""
        if self._tensor_preprocess is None:
            self._tensor_preprocess = tensor_transform(self._preprocess) or False
        return self._tensor_preprocess or None

    def _autocast(self):
        torch = self._torch
        if self.device.startswith("cuda"):
            # float16 matrix products, float32 norms and softmax: the float32 vectors to
            # float16 precision, which is how they are stored
            return torch.autocast("cuda", dtype=torch.float16)
        import contextlib

        return contextlib.nullcontext()

    def encode_tensor(self, batch):
        torch = self._torch
        x = batch.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            return self._net.encode_image(x)

    def _encode_batch(self, batch: np.ndarray) -> np.ndarray:
        x = self._torch.from_numpy(batch)
        if self.device.startswith("cuda"):
            x = x.pin_memory()
        return self.encode_tensor(x).float().cpu().numpy()

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self._autocast():
            return self._net.encode_text(tokens).float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "pretrained": self.pretrained}


def tensor_transform(preprocess):
    """An open_clip (torchvision) PIL transform redone on uint8 CHW tensors, or None.

    Resize (antialiased, as PIL always is), centre crop, RGB conversion (a no-op: decoded
    pictures are RGB already), to-float and normalisation are known; any other step gives None,
    and such a model's pictures are decoded on the CPU. The result differs from the PIL path
    only by the resize's rounding (a mean of 0.15 grey levels on photographs).
    """
    import torchvision.transforms as T
    import torchvision.transforms.functional as F
    from open_clip.transform import CenterCropOrPad, MaybeConvertMode

    steps = []
    for step in getattr(preprocess, "transforms", None) or ():
        if isinstance(step, T.Resize):
            size, mode, most = step.size, step.interpolation, step.max_size
            steps.append(lambda x, s=size, m=mode, mx=most: F.resize(x, s, m, mx, antialias=True))
        elif isinstance(step, (T.CenterCrop, CenterCropOrPad)):
            steps.append(step)
        elif _to_rgb(step, MaybeConvertMode):
            continue
        elif isinstance(step, T.ToTensor):
            steps.append(lambda x: x.float().div(255))
        elif isinstance(step, T.Normalize):
            steps.append(step)
        else:
            return None
    known = [type(s) for s in getattr(preprocess, "transforms", ())]
    if not (any(issubclass(t, T.ToTensor) for t in known) and T.Normalize in known):
        return None

    def run(image):
        for step in steps:
            image = step(image)
        return image

    return run


def _to_rgb(step, maybe_convert: type) -> bool:
    """True for open_clip's RGB conversion steps (a class in 3.x, a function before)."""
    if isinstance(step, maybe_convert):
        return step.mode == "RGB"
    return getattr(step, "__name__", "") == "_convert_to_rgb"
