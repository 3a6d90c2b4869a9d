"""Shared fixtures: real pictures made from scikit-image's photographs, and a tiny open_clip
model that the tests build, save to a checkpoint file and load back (no weights are fetched)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mediafiles import photo
from PIL import Image, ImageEnhance, ImageOps

# Keep model caches (exported ONNX graphs, text-bridge tables) out of the user's home.
os.environ.setdefault("SNOOP_NB_CACHE", str(Path(__file__).parent / ".cache"))

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "immunohistochemistry")

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_photo_set(
    folder: Path, per_photo: int = 5, size: int = 96, seed: int = 0
) -> dict[str, list[Path]]:
    """``per_photo`` variants (crops, flips, colour changes) of each photograph, one folder each.

    Variants of one photograph are each other's true neighbours: a search test can check them.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for name in PHOTOS:
        base = photo(name)
        w, h = base.size
        (folder / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(per_photo):
            s = rng.uniform(0.7, 1.0)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = base.crop((x, y, x + cw, y + ch)).resize((size, size), Image.Resampling.BILINEAR)
            if i % 2:
                img = ImageOps.mirror(img)
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
            path = folder / name / f"{name}_{i}.{'jpg' if i % 3 else 'png'}"
            img.save(path)
            out[name].append(path)
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict[str, str]:
    """A tiny open_clip model built here, saved as a config file and a checkpoint."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny_clip")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip")
    ckpt = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), ckpt)
    return {"model": str(config), "pretrained": str(ckpt)}


@pytest.fixture(scope="session")
def tiny_embedder(tiny_clip):
    from snoop_nb.embed import load_embedder

    return load_embedder(tiny_clip["model"], tiny_clip["pretrained"], device="cpu")


@pytest.fixture(scope="session")
def default_embedder():
    """The offline default embedder (EfficientNet-Lite0), loaded once for the whole run."""
    from snoop_nb.embed import load_embedder

    return load_embedder(device="cpu")


@pytest.fixture
def photo_set(tmp_path) -> dict[str, list[Path]]:
    return make_photo_set(tmp_path / "photos")
