"""The default model's tensor path (what a GPU runs): batches as tensors, JPEGs decoded by
torchvision and preprocessed on the tensor's device. Run here on the CPU with the PyTorch
runtime; the vectors must be those of the numpy path (ONNX Runtime or PyTorch) to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mediafiles import photo
from torchvision.io import decode_jpeg, read_file

from snoop_nb.embed.efficientnet import EfficientNetLite0
from snoop_nb.embed.pipeline import PipelineStats, embed_stream
from snoop_nb.media import load_image

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they are what is tested
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(scope="module", params=["efficientnet_lite0-gem", "efficientnet_lite0"])
def torch_embedder(request):
    """The default (whole picture, GeM) and the first model (centre crop) on eager PyTorch."""
    return EfficientNetLite0(device="cpu", runtime="torch", variant=request.param)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list:
    """JPEG files of real photographs: wide, tall, small and larger than the input."""
    folder = tmp_path_factory.mktemp("jpegs")
    sizes = [(400, 150), (150, 400), (97, 61), (640, 480), (224, 224), (1000, 260)]
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"p{i}.jpg"
        photo(PHOTOS[i % len(PHOTOS)], size).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def test_the_tensor_path_belongs_to_the_pytorch_runtime(torch_embedder, default_embedder):
    assert torch_embedder.tensor_device == "cpu"
    assert default_embedder.runtime == "onnx" and default_embedder.tensor_device is None


def test_tensor_preprocess_matches_the_pil_preprocess(torch_embedder, jpegs):
    """Same geometry (letterbox or crop) and values within a few 8-bit levels of PIL's."""
    prep = torch_embedder.tensor_preprocess()
    for path in jpegs:
        by_pil = torch_embedder.preprocess(load_image(path))
        by_tensor = prep(decode_jpeg(read_file(str(path)))).numpy()
        assert by_tensor.shape == by_pil.shape == (3, 224, 224)
        level = float(torch_embedder._scale.max())  # one 8-bit level, normalised
        diff = np.abs(by_tensor - by_pil)
        assert np.median(diff) <= 0.5 * level, path.name  # most pixels: the very same level
        assert np.quantile(diff, 0.99) <= 2.01 * level, path.name  # a level off, here and there
        assert diff.max() <= 12 * level, path.name  # a sharp edge of a small picture, at most
        if torch_embedder.view == "whole":  # the padding is PAD_RGB, exactly, in both
            corner = by_pil[:, 0, 0]
            if path.name in ("p0.jpg", "p1.jpg", "p5.jpg"):
                np.testing.assert_allclose(by_tensor[:, 0, 0], corner, atol=1e-6)


def test_device_decoded_jpegs_embed_as_the_numpy_path_does(torch_embedder, jpegs):
    """Through the pipeline: JPEGs decoded by torchvision and preprocessed as tensors give the
    vectors of PIL decoding and numpy preprocessing, to the resize's rounding."""
    by_numpy = np.concatenate(
        [b.vectors for b in embed_stream(torch_embedder, jpegs, batch_size=4, progress=False)]
    )
    stats = PipelineStats()
    by_tensor = np.concatenate(
        [
            b.vectors
            for b in embed_stream(
                torch_embedder, jpegs, batch_size=4, progress=False, jpeg_decode="device",
                stats=stats,
            )
        ]
    )  # fmt: skip
    assert stats.jpeg_decode == "device" and stats.device_decoded == len(jpegs)
    cos = (by_numpy.astype(np.float32) * by_tensor.astype(np.float32)).sum(axis=1)
    assert cos.min() > 0.995, cos


def test_pytorch_tensor_batches_equal_the_onnx_vectors(torch_embedder, jpegs):
    """The tensor path's batches (PIL decoding) against ONNX Runtime's numpy batches: the same
    network, two runtimes."""
    onnx = EfficientNetLite0(device="cpu", runtime="onnx", variant=torch_embedder.name)
    a = np.concatenate([b.vectors for b in embed_stream(onnx, jpegs, batch_size=3, progress=False)])
    b = np.concatenate(
        [b.vectors for b in embed_stream(torch_embedder, jpegs, batch_size=3, progress=False)]
    )
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([torch_embedder.preprocess(load_image(p)) for p in jpegs]))
        direct = torch_embedder.encode_tensor(x).numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(b.astype(np.float32), direct, atol=2e-3)
