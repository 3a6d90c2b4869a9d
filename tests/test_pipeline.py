"""The embedding kernel's pipeline: order, batching, bad inputs, device choice."""

from __future__ import annotations

import numpy as np
import pytest
from mediafiles import BAD_IMAGE_REASONS, make_bad_images

from snoop_nb.embed import resolve_device
from snoop_nb.embed.pipeline import embed_stream
from snoop_nb.errors import MediaError, UsageError


def test_results_come_back_in_input_order_with_bad_files_reported(
    tiny_embedder, photo_set, tmp_path
):
    bad = make_bad_images(tmp_path / "bad")
    good = [p for paths in photo_set.values() for p in paths][:11]
    sources = [
        *good[:4],
        bad["truncated_jpeg"],
        *good[4:9],
        bad["empty"],
        bad["broken_symlink"],
        *good[9:],
    ]
    batches = list(embed_stream(tiny_embedder, sources, batch_size=3, workers=3, progress=False))
    indices = [i for b in batches for i in b.indices]
    errors = {i: e for b in batches for i, e in b.errors}
    assert sorted(indices + list(errors)) == list(range(len(sources)))
    assert indices == sorted(indices)
    assert errors[4].reason.startswith(BAD_IMAGE_REASONS["truncated_jpeg"])
    assert errors[10].reason == "empty file" and errors[11].reason == "broken symlink"
    assert all(len(b.indices) <= 3 for b in batches)
    vectors = np.concatenate([b.vectors for b in batches])
    alone = np.stack([tiny_embedder.encode_image(sources[i]) for i in indices])
    assert np.allclose(vectors.astype(np.float32), alone.astype(np.float32), atol=2e-3)
    infos = [info for b in batches for info in b.infos]
    assert all(info.width == 96 and info.height == 96 and len(info.digest) == 16 for info in infos)


def test_encode_images_raises_on_the_first_bad_picture(tiny_embedder, tmp_path):
    bad = make_bad_images(tmp_path / "bad")
    with pytest.raises(MediaError, match="not an image"):
        tiny_embedder.encode_images([bad["text_named_jpg"]], progress=False)


def test_empty_input_and_bad_batch_size(tiny_embedder):
    assert list(embed_stream(tiny_embedder, [], progress=False)) == []
    assert tiny_embedder.encode_images([], progress=False).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size"):
        list(embed_stream(tiny_embedder, ["x.jpg"], batch_size=0))


def test_device_auto_is_cpu_without_a_gpu_and_cuda_is_refused_clearly():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")
