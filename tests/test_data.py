import numpy as np
import pytest
from PIL import Image

from artlens.data import (
    DataError,
    TorchDataset,
    apply_label_map,
    cap_per_class,
    class_weights,
    compose_labels,
    eval_transform,
    five_crops,
    group_from_filename,
    load_data,
    load_label_map,
    load_split,
    parse_perturbations,
    perturb,
    save_split,
    split_data,
    train_transform,
)
from artlens.models import load_model


@pytest.fixture(scope="module")
def styles(data_dir):
    return load_data(str(data_dir / "paintings_styles10"))


def test_load_imagefolder_labels_and_groups(styles):
    assert len(styles) == 1191
    assert set(styles["label"]) >= {"Impressionism", "Baroque", "Surrealism"}
    assert len(set(styles["label"])) == 10
    row = styles[0]
    assert row["image"]["path"].endswith(".jpg")
    assert row["group"] and not row["group"][-1].isdigit()


def test_group_from_filename():
    assert group_from_filename("x/Alfred_Sisley_113.jpg") == "Alfred_Sisley"
    assert group_from_filename("Appel_Karel_0.jpg") == "Appel_Karel"


def test_group_split_is_artist_disjoint(styles, tmp_path):
    split = split_data(styles, test_size=0.2, val_size=0.1, by="group", seed=0)
    groups = {k: set(styles.select(v)["group"]) for k, v in split.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]
    assert set(styles.select(split["test"])["label"]) == set(styles["label"])  # every style tested
    assert sum(len(v) for v in split.values()) == len(styles)
    assert split == split_data(styles, test_size=0.2, val_size=0.1, by="group", seed=0)  # fixed seed
    save_split(split, styles, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json", styles) == split


def test_random_split_is_stratified(styles):
    split = split_data(styles, test_size=0.2, val_size=0.1, by="random", seed=1)
    test_labels = styles.select(split["test"])["label"]
    counts = {lab: test_labels.count(lab) for lab in set(test_labels)}
    assert len(counts) == 10 and max(counts.values()) - min(counts.values()) <= 3
    with pytest.raises(DataError, match="unknown split"):
        split_data(styles, by="artist")


def test_label_map_compose_cap_weights(styles, tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("Renaissance: [High_Renaissance, Northern_Renaissance]\nModern: [Expressionism, Surrealism]\n")
    merged = apply_label_map(styles, load_label_map(p))
    assert set(merged["label"]) == {"Renaissance", "Modern"}
    composed = compose_labels(merged, "human")
    assert set(composed["label"]) == {"human_renaissance", "human_modern"}
    capped = cap_per_class(styles, 7, seed=0)
    assert len(capped) == 70
    w = class_weights(["a", "a", "a", "b"], ["a", "b"])
    assert w[1] > w[0] and abs(float((w * np.array([3, 1])).sum()) - 4) < 1e-5


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_data(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="bad perturbation"):
        parse_perturbations(["blur:3"])


def test_transforms_and_dataset(styles):
    m = load_model("tf_efficientnet_lite0")
    ev, tr = eval_transform(m), train_transform(m, aug="robust")
    ds = TorchDataset(styles.select(range(3)), sorted(set(styles["label"])), ev)
    x, y = ds[0]
    assert tuple(x.shape) == (3, 224, 224) and isinstance(y, int)
    img = ds.open(0)
    assert tuple(tr(img).shape) == (3, 224, 224)
    # the feature cache keys on repr(transform): the degradation range must show in it
    desc = repr(tr)
    tr.transforms[0].scale = (0.5, 1.0)
    assert "scale=(0.25, 1.0)" in desc and repr(tr) != desc
    # a 1024 px and a 256 px copy of one painting give nearly the same eval tensor: resolution is normalised
    big = img.resize((1024, 1024), Image.BICUBIC)
    assert float((ev(big) - ev(img)).abs().mean()) < 0.05
    crops = five_crops(img, 224)
    assert len(crops) == 5 and all(c.size == (224, 224) for c in crops)
    assert len(TorchDataset(styles.select(range(3)), sorted(set(styles["label"])), ev, five_crop=224)) == 15


def test_perturbations():
    img = Image.new("RGB", (200, 100), "white")
    assert perturb(img, "scale", 0.5).size == (100, 50)
    assert perturb(img, "crop", 0.5).size == (100, 50)
    assert perturb(img, "upscale", 1000).size == (1000, 500)
    assert perturb(img, "aspect", 1.5).size == (300, 100)
    assert perturb(img, "jpeg", 30).size == (200, 100)
    assert parse_perturbations(["jpeg:30,50", "scale:0.25"]) == [("jpeg", 30.0), ("jpeg", 50.0), ("scale", 0.25)]


def test_native_crop_keeps_the_pixels_and_is_seeded():
    from artlens.data import native_crop

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (512, 500, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    sizes = set()
    for seed in range(12):
        c = native_crop(img, seed)
        assert c.size == native_crop(img, seed).size and 224 <= min(c.size)
        a = np.asarray(c)
        # no resampling: the crop is a block of the original pixels
        hits = np.argwhere((arr[:, :, 0] == a[0, 0, 0]) & (arr[:, :, 1] == a[0, 0, 1]) & (arr[:, :, 2] == a[0, 0, 2]))
        assert any(np.array_equal(arr[y:y + a.shape[0], x:x + a.shape[1]], a) for y, x in hits)
        sizes.add(c.size)
    assert len(sizes) > 6
    small = Image.fromarray(arr[:200, :200])
    assert native_crop(small, 3).size == (200, 200)  # smaller than 224: the whole image


@pytest.mark.parametrize("kind,lo,hi", [("small", 48, 112), ("tiny", 32, 64)])
def test_thumbnail_views_are_seeded_and_sized(kind, lo, hi):
    from artlens.data import RETAKES

    view = RETAKES[kind]
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 300, 3), dtype=np.uint8))
    shorts = {min(view(img, s).size) for s in range(40)}
    assert min(shorts) >= lo and max(shorts) <= hi and len(shorts) > 10
    assert np.array_equal(np.asarray(view(img, 4)), np.asarray(view(img, 4)))
    assert not np.array_equal(np.asarray(view(img, 4)), np.asarray(view(img, 5)))


def test_source_view_is_seeded_and_changes_size_and_encoding():
    from artlens.data import source_view

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    a, b = source_view(img, 7), source_view(img, 7)
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    sizes = {source_view(img, s).size for s in range(20)}
    assert len(sizes) > 10
    shorts = [min(s) for s in sizes]
    assert min(shorts) >= 120 and max(shorts) <= 1030 and max(shorts) > 300  # both down and up
