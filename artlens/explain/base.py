"""What every method shares: the result type, the error, class targets and map normalisation."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ArtlensError
from ..models import label_names


class ExplainError(ArtlensError, ValueError):
    """An explanation cannot be computed as asked; the message says what to change."""


@dataclass
class Explanation:
    """A heat map (H x W, 0..1, at the input image's size) for one class of one image."""

    heatmap: np.ndarray
    target: int
    label: str
    score: float
    method: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The numbers, for JSON: no arrays, only what a reader compares between images."""
        out = {"method": self.method, "target": self.target, "label": self.label, "score": round(self.score, 6)}
        for k, v in self.extra.items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                out[k] = v
            elif isinstance(v, (list, tuple)) and not any(isinstance(i, np.ndarray) for i in v):
                out[k] = list(v)
        out.update(heat_stats(self.heatmap))
        return out


def heat_stats(heatmap: np.ndarray, cells: int = 3) -> dict:
    """Where the heat is: centroid (fractions of width/height) and mean heat in a 3x3 grid."""
    h, w = heatmap.shape
    total = float(heatmap.sum())
    if total <= 0:
        cx = cy = 0.5
    else:
        cy = float((heatmap.sum(1) * (np.arange(h) + 0.5)).sum() / total / h)
        cx = float((heatmap.sum(0) * (np.arange(w) + 0.5)).sum() / total / w)
    ys = np.linspace(0, h, cells + 1).astype(int)
    xs = np.linspace(0, w, cells + 1).astype(int)
    grid = [[round(float(heatmap[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean()), 4) for j in range(cells)]
            for i in range(cells)]
    return {"centroid_x": round(cx, 4), "centroid_y": round(cy, 4), "mean_heat": round(float(heatmap.mean()), 4),
            "grid_3x3": grid}


def normalise(m: np.ndarray) -> np.ndarray:
    """A map shifted and scaled to 0..1 (NaN -> 0; a constant map becomes all 0)."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    m = m - m.min()
    top = m.max()
    return m / top if top > 0 else m


def class_probs(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from logits: sigmoid for a one-logit head, softmax otherwise."""
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else logits.softmax(-1)


def resolve_target(model: nn.Module, target) -> int | None:
    """A label (any case), an index or a digit string -> the class index; None stays None (top class)."""
    if target is None:
        return None
    names = label_names(model)
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(names):
            raise ExplainError(f"target index {target} is out of range for a model with {len(names)} classes")
        return int(target)
    if str(target) in names:
        return names.index(str(target))
    low = [n.lower() for n in names]
    if str(target).lower() in low:
        return low.index(str(target).lower())
    if str(target).isdigit() and int(target) < len(names):
        return int(target)
    raise ExplainError(f"'{target}' is not one of the model's labels ({', '.join(names[:12])}"
                       f"{', ...' if len(names) > 12 else ''}); pass --target with one of them, or leave it "
                       f"out to explain the top prediction")


def top_classes(probs: np.ndarray, names: list[str], k: int = 5) -> list:
    idx = np.argsort(-probs)[:k]
    return [{"label": names[i], "score": round(float(probs[i]), 6)} for i in idx]


@contextlib.contextmanager
def frozen_eval(model: nn.Module):
    """The model in eval mode with no weight requiring grad (a gradient method needs only the gradients of
    activations), both restored however the block ends."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)
