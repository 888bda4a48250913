"""artlens.features: pooled backbone features, the on-disk cache and its key."""
import os
import time

import numpy as np
import pytest
import torch

from artlens.data import cap_per_class, eval_transform, load_labelled_folders, train_transform
from artlens.features import extract_features, features_key, pooled_features
from artlens.models import load_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def small(data_dir):
    ds = load_labelled_folders([data_dir / "paintings_styles10" / "Baroque", data_dir / "ai_sd15_styles15" / "Cubism"],
                               ["human", "ai"])
    return cap_per_class(ds, 3, seed=0)


@pytest.fixture(scope="module")
def model():
    m = load_model("tf_efficientnet_lite0", num_classes=2, label_names=["ai", "human"])
    m.pretrained_cfg = dict(m.pretrained_cfg, input_size=(3, 64, 64))
    return m


def test_features_are_the_classifier_input(small, model, cache):
    feats, labels = extract_features(model, small, eval_transform(model), batch_size=4)
    assert feats.shape == (6, model.num_features) and feats.dtype == np.float32
    assert labels == list(small["label"]) and sorted(set(labels)) == ["ai", "human"]
    # the head applied to the features gives the model's own logits
    from artlens.data import TorchDataset

    x = torch.stack([TorchDataset(small, ["ai", "human"], eval_transform(model))[i][0] for i in range(6)])
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(pooled_features(model, x), torch.from_numpy(feats), atol=1e-4)
        assert torch.allclose(model.get_classifier()(torch.from_numpy(feats)), logits, atol=1e-4)
    # different images give different features
    assert np.abs(feats[0] - feats[-1]).mean() > 1e-3


def test_cache_hit_is_identical_and_on_disk(small, model, cache):
    tf = eval_transform(model)
    t0 = time.perf_counter()
    a, _ = extract_features(model, small, tf, batch_size=6)
    first = time.perf_counter() - t0
    files = list((cache / "features").glob("*.safetensors"))
    assert len(files) == 1
    t0 = time.perf_counter()
    b, _ = extract_features(model, small, tf, batch_size=6)
    assert np.array_equal(a, b)
    assert time.perf_counter() - t0 < first
    # a damaged cache file is recomputed, not fatal
    files[0].write_bytes(b"garbage")
    c, _ = extract_features(model, small, tf, batch_size=6)
    assert np.allclose(a, c, atol=1e-5)


def test_cache_key_covers_images_preprocessing_and_views(small, model, tmp_path):
    tf = "eval"
    k = features_key(model, small, tf)
    assert k == features_key(model, small, tf)
    assert k != features_key(model, small.select(range(5)), tf)
    assert k != features_key(model, small, tf, tta="flip")
    assert k != features_key(model, small, "train")
    other = load_model("tf_efficientnet_lite0", num_classes=2)
    other.pretrained_cfg = dict(other.pretrained_cfg, input_size=(3, 96, 96))
    assert k != features_key(other, small, tf)
    # a touched image file (new mtime) invalidates the key
    src = small[0]["image"]["path"]
    st = os.stat(src)
    copy = tmp_path / "img"
    copy.mkdir()
    (copy / "Caravaggio_1.jpg").write_bytes(open(src, "rb").read())
    one = load_labelled_folders([copy], ["human"])
    k1 = features_key(model, one, tf)
    os.utime(copy / "Caravaggio_1.jpg", (st.st_atime, st.st_mtime + 100))
    assert features_key(model, one, tf) != k1


def test_tta_copies_and_five_crop_rows(small, model, cache):
    plain, _ = extract_features(model, small, eval_transform(model), cache=False)
    flip, _ = extract_features(model, small, eval_transform(model), cache=False, tta="flip")
    assert flip.shape == plain.shape and not np.allclose(flip, plain)
    aug, labels = extract_features(model, small, train_transform(model, aug="robust"), copies=2, seed=1)
    assert aug.shape == (12, model.num_features) and labels[:2] == [small[0]["label"]] * 2
    assert not np.allclose(aug[0], aug[1])  # two independent augmented draws of the same image
    again, _ = extract_features(model, small, train_transform(model, aug="robust"), copies=2, seed=1, cache=False)
    assert np.allclose(aug, again, atol=1e-5)  # seeded: the same draws
    crops, labels = extract_features(model, small.select(range(2)), eval_transform(model), five_crop=64, cache=False)
    assert crops.shape == (10, model.num_features) and labels == [small[0]["label"]] * 5 + [small[1]["label"]] * 5


def test_cache_key_ignores_the_classifier(small, model):
    other = load_model("tf_efficientnet_lite0", num_classes=5)
    other.pretrained_cfg = dict(other.pretrained_cfg, input_size=(3, 64, 64))
    assert features_key(model, small, "eval") == features_key(other, small, "eval")
    changed = load_model("tf_efficientnet_lite0", num_classes=2, pretrained=False)
    changed.pretrained_cfg = dict(model.pretrained_cfg)
    assert features_key(model, small, "eval") != features_key(changed, small, "eval")
