#!/usr/bin/env python
"""Evaluate any number of models on any number of datasets, optionally under perturbations.

    python trainers/evaluate.py --models runs/a runs/b style --data ../shared/data/paintings_styles10 \
        --perturb jpeg:30,50,70,90 --perturb scale:0.25,0.5 --perturb crop:0.6 --out results/eval

Writes one table (``results.md`` + ``results.json``) with a row per model x dataset x perturbation.
A dataset whose labels a model does not know is skipped for that model (and listed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from artlens.config import parse_with_config, save_config
from artlens.data import DataError, load_data, parse_perturbations
from artlens.predict import Predictor, evaluate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags")
    p.add_argument("--models", nargs="+", help="model references (folders, Hub ids, style/artist/origin)")
    p.add_argument("--data", nargs="+", help="imagefolders or Hub dataset ids")
    p.add_argument("--split", default=None)
    p.add_argument("--perturb", action="append", default=None, help="KIND:V1,V2 (jpeg, scale, crop, upscale, aspect); repeatable")
    p.add_argument("--max-per-class", type=int, default=None)
    p.add_argument("--tta", default=None, choices=["none", "flip", "crops"])
    p.add_argument("--out", default=None, help="folder for results.md / results.json")
    p.add_argument("--seed", type=int, default=0)
    args = parse_with_config(p, argv)
    if not args.models or not args.data:
        p.error("--models and --data are required (on the command line or in --config)")
    return args


def to_markdown(rows: list[dict]) -> str:
    head = "| model | data | perturbation | n | accuracy | balanced acc. | macro F1 |\n|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['model']} | {r['data']} | {r['perturbation']} | {r['n']} | {r['accuracy']:.4f} | "
        f"{r['balanced_accuracy']:.4f} | {r['f1_macro']:.4f} |\n" for r in rows)


def main(args) -> list[dict]:
    perts = [None] + parse_perturbations(args.perturb)
    rows, skipped = [], []
    datasets = {d: load_data(d, split=args.split) for d in args.data}
    for ref in args.models:
        pred = Predictor(ref, tta=args.tta)
        for name, ds in datasets.items():
            for pert in perts:
                try:
                    m = evaluate(pred, ds, max_per_class=args.max_per_class, perturbation=pert, seed=args.seed)
                except DataError as e:
                    skipped.append(f"{ref} on {name}: {e}")
                    break
                rows.append({"model": str(ref), "data": os.path.basename(str(name).rstrip("/")),
                             "perturbation": "none" if pert is None else f"{pert[0]}:{pert[1]:g}",
                             **{k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "f1_macro")}})
    md = to_markdown(rows)
    print(md)
    for s in skipped:
        print("skipped:", s)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(md)
        (out / "results.json").write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=2))
        save_config(args, out / "eval_config.yaml")
    return rows


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate.py: error: {e}")
