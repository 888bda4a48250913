"""Explanations of the shipped style model (linear head on the frozen CLIP ViT-B/16) on real paintings."""
import math

import numpy as np
import pytest
import torch

from artlens.explain import ExplainError, default_method, explain
from artlens.images import list_images, open_image
from artlens.models import load_model


@pytest.fixture(scope="module")
def style():
    return load_model("style")


@pytest.fixture(scope="module")
def painting(data_dir):
    """A real Sisley, made non-square (300 x 220) so the centre crop cuts its sides."""
    return open_image(list_images(data_dir / "paintings_styles10" / "Impressionism")[0]).resize((300, 220))


def _calls(module):
    seen = []
    return seen, module.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))


def test_lime_scores_each_batch_of_copies_in_one_backbone_call(style, painting):
    seen, hook = _calls(style.patch_embed.proj)
    try:
        e = explain(style, painting, "lime", num_samples=24, batch_size=8)
    finally:
        hook.remove()
    unique, again = e.extra["unique_samples"], e.extra["refine_samples"]
    assert 2 <= unique <= 24 and again == 12
    # one full-size pass for the prediction, one call per batch of 8 copies (a per-copy loop would make
    # `unique` calls of 1), then the refining copies at the model's own size, 8 at a time too
    assert seen[0] == 1 and len(seen) == 1 + math.ceil(unique / 8) + 2, seen
    assert sum(seen[1:]) == unique + again and max(seen) == 8, seen


def test_lime_refine_reorders_the_strongest_superpixels_at_full_size(style, painting):
    """The second step re-ranks the first fit's 11 strongest superpixels by 12 copies scored at 224 px
    (the first fit's at 160 px): same set of weights, another order among those 11, the rest untouched."""
    a = explain(style, painting, "lime", num_samples=40, refine=0)
    b = explain(style, painting, "lime", num_samples=40)
    assert a.extra["refined"] == [] and a.extra["refine_samples"] == 0 and a.extra["size"] == 160
    top = np.argsort(-a.extra["weights"], kind="stable")[:11]
    assert b.extra["refine_samples"] == 12 and len(b.extra["refined"]) == 11 and set(b.extra["refined"]) == set(top.tolist())
    np.testing.assert_array_equal(np.sort(b.extra["weights"]), np.sort(a.extra["weights"]))
    rest = np.setdiff1d(np.arange(a.extra["num_segments"]), top)
    np.testing.assert_array_equal(b.extra["weights"][rest], a.extra["weights"][rest])
    # on this painting the full-size copies do change the order (the point of the step)
    assert b.extra["refined"] != top.tolist()
    assert np.all(np.diff(b.extra["weights"][b.extra["refined"]]) <= 0)
    with pytest.raises(ExplainError, match="refine=-1"):
        explain(style, painting, "lime", refine=-1)


@pytest.mark.parametrize("method", ["rollout", "gradcam", "lime"])
def test_maps_have_the_image_size_and_real_mass(style, painting, method):
    kw = {"num_samples": 24} if method == "lime" else {}
    e = explain(style, painting, method, **kw)
    assert e.heatmap.shape == (220, 300) and e.heatmap.dtype == np.float32
    assert e.heatmap.max() == pytest.approx(1.0, abs=1e-5) and e.heatmap.min() >= 0
    inside = e.heatmap[:, 40:260]
    # heat spread over the crop (at least 0.5% of it warm), not one hot pixel, and not a constant map
    warm = (inside > 0.25).mean()
    assert 0.005 < inside.mean() < 0.9 and warm > 0.005 and inside.std() > 0.05, (inside.mean(), warm, inside.std())
    assert e.heatmap[:, :38].max() == 0  # the strip the centre crop cut off
    assert not any(m._forward_hooks for m in style.modules())


@pytest.mark.parametrize("method", ["rollout", "gradcam", "lime"])
def test_explaining_another_class_changes_the_map(style, painting, method):
    kw = {"num_samples": 24} if method == "lime" else {}
    a = explain(style, painting, method, target="Impressionism", **kw)
    b = explain(style, painting, method, target="Surrealism", **kw)
    assert (a.label, b.label) == ("Impressionism", "Surrealism")
    diff = np.abs(a.heatmap - b.heatmap).mean()
    assert diff > 0.02, f"{method}: maps for two classes differ by {diff:.4f} on average"


def test_the_vit_default_is_rollout_and_eigencam_is_class_agnostic(style, painting):
    assert default_method(style) == "rollout" and explain(style, painting).method == "rollout"
    a = explain(style, painting, "eigencam", target="Impressionism")
    b = explain(style, painting, "eigencam", target="Surrealism")
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)


def test_lime_scores_low_res_copies_but_reports_the_models_prediction(style, painting):
    from artlens.explain.geometry import get_prep

    e = explain(style, painting, "lime", num_samples=8)
    prep = get_prep(style)
    with torch.no_grad():
        p = style(prep.tensor(prep.crop(painting))[None]).softmax(-1)[0]
    assert e.extra["size"] == 160 and e.extra["input_size"] == [224, 224]
    assert e.target == int(p.argmax()) and e.score == pytest.approx(float(p.max()), abs=1e-4)


def test_the_multi_block_artist_model_gets_rollout_and_low_res_lime(painting):
    """The shipped artist model reads blocks 5, 7, 9, 11 (BlockTokens): rollout reads its ViT's attention, and
    LIME's 160 px copies go through the same blocks and head as its prediction (checked at full size)."""
    from artlens.explain.lime import _scorer
    from artlens.models import BlockTokens

    artist = load_model("artist")
    assert isinstance(artist, BlockTokens) and default_method(artist) == "rollout"
    e = explain(artist, painting, "rollout")
    assert e.heatmap.shape == (220, 300) and e.heatmap.max() > 0.5 and e.heatmap.mean() > 0.01
    other = explain(artist, painting, "rollout", target=(e.target + 1) % 50)
    assert not np.allclose(e.heatmap, other.heatmap, atol=0.05)
    lime = explain(artist, painting, "lime", num_samples=8)
    assert lime.extra["size"] == 160 and lime.target == e.target
    # the any-size forward at the model's own size is the model
    from artlens.explain.geometry import get_prep

    prep = get_prep(artist)
    x = prep.tensor(prep.crop(painting))
    seg = np.zeros((224, 224), dtype=np.int64)
    artist.bf16 = False  # both in fp32: the same numbers, not only the same answer
    with torch.no_grad():
        a = _scorer(artist, x, seg, torch.zeros(1, 3, 1, 1), 224)(torch.ones(1, 1, dtype=torch.bool))
        b = artist(x[None])
    assert torch.allclose(a, b, atol=1e-3)
