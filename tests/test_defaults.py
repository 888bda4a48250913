"""The embedded default models (artlens/defaults/{style,artist,origin}) as shipped in the package."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from artlens.models import DEFAULTS_DIR, label_names, load_model
from artlens.predict import Predictor

NAMES = ("style", "artist", "origin")


def _folders(data_dir: Path, name: str) -> list[str]:
    return sorted(p.name for p in (data_dir / name).iterdir() if p.is_dir())


def _held_out(name: str) -> set[str]:
    """File names the shipped model never trained on (its split.json test part)."""
    return set(json.loads((DEFAULTS_DIR / name / "split.json").read_text())["test"])


def _spread(files: list, n: int) -> list:
    """n files evenly spaced over a sorted list (several artists, not the first one's files only)."""
    return [files[round(i * (len(files) - 1) / max(n - 1, 1))] for i in range(n)] if len(files) >= n else files


@pytest.fixture(scope="module")
def predictors():
    return {name: Predictor(name, task=name) for name in NAMES}


def test_folders_are_complete_fp16_and_small():
    total = 0
    for name in NAMES:
        folder = DEFAULTS_DIR / name
        for f in ("config.json", "model.safetensors", "README.md"):
            assert (folder / f).is_file(), f"{folder / f} missing: run `make defaults`"
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as sf:
            dtypes = {sf.get_slice(k).get_dtype() for k in sf.keys()}
        # the detector's heads read raw block tokens whose scales differ by orders of magnitude: fp32
        want = {"F32"} if name == "origin" else {"F16"}
        assert dtypes == want, f"{name}: expected {want} weights, found {dtypes}"
        card = (folder / "README.md").read_text()
        assert "Limitations" in card and "Held-out" in card, f"{name}: the card must state measured numbers and limits"
        total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert total <= 30e6, f"default folders take {total / 1e6:.1f} MB (limit 30 MB)"


def test_label_names_are_the_data_folder_names(data_dir):
    from artlens.paintings import STYLES

    assert label_names(load_model("style")) == list(STYLES)  # the 10 of paintings_styles10 and 7 WikiArt styles
    assert set(_folders(data_dir, "paintings_styles10")) <= set(STYLES)
    assert label_names(load_model("artist")) == _folders(data_dir, "paintings_artists50")
    assert sorted(label_names(load_model("origin"))) == ["ai", "human"]


def test_folders_match_their_recipes():
    """Each shipped folder was built from its recipe as committed: same training settings, and the stored
    prediction views are the recipe's predict_tta (else tta). A recipe edited without `make defaults` fails."""
    import yaml

    for name in NAMES:
        recipe = yaml.safe_load((DEFAULTS_DIR.parents[1] / "trainers" / "configs" / f"default_{name}.yaml").read_text())
        built = yaml.safe_load((DEFAULTS_DIR / name / "train_config.yaml").read_text())
        for k, v in recipe.items():
            if k not in ("data", "output_dir"):
                assert built.get(k) == v, f"{name}: recipe {k}={v!r}, shipped folder built with {built.get(k)!r}: run `make defaults`"
        if name == "origin":
            cfg = load_model("origin").pretrained_cfg
            assert cfg["artlens_blocks"] == recipe["blocks"] and cfg["artlens_tokens"] == recipe["tokens"]
            assert cfg["artlens_canonical"] == [recipe["canonical_size"], recipe["canonical_quality"]]
        want = recipe.get("predict_tta") or recipe.get("tta", "none")
        assert Predictor(name, task=name).tta == want


def test_shipped_classifiers_export_to_whole_timm_folders(tmp_path):
    """The shipped folders hold the classifier of a frozen pretrained backbone (named in config.json);
    `artlens export` writes the whole style model, and plain timm loads that with the same logits; artist
    and origin read several blocks and say they cannot be exported whole."""
    import timm
    import yaml
    from safetensors import safe_open

    from artlens.cli import main as cli_main

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name in ("style",):
        recipe = yaml.safe_load((DEFAULTS_DIR.parents[1] / "trainers" / "configs" / f"default_{name}.yaml").read_text())
        cfg = json.loads((DEFAULTS_DIR / name / "config.json").read_text())
        assert cfg["artlens"]["artlens_backbone"] == recipe["model"]
        with safe_open(str(DEFAULTS_DIR / name / "model.safetensors"), "pt") as sf:
            assert set(sf.keys()) == {"head.weight", "head.bias"}
            assert sf.get_slice("head.weight").get_shape()[0] == len(cfg["label_names"])
        ours = load_model(name).float().eval()
        assert cli_main(["export", name, str(tmp_path / name)]) == 0
        plain = timm.create_model(f"local-dir:{tmp_path / name}", pretrained=True).float().eval()
        assert plain.num_classes == ours.num_classes
        with torch.no_grad():
            a, b = ours(x), plain(x)
        assert torch.allclose(a, b, atol=1e-4), f"{name}: timm and artlens loads disagree"
        shutil.rmtree(tmp_path / name)  # 344 MB each
    # artist and the detector read several blocks (artlens.models.BlockTokens): no plain timm architecture holds them
    with safe_open(str(DEFAULTS_DIR / "origin" / "model.safetensors"), "pt") as sf:
        assert set(sf.keys()) == {"head.weight", "head.bias", "generator_head.weight", "generator_head.bias"}
    with safe_open(str(DEFAULTS_DIR / "artist" / "model.safetensors"), "pt") as sf:
        assert set(sf.keys()) == {"head.weight", "head.bias"}
        assert sf.get_slice("head.weight").get_shape() == [50, 4 * 768]
    for name in ("artist", "origin"):
        assert cli_main(["export", name, str(tmp_path / name)]) == 2


def test_origin_has_a_validation_threshold_and_reports_a_verdict(predictors):
    cfg = load_model("origin").pretrained_cfg
    assert cfg["artlens_positive"] == "ai"
    assert 0.0 < float(cfg["artlens_threshold"]) < 1.0
    card = (DEFAULTS_DIR / "origin" / "README.md").read_text()
    assert f"{float(cfg['artlens_threshold']):.3f}" in card
    # the verdicts on held-out images are tested in tests/test_detect.py


def test_style_predictions_on_real_paintings(predictors, data_dir):
    names = _folders(data_dir, "paintings_styles10")
    files = [sorted((data_dir / "paintings_styles10" / s).glob("*.jpg"))[5] for s in names]
    res = predictors["style"].predict([str(f) for f in files])
    correct = sum(r["label"] == s for r, s in zip(res, names))
    assert correct >= 8, f"style: {correct}/10 right: {[r['label'] for r in res]}"
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in res)


def test_artist_predictions_on_held_out_paintings(predictors, data_dir):
    held = _held_out("artist")
    # the model trained on both human sets (duplicates removed): a held-out painting may sit in either
    both = sorted(data_dir.glob("paintings_*/*/*.jpg"))
    by_painter = {}
    for f in both:
        if f.name in held:
            by_painter.setdefault(f.name.rsplit("_", 1)[0], f)
    # one held-out painting each of 17 painters spread over the 50 (the shipped split keeps a few per painter)
    names = _spread(sorted(by_painter), 17)
    assert len(names) == 17, f"only {len(by_painter)} painters have held-out paintings in split.json"
    files = [by_painter[a] for a in names]
    res = predictors["artist"].predict([str(f) for f in files])
    top1 = sum(r["label"] == a for r, a in zip(res, names))
    top5 = sum(a in [t["label"] for t in r["top_k"]] for r, a in zip(res, names))
    assert top1 >= 8 and top5 >= 13, f"artist: top-1 {top1}/17, top-5 {top5}/17 on held-out paintings"
    assert np.isclose(sum(res[0]["probs"].values()), 1, atol=1e-3)


def test_build_defaults_prepare_only_makes_the_data_folders(data_dir, tmp_path):

    from tests.conftest import load_script

    bd = load_script("build_defaults")
    work, out = tmp_path / "work", tmp_path / "out"
    got = bd.main(bd.parse_args(["--data", str(data_dir), "--work-dir", str(work), "--out-dir", str(out),
                                 "--prepare-only"]))
    assert set(got) == {"style", "artist", "origin"}
    count = lambda d: {p.name: len(list(p.glob("*.jpg"))) for p in d.iterdir()}  # noqa: E731
    style, artist = count(work / "data_style"), count(work / "data_artist")
    from artlens.paintings import STYLES

    assert sorted(style) == list(STYLES)
    assert sum(style.values()) == 2776 + 2703 and len(artist) == 50 and sum(artist.values()) == 3400
    table = (work / "data_origin.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["path", "origin", "source", "group"] and len(table) == 1 + 7798
    first = table[1].split("\t")
    assert (data_dir / first[0]).is_file() and first[1] in ("human", "ai")
    assert not any(out.iterdir()) and not (work / "build_config.yaml").exists()  # nothing trained or shipped


def test_style_and_artist_share_one_backbone_pass(predictors, data_dir):
    """predict_together (what the Space's /classify calls) gives the answers of separate predictions
    with one backbone pass for the two classifiers of the same frozen CLIP tower (style reads its final
    class token, artist several blocks: one pass reads both)."""
    from artlens.models import BlockTokens
    from artlens.predict import predict_together

    files = [str(sorted((data_dir / "paintings_styles10" / s).glob("*.jpg"))[3]) for s in ("Baroque", "Symbolism")]
    style, artist = predictors["style"], predictors["artist"]
    assert isinstance(artist.model, BlockTokens) and len(artist.model.blocks) > 1
    assert style.backbone_key() == artist.backbone_key() is not None
    alone = [style.predict(files), artist.predict(files)]
    calls = []
    hooks = [m.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
             for m in (style.model.patch_embed, artist.model.backbone.patch_embed)]
    try:
        together = predict_together([style, artist], files)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [len(files)]  # one batch through one backbone
    for a, b in zip(alone, together):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        for ra, rb in zip(a, b):  # style alone runs in fp32, together under the artist's bf16 autocast
            assert max(abs(ra["probs"][k] - rb["probs"][k]) for k in ra["probs"]) < 0.02
