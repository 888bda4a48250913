"""Batched prediction with optional test-time augmentation and origin thresholds.

What the CLI, the Space, the evaluator and the benchmarks call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .data import (
    TTA_MODES,
    TTA_VIEWS,
    DataError,
    canonical_image,
    cap_per_class,
    data_config,
    eval_transform,
    load_data,
    perturb,
    tta_views,
)
from .images import ImageError, judge_problem, open_image
from .metrics import compute_metrics
from .models import TOKENS, BlockTokens, label_names, load_model, pooled_features, resolve_ref

__all__ = ["TTA_MODES", "TTA_VIEWS", "tta_views", "predict_probs", "Predictor", "predict_together"]

@torch.inference_mode()
def predict_probs(model: nn.Module, images: Iterable, batch_size: int = 16, tta: str | bool | None = None,
                  transform=None, progress: bool = False, heads: Sequence[nn.Module] | None = None):
    """Softmax probabilities (N x C) for images (paths, PIL images, arrays...), opened with open_image.

    With ``heads`` (classifiers that take ``model``'s pooled features, e.g. of other probes on the same
    frozen backbone) the backbone runs once per view and the result is a list of arrays, one per head.
    """
    model.eval()
    transform = transform or eval_transform(model)
    size = int(data_config(model)["input_size"][-1])
    device = next(model.parameters()).device
    images = list(images)
    fns = [model] if heads is None else list(heads)
    outs = [[] for _ in fns]
    it = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="predict", unit="batch")
    for start in it:
        batch, counts = [], []
        for src in images[start:start + batch_size]:
            views = tta_views(open_image(src), tta, size)
            batch += [transform(v) for v in views]
            counts.append(len(views))
        x = torch.stack(batch).to(device)
        if heads is not None:
            x = pooled_features(model, x)
        for fn, out in zip(fns, outs):
            probs = fn(x).float().softmax(-1).cpu().numpy()
            i = 0
            for c in counts:
                out.append(probs[i:i + c].mean(0))
                i += c
    res = [np.stack(out) if out else np.zeros((0, getattr(fn, "out_features", None) or model.num_classes), dtype=np.float32)
           for fn, out in zip(fns, outs)]
    return res[0] if heads is None else res


class Predictor:
    """A loaded model with its labels, preprocessing, TTA mode and (for origin models) threshold."""

    def __init__(self, ref: str | os.PathLike | None = None, task: str = "style", tta: str | bool | None = None,
                 model: nn.Module | None = None, batch_size: int = 16):
        self.ref = resolve_ref(ref, task) if model is None else str(ref or "model")
        self.model = model if model is not None else load_model(ref, task=task)
        self.model.eval()
        cfg = self.model.pretrained_cfg
        self.labels = label_names(self.model)
        self.transform = eval_transform(self.model)
        self.tta = tta if tta is not None else cfg.get("artlens_tta", "none")
        self.threshold = cfg.get("artlens_threshold")
        self.positive = cfg.get("artlens_positive", "ai" if "ai" in self.labels else None)
        # origin models of artlens.detect: the undecided band, the one form every image is brought to
        # first, and the which-generator head
        self.band = cfg.get("artlens_band")
        self.canonical = cfg.get("artlens_canonical")
        self.generators = list(cfg.get("artlens_generators") or [])
        self.generator_min = float(cfg.get("artlens_generator_min") or 0.0)
        # style models of artlens.paintings: below this top probability, "none of the styles it knows"
        self.known_min = cfg.get("artlens_known_min")
        self.batch_size = batch_size
        folder = self.ref[len("local-dir:"):] if self.ref.startswith("local-dir:") else None
        readme = Path(folder) / "README.md" if folder else None
        self.card = readme.read_text(encoding="utf-8") if readme and readme.exists() else ""

    def prepare(self, src):
        """The image as this model judges it: opened, and for models that store a canonical form (the
        detector) checked for something to judge (:func:`artlens.images.judge_problem`, else ImageError)
        and brought to that size and encoding."""
        img = open_image(src)
        if not self.canonical:
            return img
        # only a verdict (human or AI) is refused on an image with nothing to judge; a style is still the closest
        problem = judge_problem(img) if self.threshold is not None else None
        if problem:
            name = src if isinstance(src, (str, os.PathLike)) else "this image"
            raise ImageError(f"{name}: {problem}")
        return canonical_image(img, *self.canonical)

    def probs(self, images: Sequence):
        """Class probabilities (N x C); with a which-generator head, ``(probs, generator_probs)``."""
        if self.canonical:
            images = [self.prepare(im) for im in images]
        if self.generators and getattr(self.model, "generator_head", None) is not None:
            return tuple(predict_probs(self.model, images, self.batch_size, self.tta, self.transform,
                                       heads=[self.model.head, self.model.generator_head]))
        return predict_probs(self.model, images, self.batch_size, self.tta, self.transform)

    def predict(self, images: Sequence, top_k: int = 5) -> list[dict]:
        """One dict per image: label, score, top_k, probs (and p_ai/threshold/verdict for origin models)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        out = self.probs(images)
        if isinstance(out, tuple):
            return self.results(out[0], top_k, generator_probs=out[1])
        return self.results(out, top_k)

    def backbone_key(self) -> tuple | None:
        """Predictors with the same key run the same frozen backbone on the same views (see predict_together)."""
        backbone = self.model.pretrained_cfg.get("artlens_backbone")
        if (not backbone or getattr(self.model, "generator_head", None) is not None
                or (self.canonical and self.threshold is not None)):
            return None
        return (backbone, str(self.tta), repr(self.transform), str(self.canonical))

    def results(self, probs: np.ndarray, top_k: int = 5, generator_probs: np.ndarray | None = None) -> list[dict]:
        k = max(1, min(top_k, len(self.labels)))
        results = []
        for n, p in enumerate(probs):
            order = np.argsort(-p)[:k]
            r = {
                "label": self.labels[order[0]],
                "score": float(p[order[0]]),
                "top_k": [{"label": self.labels[i], "score": float(p[i])} for i in order],
                "probs": {lab: float(v) for lab, v in zip(self.labels, p)},
            }
            if self.known_min is not None:
                r["known_style"] = bool(p[order[0]] >= float(self.known_min))
            if self.threshold is not None and self.positive in self.labels and len(self.labels) == 2:
                pp = float(p[self.labels.index(self.positive)])
                other = next(lab for lab in self.labels if lab != self.positive)
                verdict = self.positive if pp >= self.threshold else other
                r.update({"p_" + self.positive: pp, "threshold": float(self.threshold), "verdict": verdict,
                          "label": verdict, "score": pp if verdict == self.positive else 1.0 - pp})
                if self.band:
                    # three verdicts: firm ones only outside the band (each wrong at most the rate it was
                    # chosen for); `label` stays the two-way answer at the threshold
                    lo, hi = (float(b) for b in self.band)
                    r["band"] = [lo, hi]
                    r["verdict"] = self.positive if pp >= hi else other if pp < lo else "undecided"
            if generator_probs is not None:
                g = generator_probs[n]
                top = int(np.argmax(g))
                r["generator_scores"] = {name: float(v) for name, v in zip(self.generators, g)}
                r["generator"] = (None if r.get("verdict") == "human" else
                                  self.generators[top] if g[top] >= self.generator_min else "unknown")
                r["generator_min"] = self.generator_min
            results.append(r)
        return results


class _Slice(nn.Module):
    """A head that reads its own features out of a wider feature vector."""

    def __init__(self, index: torch.Tensor, head: nn.Module):
        super().__init__()
        self.register_buffer("index", index)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, self.index])


def _shared_reader(models: Sequence[nn.Module]) -> tuple[nn.Module, list[nn.Module]]:
    """One feature extractor for models on the same frozen backbone, and each model's head on its output.

    Classifier-only timm models read the pooled features; if any model reads several blocks
    (:class:`BlockTokens`), the extractor reads the union of everyone's blocks and tokens in one pass
    (the pooled features of a timm ViT are the final block's class token) and each head its slice."""
    if not any(isinstance(m, BlockTokens) for m in models):
        return models[0], [m.get_classifier() for m in models]
    lead = next(m for m in models if isinstance(m, BlockTokens))
    last = len(lead.backbone.blocks) - 1
    reads = [(m.blocks, m.tokens) if isinstance(m, BlockTokens) else ([last], ["cls"]) for m in models]
    blocks = sorted({b for bl, _ in reads for b in bl})
    tokens = [t for t in TOKENS if any(t in tk for _, tk in reads)]
    union = BlockTokens(lead.backbone, blocks, tokens, 1, bf16=lead.bf16)
    union.pretrained_cfg = lead.pretrained_cfg
    d = lead.backbone.num_features
    heads = []
    for m, (bl, tk) in zip(models, reads):
        index = torch.cat([torch.arange(d) + (blocks.index(b) * len(tokens) + tokens.index(t)) * d for b in bl for t in tk])
        heads.append(_Slice(index, m.get_classifier()))
    return union, heads


def predict_together(predictors: Sequence[Predictor], images: Sequence, top_k: int = 5) -> list[list[dict]]:
    """``[p.predict(images) for p in predictors]``, with one backbone pass for the predictors that share a
    frozen backbone (classifier-only folders such as the embedded defaults: style and artist in one pass)."""
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    out: list = [None] * len(predictors)
    groups: dict = {}
    for i, p in enumerate(predictors):
        groups.setdefault(p.backbone_key() or ("own", i), []).append(i)
    for idx in groups.values():
        if len(idx) == 1:
            out[idx[0]] = predictors[idx[0]].predict(images, top_k)
            continue
        lead = predictors[idx[0]]
        shown = [lead.prepare(im) for im in images] if lead.canonical else images
        model, heads = _shared_reader([predictors[i].model for i in idx])
        probs = predict_probs(model, shown, lead.batch_size, lead.tta, lead.transform, heads=heads)
        for i, pr in zip(idx, probs):
            out[i] = predictors[i].results(pr, top_k)
    return out


def evaluate(predictor: Predictor, data, max_per_class: int | None = None, perturbation: tuple[str, float] | None = None,
             split: str | None = None, seed: int = 0) -> dict:
    """Metrics of a predictor on an imagefolder / Hub dataset (labels must be among the model's labels).

    ``perturbation`` (kind, value), e.g. ("jpeg", 50), is applied to every image before prediction.
    Binary origin models are scored on their thresholded verdicts.
    """
    ds = load_data(str(data), split=split) if not hasattr(data, "column_names") else data
    ds = cap_per_class(ds, max_per_class, seed=seed)
    unknown = sorted(set(ds["label"]) - set(predictor.labels))
    if unknown:
        raise DataError(f"labels {unknown[:5]} of {data} are not among the model's labels {predictor.labels[:10]}...")
    from tqdm.auto import tqdm

    preds = []
    for start in tqdm(range(0, len(ds), 64), desc=f"evaluate {perturbation or ''}".strip(), unit="batch"):
        images = []
        for im in ds[start:start + 64]["image"]:
            img = open_image(im["bytes"] if im.get("bytes") else im["path"])
            images.append(perturb(img, *perturbation) if perturbation else img)
        preds += [r["label"] for r in predictor.predict(images)]
    return compute_metrics(list(ds["label"]), preds, predictor.labels)
