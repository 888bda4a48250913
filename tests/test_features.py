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


def test_view_rows_and_cached_trunk_maps_feed_the_tail(small, model, cache):
    from PIL import ImageOps

    from artlens.images import open_image
    from artlens.models import ModelError, Tail, trunk_features

    tf = eval_transform(model)
    plain, _ = extract_features(model, small, tf, cache=False)
    rows, labels = extract_features(model, small, tf, tta="flip", view_rows=True, cache=False)
    assert rows.shape == (12, model.num_features) and labels[:2] == [small[0]["label"]] * 2
    assert np.allclose(rows[::2], plain, atol=1e-4)  # row 0 of each image: the image itself
    img = open_image(small[0]["image"]["path"])
    with torch.no_grad():
        mirror = pooled_features(model.eval(), tf(ImageOps.mirror(img))[None]).numpy()[0]
    assert np.allclose(rows[1], mirror, atol=1e-4)  # row 1: its mirror
    from artlens.predict import TTA_VIEWS, tta_views

    assert {m: len(tta_views(img, m, 64)) for m in TTA_VIEWS} == TTA_VIEWS
    # train_blocks=1: float16 maps of blocks.0-5 (192 channels, 64 px / 32), cached on disk
    maps, _ = extract_features(model, small, tf, tta="flip", view_rows=True, train_blocks=1)
    assert maps.shape == (12, 192, 2, 2) and maps.dtype == np.float16
    again, _ = extract_features(model, small, tf, tta="flip", view_rows=True, train_blocks=1)
    assert np.array_equal(maps, again) and len(list((cache / "features").glob("*.safetensors"))) == 1
    with pytest.raises(ValueError, match="view_rows"):
        extract_features(model, small, tf, tta="flip", train_blocks=1, cache=False)
    # augmented maps (the defaults' recipe): copies x views rows per image, seeded, each draw different
    rob = train_transform(model, aug="robust")
    aug, labels = extract_features(model, small, rob, tta="flip", view_rows=True, train_blocks=1, copies=2,
                                   seed=3, cache=False)
    assert aug.shape == (24, 192, 2, 2) and labels[:4] == [small[0]["label"]] * 4
    assert not np.array_equal(aug[0], aug[2])  # two draws of the augmentation
    again, _ = extract_features(model, small, rob, tta="flip", view_rows=True, train_blocks=1, copies=2,
                                seed=3, cache=False)
    assert np.array_equal(aug, again)
    # the tail on cached maps gives the full model's logits
    x = torch.stack([tf(open_image(small[i]["image"]["path"])) for i in range(2)])
    with torch.no_grad():
        full = model.eval()(x)
        assert torch.allclose(trunk_features(model, x, 1).half().float(), torch.from_numpy(maps[[0, 2]]).float(), atol=1e-2)
        tail = Tail(model, 1).eval()
        assert torch.allclose(tail(torch.from_numpy(maps[[0, 2]])), full, atol=5e-2)
    trainable = {n.split(".")[1] for n, p in tail.named_parameters() if p.requires_grad}
    assert trainable == {"blocks", "conv_head", "bn2", "classifier"}
    assert not any(p.requires_grad for p in model.blocks[5].parameters())
    with pytest.raises(ModelError, match="block stages"):
        Tail(model, 9)
    with pytest.raises(ModelError, match="EfficientNet"):
        Tail(load_model("resnet18", pretrained=False, num_classes=2), 1)
