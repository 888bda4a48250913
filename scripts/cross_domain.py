#!/usr/bin/env python
"""Real vs synthetic: train on real, on synthetic and on both; test each on real and on synthetic.

    python scripts/cross_domain.py --real ../shared/data/paintings_styles10 \
        --synthetic ../shared/data/ai_sd15_styles15 --output-dir runs/cross_domain

The three models share one recipe (trainers/train.py's flags, trained in this process by
``artlens.training.train``; by default a linear probe on the cached
features of the offline tf_efficientnet_lite0). Only the labels both sets have are used. Each set
is split once (``group``: no artist in two splits) and every model sees the same real and
synthetic test images. Writes ``cross_domain.md`` / ``cross_domain.json`` (the 3 x 2 table),
``maps_<test set>.png`` (per model, class-average Grad-CAM and LIME maps side by side), the three
model folders under ``models/`` and the resolved config.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import yaml

from artlens.config import parse_with_config, save_config
from artlens.data import DataError, load_data, split_data
from artlens.files import write_json, write_text

TRAININGS = ("real", "synthetic", "real+synthetic")
TESTS = ("real", "synthetic")
# the shared recipe: frozen ImageNet backbone, classifier trained on cached features
DEFAULT_TRAIN = {"model": "tf_efficientnet_lite0", "freeze": "linear_probe", "cache_features": True,
                 "epochs": 30, "lr": 3e-3, "batch_size": 32, "aug": "none", "class_weights": True,
                 "metric": "balanced_accuracy"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags")
    p.add_argument("--real", default=None, help="imagefolder of real paintings (<label>/<image>)")
    p.add_argument("--synthetic", default=None, help="imagefolder of generated images (e.g. from generate_synthetic.py)")
    p.add_argument("--labels", nargs="+", default=None, help="labels to use (default: every label both sets have)")
    p.add_argument("--real-split", default="group", choices=["random", "group"], help="group: artist-disjoint")
    p.add_argument("--synthetic-split", default="group", choices=["random", "group"])
    p.add_argument("--real-group-column", default=None, help="metadata column with the artist (default: file names)")
    p.add_argument("--synthetic-group-column", default=None,
                   help="e.g. artist (style labels) or motif (artist labels) for sets from generate_synthetic.py")
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--val-size", type=float, default=0.1)
    p.add_argument("--max-per-class", type=int, default=None, help="cap images per label and set before splitting")
    p.add_argument("--model", default=DEFAULT_TRAIN["model"])
    p.add_argument("--train-config", default=None, help="trainers/train.py YAML for the shared recipe")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--explain", default="gradcam,lime", help="methods for the class-average maps ('' for none)")
    p.add_argument("--explain-on", default="real", help="test sets to map: real, synthetic or real,synthetic")
    p.add_argument("--explain-per-class", type=int, default=6, help="test images per class behind each map")
    p.add_argument("--lime-samples", type=int, default=100)
    p.add_argument("--map-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=None)
    args = parse_with_config(p, argv)
    if not args.real or not args.synthetic or not args.output_dir:
        p.error("--real, --synthetic and --output-dir are required (on the command line or in --config)")
    return args


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # no symlinks (some Windows setups): copy
        shutil.copy2(src, dst)


def load_domain(path, group_column, labels, max_per_class, seed):
    from artlens.data import cap_per_class

    ds = load_data(str(path), group_column=group_column)
    if labels is not None:
        ds = ds.filter(lambda ex: ex["label"] in labels, desc="labels")
    return cap_per_class(ds, max_per_class, seed=seed)


def split_domain(ds, name: str, by: str, test_size: float, val_size: float, seed: int) -> dict:
    split = split_data(ds, test_size=test_size, val_size=val_size, by=by, seed=seed)
    labels = list(ds["label"])
    for part in ("train", "test"):
        have = {labels[i] for i in split[part]}
        missing = sorted(set(labels) - have)
        if missing:
            raise DataError(
                f"the {name} {part} split has no images of {missing}: with --{name}-split {by} every label needs "
                f"at least 2 {'artists' if by == 'group' else 'images'}; use --{name}-split random, another "
                f"--{name}-group-column, or drop these labels (--labels)")
    return split


def build_folders(work: Path, real, synthetic, splits: dict) -> dict:
    """One folder with every image (linked) plus per-set test folders; returns file names per part."""
    real_names = {os.path.basename(p["path"]) for p in real["image"]}
    prefix = "synthetic_" if real_names & {os.path.basename(p["path"]) for p in synthetic["image"]} else ""
    names = {}
    for dom, ds in (("real", real), ("synthetic", synthetic)):
        paths = [Path(im["path"]) for im in ds["image"]]
        labels = list(ds["label"])
        for part, idx in splits[dom].items():
            names[(dom, part)] = []
            for i in idx:
                fname = (prefix if dom == "synthetic" else "") + paths[i].name
                _link(paths[i], work / "all" / labels[i] / fname)
                if part == "test":
                    _link(paths[i], work / f"test_{dom}" / labels[i] / fname)
                names[(dom, part)].append(fname)
    return names


def to_markdown(table: dict, counts: dict, metric: str = "accuracy") -> str:
    head = "| trained on \\ tested on | " + " | ".join(f"{t} (n={counts[t]})" for t in TESTS) + " |\n"
    head += "|---|" + "---|" * len(TESTS) + "\n"
    return head + "".join(
        f"| {tr} | " + " | ".join(f"{table[tr][t][metric]:.3f}" for t in TESTS) + " |\n" for tr in TRAININGS)


def main(args) -> dict:
    out = Path(args.output_dir)
    work = out / "data"
    if work.exists():
        shutil.rmtree(work)  # links are rebuilt from the sources each run
    out.mkdir(parents=True, exist_ok=True)
    for name in ("real", "synthetic"):
        if not Path(getattr(args, name)).is_dir():
            raise DataError(f"--{name} {getattr(args, name)}: no such folder; pass an imagefolder (<label>/<image>)")

    real_all = load_data(args.real, group_column=args.real_group_column)
    syn_all = load_data(args.synthetic, group_column=args.synthetic_group_column)
    shared = sorted(set(real_all["label"]) & set(syn_all["label"]))
    labels = sorted(args.labels) if args.labels else shared
    unknown = sorted(set(labels) - set(shared))
    if unknown or len(labels) < 2:
        raise DataError(f"labels {unknown or labels} are not in both sets; the sets share {shared} (need >= 2)")
    real = load_domain(args.real, args.real_group_column, set(labels), args.max_per_class, args.seed)
    synthetic = load_domain(args.synthetic, args.synthetic_group_column, set(labels), args.max_per_class, args.seed)
    splits = {
        "real": split_domain(real, "real", args.real_split, args.test_size, args.val_size, args.seed),
        "synthetic": split_domain(synthetic, "synthetic", args.synthetic_split, args.test_size, args.val_size, args.seed),
    }
    names = build_folders(work, real, synthetic, splits)
    split_files = {}
    for tr in TRAININGS:
        doms = ["real", "synthetic"] if tr == "real+synthetic" else [tr]
        parts = {part: sorted(n for d in doms for n in names[(d, part)]) for part in ("train", "validation", "test")}
        split_files[tr] = write_json(work / f"split_{tr.replace('+', '_')}.json", parts, indent=1)

    # ---- three models, one recipe
    from artlens import training

    recipe = dict(DEFAULT_TRAIN, model=args.model)
    if args.train_config:
        recipe.update(yaml.safe_load(Path(args.train_config).read_text()) or {})
    if args.epochs:
        recipe["epochs"] = args.epochs
    recipe["seed"] = args.seed
    recipe_file = out / "train_recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    model_dirs, train_results = {}, {}
    for tr in TRAININGS:
        model_dirs[tr] = out / "models" / tr.replace("+", "_")
        argv = ["--config", recipe_file, "--data", work / "all", "--split-file", split_files[tr],
                "--output-dir", model_dirs[tr]]
        train_results[tr] = training.train(training.parse_args([str(a) for a in argv]))

    # ---- every model on both test sets
    from artlens.predict import Predictor, evaluate

    tests = {t: load_data(str(work / f"test_{t}")) for t in TESTS}
    table = {}
    for tr in TRAININGS:
        pred = Predictor(str(model_dirs[tr]), tta="none")
        table[tr] = {}
        for t in TESTS:
            m = evaluate(pred, tests[t], seed=args.seed)
            table[tr][t] = {k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "f1_macro")} | {"n": int(m["n"])}
    counts = {t: len(tests[t]) for t in TESTS}
    chance = {t: max(Counter(tests[t]["label"]).values()) / len(tests[t]) for t in TESTS}

    # ---- what each model looked at
    maps_files = {}
    methods = [m.strip() for m in str(args.explain or "").split(",") if m.strip()]
    if methods:
        from artlens.explain import class_average_maps, plot_class_maps
        from artlens.models import load_model

        models = {tr: load_model(str(model_dirs[tr])) for tr in TRAININGS}
        for t in [t.strip() for t in str(args.explain_on).split(",") if t.strip()]:
            if t not in TESTS:
                raise DataError(f"--explain-on {t}: use real, synthetic or real,synthetic")
            grid = {}
            for tr in TRAININGS:
                for method in methods:
                    kw = {"num_samples": args.lime_samples} if method == "lime" else {}
                    grid[f"{tr}\n{method}"] = class_average_maps(
                        models[tr], tests[t], method, size=args.map_size, max_per_class=args.explain_per_class,
                        seed=args.seed, **kw)
            import matplotlib.pyplot as plt
            import numpy as np

            # the arrays too, so the figure can be redrawn (other sizes, colour maps) without recomputing
            np.savez_compressed(out / f"maps_{t}.npz", **{f"{k.replace(chr(10), '|')}|{lab}": m
                                                        for k, maps in grid.items() for lab, m in maps.items()})
            path = out / f"maps_{t}.png"
            plt.close(plot_class_maps(grid, path, labels=labels,
                                      title=f"class-average maps on the {t} test set (rows: trained on / method)"))
            maps_files[t] = str(path)

    result = {
        "labels": labels, "table": table, "test_counts": counts, "majority_baseline": chance,
        "split_sizes": {d: {p: len(v) for p, v in s.items()} for d, s in splits.items()},
        "train_artists": {d: len({(real if d == "real" else synthetic)[i]["group"] for i in s["train"]}) for d, s in splits.items()},
        "test_artists": {d: len({(real if d == "real" else synthetic)[i]["group"] for i in s["test"]}) for d, s in splits.items()},
        "models": {k: str(v) for k, v in model_dirs.items()}, "maps": maps_files, "recipe": recipe,
        "trainer_test_accuracy": {tr: train_results[tr].get("test_accuracy") for tr in TRAININGS},
    }
    md = (f"Labels ({len(labels)}): {', '.join(labels)}\n\n" + "Accuracy:\n\n" + to_markdown(table, counts)
          + "\nBalanced accuracy:\n\n" + to_markdown(table, counts, "balanced_accuracy")
          + "\nMajority-class baseline: " + ", ".join(f"{t} {chance[t]:.3f}" for t in TESTS) + "\n")
    save_config(args, out / "cross_domain_config.yaml")
    for name, text in (("cross_domain.md", md), ("cross_domain.json", json.dumps(result, indent=2, default=str))):
        write_text(out / name, text)
    print(md)
    return result


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"cross_domain.py: error: {e}")
