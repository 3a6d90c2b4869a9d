"""The open_clip backend: a small model the test builds, saves and loads back, offline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from mediafiles import photo

from snoop_nb.embed import load_embedder
from snoop_nb.embed.openclip import OpenCLIPEmbedder
from snoop_nb.errors import ModelError


def test_checkpoint_round_trip_gives_the_saved_model(tiny_clip):
    import open_clip
    import torch

    a = load_embedder(tiny_clip["model"], tiny_clip["pretrained"], device="cpu")
    b = load_embedder(tiny_clip["model"], tiny_clip["pretrained"], device="cpu")
    assert a.id == b.id and a.id.startswith("openclip:tiny-clip@") and a.dim == 32
    images = [photo("chelsea", (80, 60)), photo("coffee", (80, 60))]
    va, vb = a.encode_images(images, progress=False), b.encode_images(images, progress=False)
    assert va.dtype == np.float16 and va.shape == (2, 32)
    assert np.array_equal(va, vb)
    assert np.allclose(np.linalg.norm(va.astype(np.float32), axis=1), 1, atol=1e-2)
    # the loaded weights are the checkpoint's, not a fresh random draw
    state = torch.load(tiny_clip["pretrained"])
    net = open_clip.create_model("tiny-clip")
    net.load_state_dict(state)
    net.eval()
    x = torch.from_numpy(np.stack([a.preprocess(i) for i in images]))
    with torch.no_grad():
        ref = torch.nn.functional.normalize(net.encode_image(x), dim=-1).numpy()
    assert np.allclose(va.astype(np.float32), ref, atol=2e-3)


def test_texts_and_images_share_one_space(tiny_clip, tiny_embedder):
    """Text vectors come from the checkpoint's own text tower, image vectors from its image
    tower, so text-to-image scores are the model's own (its logits over its logit scale)."""
    import open_clip
    import torch

    texts = ["a cat", "a cup of coffee"]
    t = tiny_embedder.encode_texts(texts)
    image = photo("chelsea", (64, 64))
    i = tiny_embedder.encode_images([image], progress=False)
    assert t.shape == (2, 32) and i.shape == (1, 32) and t.dtype == np.float16
    net = open_clip.create_model("tiny-clip")
    net.load_state_dict(torch.load(tiny_clip["pretrained"]))
    net.eval()
    tokens = open_clip.get_tokenizer("tiny-clip")(texts)
    x = torch.from_numpy(tiny_embedder.preprocess(image)[None])
    with torch.no_grad():
        ref_t = torch.nn.functional.normalize(net.encode_text(tokens), dim=-1).numpy()
        image_f, text_f, scale = net(x, tokens)[:3]
        logits = (scale * image_f @ text_f.T).numpy()
    assert np.allclose(t.astype(np.float32), ref_t, atol=2e-3)
    scores = i.astype(np.float32) @ t.astype(np.float32).T
    assert np.allclose(scores * float(scale), logits, atol=float(scale) * 4e-3)
    assert not np.allclose(t[0], t[1], atol=1e-2)


def test_random_weights_say_so_in_the_id(tiny_clip):
    emb = OpenCLIPEmbedder(tiny_clip["model"], None, device="cpu")
    assert emb.id.endswith("@random-init")


def test_missing_checkpoint_unknown_model_and_unknown_tag_are_model_errors(tmp_path, tiny_clip):
    with pytest.raises(ModelError, match="checkpoint file not found"):
        load_embedder(tiny_clip["model"], str(tmp_path / "nope.pt"), device="cpu")
    with pytest.raises(ModelError, match="unknown open_clip model"):
        load_embedder("NoSuchNet-99", None, device="cpu")
    with pytest.raises(ModelError, match="unknown pretrained tag"):
        load_embedder("ViT-B-32", "no_such_tag", device="cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load"):
        load_embedder(tiny_clip["model"], str(garbage), device="cpu")


RESOLVE = (
    "from snoop_nb.embed.openclip import resolve_pretrained\n"
    "from snoop_nb.errors import ModelError\n"
    "try:\n"
    "    print(resolve_pretrained('ViT-B-32', 'laion2b_s34b_b79k'))\n"
    "except ModelError as e:\n"
    "    print('ModelError:', e)\n"
)


def run_resolve(cache) -> str:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", RESOLVE], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.slow
def test_pretrained_tag_is_found_in_the_local_hugging_face_cache_only(tmp_path):
    cache = tmp_path / "hub"
    assert "not in the local Hugging Face cache" in run_resolve(cache)
    repo = cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    assert run_resolve(cache) == str(snap / "open_clip_pytorch_model.bin")
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")  # preferred when present
    assert run_resolve(cache) == str(snap / "open_clip_model.safetensors")
