#!/usr/bin/env python
"""Class-average heat maps over a dataset: where does each model look, class by class?

    python scripts/explain_dataset.py --model style --data ../shared/data/paintings_styles10 \\
        --method gradcam --max-per-class 20 --out runs/maps
    python scripts/explain_dataset.py --model runs/real runs/synthetic --name real synthetic \\
        --data ../shared/data/paintings_styles10 --method gradcam lime --out runs/maps_compare

Every image's normalised map (0..1) is squashed to a ``--size`` square and averaged per class.
Writes, under ``--out``: ``<model>/<method>/<label>.png`` (one colour-mapped map per class),
``class_maps.png`` (grid: one row per model and method, one column per class, one colour scale),
``class_maps.npz`` (the arrays, keys ``<model>/<method>/<label>``), ``class_maps.json`` (images per
class and the centroid / 3x3 grid of each map) and ``explain_dataset_config.yaml``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from artlens.config import parse_with_config, save_config
from artlens.data import DataError
from artlens.explain import (
    METHODS,
    REGISTRY,
    ExplainError,
    class_average_maps,
    heat_stats,
    heatmap_image,
    plot_class_maps,
    save_png,
)
from artlens.files import atomic_write, write_json
from artlens.images import ImageError
from artlens.models import ModelError, load_model

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags (with underscores)")
    p.add_argument("--model", nargs="+", default=None, help="one or more model references (compared side by side)")
    p.add_argument("--name", nargs="+", default=None, help="a short name per model for the figure (default: the reference)")
    p.add_argument("--data", default=None, help="imagefolder (<label>/<image>) or Hub dataset id")
    p.add_argument("--split", default=None, help="dataset split (Hub datasets)")
    p.add_argument("--method", nargs="+", default=["gradcam"], help=f"one or more of {', '.join(METHODS)}")
    p.add_argument("--target", default="label", choices=["label", "predicted"],
                   help="label: explain each image's own class (top prediction when the model lacks it)")
    p.add_argument("--layer", default=None, help="CAM target layer (default: found automatically)")
    p.add_argument("--size", type=int, default=64, help="side of the common square the maps are averaged on")
    p.add_argument("--max-per-class", type=int, default=30, help="images per class (random, seeded; 0 for all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-samples", type=int, default=40, help="LIME: perturbed copies per image (then 12 more: refine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--colormap", default="jet")
    p.add_argument("--out", default=None, help="output folder")
    args = parse_with_config(p, argv)
    if not args.model or not args.data or not args.out:
        p.error("--model, --data and --out are required (on the command line or in --config)")
    for key in ("model", "name", "method"):
        v = getattr(args, key)
        if isinstance(v, str):
            setattr(args, key, [v])
    if args.name and len(args.name) != len(args.model):
        p.error(f"{len(args.name)} --name for {len(args.model)} --model; give one name per model")
    bad = [m for m in args.method if m not in METHODS]
    if bad:
        p.error(f"unknown --method {bad}; choose from {', '.join(METHODS)}")
    return args


def main(args) -> dict:
    import matplotlib.pyplot as plt

    from artlens.data import load_data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_data(args.data, split=args.split)
    names = args.name or [Path(str(m).rstrip("/")).name or str(m) for m in args.model]
    grid, summary, arrays = {}, {}, {}
    for ref, name in zip(args.model, names):
        model = load_model(ref)
        for method in args.method:
            spec = REGISTRY[method]
            kw = {"layer": args.layer} if spec.takes_layer else {
                k: v for k, v in {"num_samples": args.num_samples, "seed": args.seed}.items() if k in spec.options}
            counts: dict = {}
            maps = class_average_maps(model, ds, method, size=args.size, max_per_class=args.max_per_class or None,
                                      target=args.target, batch_size=args.batch_size, seed=args.seed,
                                      counts=counts, **kw)
            key = f"{name}/{method}"
            grid[f"{name}\n{method}" if len(args.method) > 1 else name] = maps
            summary[key] = {}
            for label, m in maps.items():
                save_png(heatmap_image(m, args.colormap).resize((256, 256)), out / name / method / f"{label}.png")
                arrays[f"{key}/{label}"] = m
                summary[key][label] = {"images": counts[label], **heat_stats(m)}
            print(f"{key}: {len(maps)} classes, {sum(counts.values())} images", flush=True)
    fig = plot_class_maps(grid, out / "class_maps.png", colormap=args.colormap,
                          title=f"class-average {', '.join(args.method)} maps on {Path(str(args.data)).name}")
    plt.close(fig)
    with atomic_write(out / "class_maps.npz", "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(out / "class_maps.json", summary, indent=1)
    save_config(args, out / "explain_dataset_config.yaml")
    print(out / "class_maps.png")
    return summary


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, ModelError, ImageError, ExplainError, FileNotFoundError) as e:
        print(f"explain_dataset: error: {e}", file=sys.stderr)
        sys.exit(2)
