"""The one metrics function, used by the trainer, the evaluator, the benchmarks and the tests.

scikit-learn does the arithmetic (``evaluate``'s Hub metric modules need network; its local
``accuracy``/``f1`` modules wrap the same scikit-learn calls).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["compute_metrics", "plot_confusion", "save_metrics"]


def compute_metrics(y_true: Sequence, y_pred: Sequence, label_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro precision/recall/F1, per-class report, confusion matrix.

    ``y_true`` / ``y_pred`` are label names or indices into ``label_names``.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def save_metrics(metrics: dict, out_dir: str | os.PathLike, prefix: str = "test") -> dict:
    """Write ``<prefix>_metrics.json`` and ``<prefix>_confusion.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{prefix}_metrics.json"
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, js)
    png = plot_confusion(metrics, out / f"{prefix}_confusion.png")
    return {"json": js, "png": png}
