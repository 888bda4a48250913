"""Class averages over a dataset: where does a model look, class by class?"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import nn

from ..data import cap_per_class, load_data
from ..files import atomic_path
from ..models import label_names
from .api import explain_batch
from .base import ExplainError
from .registry import get_method


def class_average_maps(model: nn.Module, data, method: str = "gradcam", size: int = 64,
                       max_per_class: int | None = 50, target: str = "label", layer: str | None = None,
                       batch_size: int = 8, seed: int = 0, counts: dict | None = None, **kwargs) -> dict:
    """Average normalised heat map of each class of a dataset, resized to ``size x size``.

    ``data`` is an imagefolder path or a dataset from :func:`artlens.data.load_data`. ``target``:
    ``label`` explains each image's own class when the model has it (else its top prediction);
    ``predicted`` always explains the top prediction. Maps are squashed to the square, so "top
    right" means the same region for every image. Returns ``{label: size x size array}``; pass a
    dict as ``counts`` to get the number of images behind each map.
    """
    from tqdm.auto import tqdm

    ds = load_data(str(data)) if isinstance(data, (str, os.PathLike)) else data
    ds = cap_per_class(ds, max_per_class, seed=seed)
    if target not in ("label", "predicted"):
        raise ExplainError(f"unknown target '{target}'; use label or predicted")
    names = set(label_names(model))
    sums: dict[str, np.ndarray] = {}
    n: dict[str, int] = {}
    labels = list(ds["label"])
    # CAMs and rollout explain batch_size images per pass; LIME explains one image at a time (its
    # batch_size is the perturbed copies per pass, left at LIME's default)
    per_pass = get_method(method).name != "lime"
    step = batch_size if per_pass else 1
    for i in tqdm(range(0, len(ds), step), desc=f"{method} class maps", leave=False):
        rows = ds.select(range(i, min(i + step, len(ds))))
        imgs = [r["bytes"] if r.get("bytes") else r["path"] for r in rows["image"]]
        labs = labels[i:i + step]
        tg = [lab if target == "label" and lab in names else None for lab in labs]
        exps = explain_batch(model, imgs, method, target=tg, layer=layer,
                             batch_size=step if per_pass else None, **kwargs)
        for lab, exp in zip(labs, exps):
            m = np.asarray(Image.fromarray(exp.heatmap.astype(np.float32), "F").resize((size, size), Image.BILINEAR))
            sums[lab] = sums.get(lab, 0) + m
            n[lab] = n.get(lab, 0) + 1
    if counts is not None:
        counts.update(n)
    return {lab: (sums[lab] / n[lab]).astype(np.float32) for lab in sorted(sums)}


def plot_class_maps(maps_by_model: dict, path: str | os.PathLike | None = None, colormap: str = "jet",
                    title: str | None = None, labels: Sequence[str] | None = None):
    """Grid figure: one row per model, one column per class, each cell a class-average map.

    ``maps_by_model`` is ``{model name: {label: map}}`` (as from :func:`class_average_maps`). All
    cells share one colour scale (0..1), so rows can be compared. Returns the matplotlib figure and
    writes it as PNG when ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else sorted({lab for maps in maps_by_model.values() for lab in maps})
    rows, cols = len(maps_by_model), len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.2, 1.7 * rows + 0.6), squeeze=False)
    im = None
    for r, (name, maps) in enumerate(maps_by_model.items()):
        for c, lab in enumerate(labels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if lab in maps:
                im = ax.imshow(maps[lab], cmap=colormap, vmin=0, vmax=1)
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            if r == 0:
                ax.set_title(lab.replace("_", " "), fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return fig
