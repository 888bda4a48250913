import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artlens.explain import (
    CAM_METHODS,
    METHODS,
    REGISTRY,
    ExplainError,
    Explanation,
    Method,
    class_average_maps,
    default_layer,
    default_method,
    deletion_score,
    display_names,
    explain,
    explain_batch,
    get_method,
    layer_names,
    method_names,
    overlay,
    plot_class_maps,
    random_map,
)
from artlens.features import fit_probe
from artlens.images import list_images, open_image
from artlens.models import label_names, load_model

STYLES = ["Baroque", "Impressionism", "Surrealism"]


def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.fixture(scope="module")
def styles(data_dir):
    return {s: list_images(data_dir / "paintings_styles10" / s) for s in STYLES}


@pytest.fixture(scope="module")
def trained(styles):
    """Offline Lite0 with a 3-style linear head fitted on pooled features of 12 paintings a style."""
    torch.manual_seed(0)
    return fit_probe({s: styles[s][:12] for s in STYLES})


@pytest.fixture(scope="module")
def imagenet():
    return load_model("tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def wide_painting(styles):
    """A real painting made non-square (300 x 200), so the centre crop cuts off its sides."""
    return open_image(styles["Impressionism"][40]).resize((300, 200))


# ---------------------------------------------------------------- the registry: the one list of methods

def test_registry_is_the_one_list_of_methods():
    import dataclasses
    import re

    assert METHODS == tuple(REGISTRY) == method_names() and len(set(METHODS)) == len(METHODS)
    assert CAM_METHODS == method_names(takes_layer=True) == tuple(n for n in METHODS if REGISTRY[n].takes_layer)
    assert method_names(takes_layer=False) == ("rollout", "lime") and method_names(class_specific=False) == ("eigencam",)
    for name, m in REGISTRY.items():
        assert isinstance(m, Method) and m.name == name and m.display_name and callable(m.explainer.explain)
        assert m.label.startswith(m.display_name)
    assert display_names() == {n: m.display_name for n, m in REGISTRY.items()}
    assert display_names(notes=True)["lime"].startswith("LIME (") and display_names()["gradcam++"] == "Grad-CAM++"
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["gradcam"].class_specific = False
    with pytest.raises(TypeError):
        REGISTRY["occlusion"] = REGISTRY["gradcam"]  # read-only: a new method is a line in registry.py
    # other spellings: case, '-' and '_' ignored, and the aliases
    assert get_method("Grad-CAM") is REGISTRY["gradcam"] and get_method("gradcam_pp") is REGISTRY["gradcam++"]
    assert get_method("LIME") is REGISTRY["lime"] and get_method("Score_CAM").name == "scorecam"
    with pytest.raises(ExplainError, match=re.escape(f"unknown method 'occlusion'; choose one of {', '.join(METHODS)}")):
        get_method("occlusion")


def test_cli_and_dataset_script_read_the_registry(tmp_path, capsys):
    import argparse
    import importlib.util
    import re

    from artlens.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    method = next(a for a in sub.choices["explain"]._actions if "--method" in a.option_strings)
    listed = re.split(r", | or ", method.help.split(" (")[0])
    assert tuple(listed) == METHODS and method.default in METHODS
    # an unknown method is refused before any model is loaded, naming the registry's methods
    assert main(["explain", "--method", "gradcam,occlusion", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"choose from {', '.join(METHODS)}" in capsys.readouterr().err

    spec = importlib.util.spec_from_file_location("explain_dataset", Path(__file__).resolve().parents[1] / "scripts" / "explain_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.parse_args(["--model", "style", "--data", "x", "--out", "o", "--method", *METHODS]).method == list(METHODS)
    with pytest.raises(SystemExit):
        script.parse_args(["--model", "style", "--data", "x", "--out", "o", "--method", "occlusion"])
    assert f"choose from {', '.join(METHODS)}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_class_maps(imagenet, wide_painting):
    """Every registry entry through explain(), for two ImageNet classes of one real painting.

    CAMs at blocks.2 (40 channels, so Score-CAM needs 40 masked passes, not 320); LIME with 30 samples.
    Attention rollout needs a ViT: refused here, run in test_cams_on_other_architectures."""
    top = explain(imagenet, wide_painting, "gradcam", layer="blocks.2").target
    other = label_names(imagenet).index("jigsaw puzzle")
    other = other if other != top else other + 1
    out = {}
    with pytest.raises(ExplainError, match="needs a ViT"):
        explain(imagenet, wide_painting, "rollout")
    for name, m in REGISTRY.items():
        if name == "rollout":
            continue
        kw = {"layer": "blocks.2"} if m.takes_layer else {"num_samples": 30, "batch_size": 30}
        out[name] = [explain(imagenet, wide_painting, name, target=t, **kw) for t in (top, other)]
    return out, (top, other)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "rollout"])
def test_every_method_dispatches_and_maps_onto_the_image(two_class_maps, imagenet, name):
    maps, targets = two_class_maps
    m = REGISTRY[name]
    for e, t in zip(maps[name], targets):
        assert isinstance(e, Explanation) and e.method == name and e.target == t
        assert e.heatmap.shape == (200, 300) and e.heatmap.dtype == np.float32
        assert 0 <= e.heatmap.min() and e.heatmap.max() == pytest.approx(1.0, abs=1e-5)
        assert e.heatmap[:, :49].max() == 0  # outside the centre crop
        if m.takes_layer:
            assert e.extra["layer"] == "blocks.2" and e.extra["class_specific"] == m.class_specific
        else:
            assert "layer" not in e.extra
    a, b = (e.heatmap for e in maps[name])
    if m.class_specific:
        assert not np.allclose(a, b, atol=1e-3), f"{name}: the same map for two classes"
    else:
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert _no_hooks(imagenet)


# ---------------------------------------------------------------- CAMs on the offline backbone

@pytest.mark.parametrize("method", [m for m in CAM_METHODS if m != "scorecam"])
def test_cam_maps_back_to_the_image(imagenet, wide_painting, method):
    e = explain(imagenet, wide_painting, method)
    assert isinstance(e, Explanation) and e.method == method
    assert e.heatmap.shape == (200, 300) and e.heatmap.dtype == np.float32
    assert 0 <= e.heatmap.min() and e.heatmap.max() == pytest.approx(1.0, abs=1e-5)
    # shorter side 200 -> 224, centre crop 224: the model saw x in [50, 250)
    assert e.extra["box"] == pytest.approx([50, 0, 250, 200], abs=1)
    assert e.heatmap[:, :49].max() == 0 and e.heatmap[:, 251:].max() == 0
    assert e.heatmap[:, 55:245].std() > 0.01
    assert e.extra["layer"] == "blocks.6" and e.extra["input_map"].shape == (224, 224)
    assert e.label == label_names(imagenet)[e.target] and 0 < e.score <= 1
    assert e.extra["top"][0]["label"] == e.label
    assert _no_hooks(imagenet)


def test_scorecam_and_named_layers(imagenet, wide_painting):
    e = explain(imagenet, wide_painting, "scorecam", layer="blocks.1")  # 24 channels: 24 masked passes
    assert e.heatmap.shape == (200, 300) and e.heatmap.max() == pytest.approx(1.0, abs=1e-5)
    names = layer_names(imagenet)
    assert names[-1] == "blocks.6" and "blocks.4" in names
    # layer-by-layer: a shallower stage gives a finer, different map
    deep, shallow = (explain(imagenet, wide_painting, "gradcam", layer=n).extra["input_map"] for n in ("blocks.6", "blocks.3"))
    assert not np.allclose(deep, shallow, atol=0.05)
    with pytest.raises(ExplainError, match="no layer 'blocks.99'"):
        explain(imagenet, wide_painting, "gradcam", layer="blocks.99")
    assert _no_hooks(imagenet)


def test_hooks_and_grad_flags_restored_after_errors(imagenet, wide_painting):
    flags = [p.requires_grad for p in imagenet.parameters()]
    with pytest.raises(ExplainError, match="no spatial grid"):
        explain(imagenet, wide_painting, "gradcam", layer="classifier")
    assert _no_hooks(imagenet)
    assert [p.requires_grad for p in imagenet.parameters()] == flags


def test_batch_equals_single_and_targets(imagenet, styles):
    files = [styles[s][20] for s in STYLES]
    batch = explain_batch(imagenet, files, "gradcam", batch_size=2)
    for f, b in zip(files, batch):
        one = explain(imagenet, f, "gradcam")
        assert one.target == b.target
        np.testing.assert_allclose(one.heatmap, b.heatmap, atol=1e-4)
    e = explain(imagenet, files[0], "gradcam", target="jigsaw puzzle")
    assert e.label == "jigsaw puzzle" and e.target == label_names(imagenet).index("jigsaw puzzle")
    with pytest.raises(ExplainError, match="not one of the model's labels"):
        explain(imagenet, files[0], "gradcam", target="Cubism")
    with pytest.raises(ExplainError, match="unknown method"):
        explain(imagenet, files[0], "occlusion")
    assert set(METHODS) == {"gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "rollout", "lime"}


# ---------------------------------------------------------------- transformers and other families

ARCHS = [
    # (timm name, kwargs for a small random-weight variant, default layer)
    ("vit_tiny_patch16_224", {}, "blocks.11.norm1"),
    ("deit_tiny_distilled_patch16_224", {"depth": 2}, "blocks.1.norm1"),
    ("swin_tiny_patch4_window7_224", {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 3, 6)}, "layers.3"),
    ("convnext_atto", {"depths": (1, 1, 1, 1)}, "stages.3"),
]


@pytest.mark.parametrize("name,kwargs,layer", ARCHS, ids=[a[0] for a in ARCHS])
def test_cams_on_other_architectures(name, kwargs, layer, wide_painting):
    torch.manual_seed(0)
    m = load_model(name, pretrained=False, num_classes=4, label_names=list("abcd"), **kwargs)
    assert default_layer(m) == layer
    methods = CAM_METHODS if name.startswith("deit") else [x for x in CAM_METHODS if x != "scorecam"]
    for method in methods:
        e = explain(m, wide_painting, method, target="c")
        assert e.label == "c" and e.heatmap.shape == (200, 300), method
        inner = e.extra["input_map"]
        assert inner.shape == (224, 224)
        # a real spatial map: not constant, which a wrong token reshape or a zero gradient would give
        assert inner.std() > 1e-3 and inner.max() == pytest.approx(1.0, abs=1e-5), method
    assert _no_hooks(m)
    if name.startswith(("vit", "deit")):
        fused = [b.attn.fused_attn for b in m.blocks]
        e = explain(m, wide_painting, "rollout", target="c")
        assert e.method == "rollout" and e.heatmap.shape == (200, 300) and e.extra["input_map"].std() > 1e-3
        assert default_method(m) == "rollout" and _no_hooks(m)
        assert [b.attn.fused_attn for b in m.blocks] == fused  # fused attention put back
    else:
        assert default_method(m) == "gradcam"
    if name.startswith("vit"):
        e = explain(m, wide_painting, "gradcam", layer="blocks.5")
        assert e.extra["input_map"].std() > 1e-3


# ---------------------------------------------------------------- LIME

def test_lime_repeatable_with_progress(imagenet, wide_painting):
    seen = []
    a = explain(imagenet, wide_painting, "lime", num_samples=40, batch_size=10, progress=seen.append)
    b = explain(imagenet, wide_painting, "lime", num_samples=40, batch_size=10)
    c = explain(imagenet, wide_painting, "lime", num_samples=40, batch_size=10, seed=1)
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert not np.array_equal(a.heatmap, c.heatmap)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) >= 3
    assert a.heatmap.shape == (200, 300) and a.heatmap.max() == pytest.approx(1.0)
    assert 20 <= a.extra["num_segments"] <= 60 and a.extra["positive_segments"]
    assert a.heatmap[:, :49].max() == 0
    with pytest.raises(ExplainError, match="unknown segmentation"):
        explain(imagenet, wide_painting, "lime", segmentation="felzenszwalb")
    assert a.extra["design"] == "hadamard"
    d = explain(imagenet, wide_painting, "lime", num_samples=40, batch_size=10, design="random")
    assert d.extra["design"] == "random" and not np.array_equal(a.heatmap, d.heatmap)
    with pytest.raises(ExplainError, match="unknown LIME design"):
        explain(imagenet, wide_painting, "lime", design="sobol")


def test_lime_masks_are_an_orthogonal_design():
    from artlens.explain.lime import design_masks, hadamard

    orders = [n for n in range(1, 101) if hadamard(n) is not None]
    assert {1, 2, 4, 12, 20, 24, 32, 40, 44, 48, 60, 64, 68, 72, 80, 84, 88, 96} <= set(orders)
    for n in orders:
        h = hadamard(n).astype(int)
        assert (h @ h.T == n * np.eye(n)).all() and (h[0] == 1).all() and (h[:, 0] == 1).all(), n
    m = design_masks(64, 40, seed=3).astype(int)
    assert m.shape == (64, 40) and m[0].all()  # the first copy is the image itself
    # every superpixel off in half the copies, every pair of superpixels in each on/off combination a
    # quarter of the time: the columns are orthogonal, so each superpixel's weight is fitted independently
    assert (m.sum(0) == 32).all()
    both = m.T @ m
    assert (both[~np.eye(40, dtype=bool)] == 16).all()
    assert not np.array_equal(m, design_masks(64, 40, seed=4))
    # more superpixels than samples: the first rows of a larger design, the count as asked
    few = design_masks(8, 40)
    assert few.shape == (8, 40) and few[0].all() and len({r.tobytes() for r in few}) == 8
    assert design_masks(200, 40).shape == (200, 40)
    rnd = design_masks(64, 40, "random")
    assert rnd[0].all() and (rnd[0::2] == ~rnd[1::2]).all()  # LIME's coin flips, in complementary pairs


def test_overlays(imagenet, wide_painting):
    e = explain(imagenet, wide_painting, "gradcam")
    img = overlay(wide_painting, e)
    assert img.size == (300, 200) and img.mode == "RGB"
    a, b = np.asarray(img, dtype=float), np.asarray(wide_painting, dtype=float)
    hot = e.heatmap > 0.8
    assert np.abs(a - b)[hot].mean() > 20  # coloured where the heat is
    assert np.allclose(a[:, :45], b[:, :45] * 0.5, atol=1.01)  # outside the crop: dimmed, not coloured
    lime = explain(imagenet, wide_painting, "lime", num_samples=30, batch_size=30)
    arr = np.asarray(overlay(wide_painting, lime))
    green = (arr[..., 0] == 0) & (arr[..., 1] == 255) & (arr[..., 2] == 0)
    assert green.sum() > 50  # outlines of the superpixels that support the class
    with pytest.raises(ExplainError, match="does not match the image"):
        overlay(wide_painting.resize((100, 100)), e)


# ---------------------------------------------------------------- faithfulness on real paintings

def _composite(left: Image.Image, right: Image.Image) -> Image.Image:
    out = Image.new("RGB", (256, 256))
    out.paste(left.resize((256, 256)).crop((64, 0, 192, 256)), (0, 0))
    out.paste(right.resize((256, 256)).crop((64, 0, 192, 256)), (128, 0))
    return out


@pytest.mark.slow
def test_heat_follows_the_class_evidence(trained, styles):
    """Half Baroque, half Surrealism: each class's Grad-CAM heat lies on its own half."""
    wins = 0
    pairs = [(styles["Baroque"][i], styles["Surrealism"][i]) for i in (30, 31, 32, 33)]
    for a, b in pairs:
        img = _composite(open_image(a), open_image(b))
        for target, side in (("Baroque", 0), ("Surrealism", 1)):
            h = explain(trained, img, "gradcam", target=target).heatmap
            halves = h[:, :128].sum(), h[:, 128:].sum()
            wins += halves[side] > halves[1 - side]
    assert wins >= 7, wins


@pytest.mark.slow
def test_gradcam_and_lime_beat_random_on_deletion(trained, styles):
    files = [styles[s][i] for s in STYLES for i in (30, 31)]
    scores = {"gradcam": [], "lime": [], "random": []}
    for f in files:
        g = explain(trained, f, "gradcam")
        assert g.label in STYLES
        scores["gradcam"].append(deletion_score(trained, f, g, steps=12))
        scores["lime"].append(deletion_score(trained, f, explain(trained, f, "lime", target=g.target), steps=12))
        scores["random"].append(np.mean([deletion_score(trained, f, random_map(g.heatmap.shape, seed=s), target=g.target,
                                                        steps=12) for s in range(2)]))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["gradcam"] < mean["random"] and mean["lime"] < mean["random"], mean
    # insertion goes the other way: adding the important pixels first recovers the class sooner
    f = files[0]
    g = explain(trained, f, "gradcam")
    ins = deletion_score(trained, f, g, mode="insertion", steps=12)
    ins_r = deletion_score(trained, f, random_map(g.heatmap.shape, seed=0), target=g.target, mode="insertion", steps=12)
    assert 0 <= ins_r < ins <= 1


# ---------------------------------------------------------------- CLI and dataset script

@pytest.fixture(scope="module")
def trained_folder(trained, tmp_path_factory):
    from artlens.export import save_model_folder

    return save_model_folder(trained, tmp_path_factory.mktemp("explain") / "styles3")


@pytest.mark.slow
def test_cli_explain(trained_folder, styles, tmp_path, capsys):
    from artlens.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for f in (styles["Baroque"][30], styles["Surrealism"][30]):
        (src / f.name).write_bytes(f.read_bytes())
    (src / "notes.jpg").write_text("not a picture")
    out = tmp_path / "out"
    rc = main(["explain", "--model", str(trained_folder), "--method", "gradcam,lime", "--target", "Baroque",
               "--num-samples", "30", "--faithfulness", str(src), "--out", str(out)])
    assert rc == 1  # the bad file is reported, the others are explained
    recs = json.loads((out / "explanations.json").read_text())
    ok = [r for r in recs if "error" not in r]
    assert len(ok) == 4 and {r["method"] for r in ok} == {"gradcam", "lime"}
    assert all(r["label"] == "Baroque" and 0 <= r["deletion_auc"] <= 1 for r in ok)
    assert sum("not an image" in r["error"] for r in recs if "error" in r) == 2
    for r in ok:
        assert Image.open(out / r["overlay"]).size == (256, 256)
    assert (out / "explain_config.yaml").exists()
    rc = main(["explain", "--model", str(trained_folder), "--layer", "all", str(src / styles["Baroque"][30].name),
               "--out", str(tmp_path / "layers")])
    assert rc == 0 and len(list((tmp_path / "layers").glob("*.png"))) == len(layer_names(load_model(str(trained_folder))))
    assert main(["explain", "--model", str(trained_folder), "--target", "Cubism", str(src), "--out", str(out)]) == 2
    assert "not one of the model's labels" in capsys.readouterr().err


@pytest.mark.slow
def test_class_average_maps_and_script(trained, trained_folder, data_dir, tmp_path):
    import importlib.util

    from artlens.data import load_data

    ds = load_data(str(data_dir / "paintings_styles10"))
    counts = {}
    maps = class_average_maps(trained, ds, "gradcam", size=32, max_per_class=2, counts=counts)
    assert sorted(maps) == sorted(set(ds["label"])) and len(maps) == 10
    assert all(v.shape == (32, 32) and 0 <= v.min() and v.max() <= 1 for v in maps.values())
    assert all(c == 2 for c in counts.values())
    fig = plot_class_maps({"real": maps, "other": {k: maps[k] for k in STYLES}}, tmp_path / "grid.png")
    assert len(fig.axes) == 2 * 10 + 1 and (tmp_path / "grid.png").stat().st_size > 1000

    spec = importlib.util.spec_from_file_location("explain_dataset", Path(__file__).resolve().parents[1] / "scripts" / "explain_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: [{trained_folder}, tf_efficientnet_lite0]\nname: [styles3, imagenet]\nmax_per_class: 2\nsize: 24\n")
    out = tmp_path / "maps"
    summary = script.main(script.parse_args(["--config", str(cfg), "--data", str(data_dir / "paintings_styles10"),
                                             "--method", "gradcam", "--out", str(out)]))
    assert set(summary) == {"styles3/gradcam", "imagenet/gradcam"}
    assert summary["styles3/gradcam"]["Baroque"]["images"] == 2
    arrays = np.load(out / "class_maps.npz")
    assert arrays["imagenet/gradcam/Symbolism"].shape == (24, 24)
    assert (out / "class_maps.png").exists() and (out / "styles3" / "gradcam" / "Surrealism.png").exists()
    assert (out / "explain_dataset_config.yaml").exists()
