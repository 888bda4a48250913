"""Section "train": the cached-feature fast path against the plain Accelerate loop.

Same run three ways, each trained in this process (``artlens.training.train`` on ``trainers/train.py``'s
flags): a linear probe of the offline tf_efficientnet_lite0 on paintings_styles10 (30 paintings per
style, stratified split, 224 px, no augmentation, 10 epochs, AdamW 3e-3, batch 32, seed 42):

- plain: every epoch runs the frozen backbone over every training and validation image;
- cached, cold: the backbone runs once over all images (features written to the disk cache),
  then 10 epochs train the head on the features;
- cached, warm: a second run with the same images and preprocessing finds the features on disk.

Wall times are the trainer's own ``feature_runtime_s`` (backbone pass for the cache) and
``train_runtime_s`` (the epoch loop, validation and per-epoch checkpoints included).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _run(argv: list) -> dict:
    from artlens import training

    # in this process: its 2 torch threads and ARTLENS_CACHE
    return training.train(training.parse_args([str(a) for a in argv]))


def run(args) -> str:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = Path(args.data) / "paintings_styles10"
    quick = getattr(args, "quick", False)
    per_class, size, epochs = (6, 64, 3) if quick else (30, 224, 10)
    rows = []
    old = os.environ.get("ARTLENS_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        # a fresh feature cache, so "cold" really computes; the offline weights are re-converted once
        os.environ["ARTLENS_CACHE"] = str(Path(tmp) / "cache")
        try:
            common = ["--data", data, "--max-per-class", per_class, "--img-size", size, "--epochs", epochs,
                      "--freeze", "linear_probe", "--aug", "none", "--lr", 0.003, "--batch-size", 32,
                      "--optimizer", "adamw", "--schedule", "cosine", "--seed", 42, "--tta", "none",
                      "--split", "random", "--patience", 0]
            for name, extra in (("plain loop", ["--cache-features", "false"]),
                                ("cached features, cold cache", ["--cache-features", "true"]),
                                ("cached features, warm cache", ["--cache-features", "true"])):
                r = _run(common + extra + ["--output-dir", Path(tmp) / name.replace(" ", "_").replace(",", "")])
                rows.append((name, r))
        finally:
            if old is None:
                os.environ.pop("ARTLENS_CACHE", None)
            else:
                os.environ["ARTLENS_CACHE"] = old
    base = rows[0][1]["feature_runtime_s"] + rows[0][1]["train_runtime_s"]
    n = rows[0][1]
    lines = [
        f"Linear probe of offline `tf_efficientnet_lite0` on `paintings_styles10` ({per_class} per style: "
        f"{n['num_train']} train / {n['num_validation']} validation / {n['num_test']} test images, {size} px), "
        f"{epochs} epochs, batch 32, AdamW 3e-3, no augmentation, `torch.set_num_threads(2)`.",
        "",
        "| run | backbone pass for cache (s) | epochs loop (s) | epochs speed-up | total (s) | total speed-up | val accuracy | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        total = r["feature_runtime_s"] + r["train_runtime_s"]
        loop = rows[0][1]["train_runtime_s"] / max(r["train_runtime_s"], 1e-9)
        lines.append(f"| {name} | {r['feature_runtime_s']:.1f} | {r['train_runtime_s']:.1f} | {loop:.0f}x | {total:.1f} | "
                     f"{base / max(total, 1e-9):.1f}x | {r['val_accuracy']:.3f} | {r['test_accuracy']:.3f} |")
    lines += ["", "Same seed, same split and same head initialisation: the cached runs see exactly the features "
              "the plain loop computes (frozen backbone in eval mode), so their accuracies match it. The cold total "
              "includes one backbone pass over every image (test split too), so its speed-up is about epochs x "
              "(train + validation) / all images; the warm cache skips the backbone. Totals leave out process start, "
              "data listing and export, which are the same for all three."]
    return "\n".join(lines)
