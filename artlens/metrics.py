"""The one metrics function, used by the trainer, the evaluator, the benchmarks and the tests, and the
threshold rules of binary (origin) models: :func:`choose_threshold`, :func:`calibrated_threshold`.

scikit-learn does the arithmetic (``evaluate``'s Hub metric modules need network; its local
``accuracy``/``f1`` modules wrap the same scikit-learn calls).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import atomic_path, write_json

__all__ = ["compute_metrics", "plot_confusion", "save_metrics", "choose_threshold", "calibrated_threshold"]


def compute_metrics(y_true: Sequence, y_pred: Sequence, label_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro precision/recall/F1, per-class report, confusion matrix.

    ``y_true`` / ``y_pred`` are label names or indices into ``label_names``.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    names = [str(n) for n in label_names]
    idx = {n: i for i, n in enumerate(names)}
    to_i = lambda v: idx[str(v)] if not isinstance(v, (int, np.integer)) else int(v)  # noqa: E731
    t = np.array([to_i(v) for v in y_true], dtype=int)
    p = np.array([to_i(v) for v in y_pred], dtype=int)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    if len(t) == 0:
        raise ValueError("no samples to score")
    labels = list(range(len(names)))
    present = sorted(set(t.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(t, p, labels=present, average="macro", zero_division=0)
    return {
        "n": int(len(t)),
        "accuracy": float(accuracy_score(t, p)),
        "balanced_accuracy": float(balanced_accuracy_score(t, p)),
        "precision_macro": float(mp),
        "recall_macro": float(mr),
        "f1_macro": float(mf),
        "per_class": {names[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                                 "support": int(sup[i])} for i in labels},
        "confusion_matrix": confusion_matrix(t, p, labels=labels).tolist(),
        "label_names": names,
    }


def plot_confusion(metrics: dict, path: str | os.PathLike, title: str | None = None) -> Path:
    """Row-normalised confusion matrix as a PNG (counts in the cells when there is room)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(metrics["confusion_matrix"], dtype=float)
    names = metrics["label_names"]
    k = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = min(max(4.0, 0.32 * k + 2.5), 18.0)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=90, fontsize=max(4, 10 - k // 8))
    ax.set_yticks(range(k), names, fontsize=max(4, 10 - k // 8))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def save_metrics(metrics: dict, out_dir: str | os.PathLike, prefix: str = "test") -> dict:
    """Write ``<prefix>_metrics.json`` and ``<prefix>_confusion.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = write_json(out / f"{prefix}_metrics.json", metrics)
    png = plot_confusion(metrics, out / f"{prefix}_confusion.png")
    return {"json": js, "png": png}


# ---------------------------------------------------------------- thresholds of binary models

def calibrated_threshold(p_pos: np.ndarray, is_pos: np.ndarray) -> float:
    """Threshold on p(positive) where a class-balanced logistic fit of logit(p) on validation crosses 0.5.

    Aims at the same balanced accuracy as :func:`choose_threshold`, but from every validation image
    instead of the one gap between two of them, so a few images do not move it (resampling the origin
    model's validation set, 100 of them AI, the maximising threshold ranged over 0.34-0.76, 5th to
    95th percentile, this one over 0.57-0.69).
    """
    from sklearn.linear_model import LogisticRegression

    if len(p_pos) == 0 or is_pos.all() or (~is_pos).all():
        return 0.5
    p = np.clip(p_pos.astype(np.float64), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))[:, None]
    fit = LogisticRegression(class_weight="balanced", C=1e4).fit(z, is_pos)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a <= 0:  # validation probabilities that do not rank the classes: nothing to calibrate
        return 0.5
    return float(1 / (1 + np.exp(b / a)))


def choose_threshold(p_pos: np.ndarray, is_pos: np.ndarray) -> float:
    """Threshold on p(positive) maximising balanced accuracy (ties: the one nearest 0.5)."""
    if len(p_pos) == 0 or is_pos.all() or (~is_pos).all():
        return 0.5
    u = np.unique(p_pos)
    cands = np.concatenate([[0.5], (u[:-1] + u[1:]) / 2 if len(u) > 1 else u])
    best, best_t = -1.0, 0.5
    for t in sorted(cands, key=lambda t: abs(t - 0.5)):
        pred = p_pos >= t
        bal = 0.5 * (pred[is_pos].mean() + (~pred[~is_pos]).mean())
        if bal > best + 1e-12:
            best, best_t = bal, float(t)
    return best_t
