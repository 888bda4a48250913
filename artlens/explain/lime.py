"""LIME on the model-input crop (Ribeiro et al. 2016): superpixels switched off at random, the
class probability of every perturbed copy fitted by a local linear model (``lime``'s ``LimeBase``).

Built for a head on a heavy backbone (the shipped models: CLIP ViT-B/16): the perturbed copies
are made as one tensor per batch and scored in one model call per batch; an "off" superpixel takes
the dataset mean colour (0 after normalisation, the colour the deletion score removes pixels with);
the masks are the rows of a Hadamard matrix (an orthogonal two-level design: every superpixel is on in
half the copies, and every pair of superpixels on together in a quarter of them), so the linear fit sees
each superpixel's effect with the least variance a design of that size allows; ViTs score these copies at
a lower resolution (positional embeddings resampled) under bf16 autocast. A second, small design then
re-measures the strongest superpixels at the model's own input size with the rest of the image kept
(``refine``), and orders them by that: the lower resolution is what cost faithfulness, and it matters most
for the regions a reader looks at first (docs/experiments.md, sections 14 and 15).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import data_config
from ..images import open_image
from ..models import BlockTokens, label_names, tokens_after_blocks
from .base import ExplainError, Explanation, class_probs, resolve_target, top_classes
from .geometry import get_prep, to_image, to_input_nearest

if TYPE_CHECKING:
    from .registry import Method

SEGMENTATIONS = ("slic", "quickshift")
DESIGNS = ("hadamard", "random")
VIT_SIZE = 160  # px at which a ViT scores the copies: a 10 x 10 patch grid (see docs/benchmarks.md)


class LIME:
    """The registry's entry point for LIME: one image at a time, ``batch_size`` perturbed copies per pass."""

    @classmethod
    def explain(cls, method: Method, model: nn.Module, images: Sequence, targets: list, layer: str | None = None,
                batch_size: int | None = None, **options) -> list[Explanation]:
        if layer:
            raise ExplainError("LIME has no target layer; --layer is for the CAM methods")
        if batch_size:
            options["batch_size"] = batch_size
        return [explain_lime(model, img, t, **options) for img, t in zip(images, targets)]


def resizable_vit(model: nn.Module) -> bool:
    """A timm ViT / DeiT with absolute positional embeddings: it can score copies at another size."""
    from timm.models.vision_transformer import VisionTransformer

    vit = model.backbone if isinstance(model, BlockTokens) else model
    return isinstance(vit, VisionTransformer) and vit.pos_embed is not None and not vit.dynamic_img_size


def segment(arr: np.ndarray, segmentation: str = "slic", n_segments: int = 40, compactness: float = 10.0,
            seed: int = 0) -> np.ndarray:
    """Superpixel ids (0..n-1) of an RGB uint8 array."""
    if segmentation == "slic":
        from skimage.segmentation import slic

        # SLIC gives compact superpixels of similar size: a painting's brush texture does not
        # shatter them into hundreds of slivers the way quickshift does.
        seg = slic(arr, n_segments=n_segments, compactness=compactness, start_label=0)
    elif segmentation == "quickshift":
        from skimage.segmentation import quickshift

        seg = quickshift(arr, kernel_size=4, max_dist=200, ratio=0.2, rng=seed)
    else:
        raise ExplainError(f"unknown segmentation '{segmentation}'; use {' or '.join(SEGMENTATIONS)}")
    return np.unique(seg, return_inverse=True)[1].reshape(seg.shape)


def hadamard(n: int) -> np.ndarray | None:
    """A Hadamard matrix of order ``n`` (entries +-1, rows orthogonal) with a first row and column of +1,
    or None where these constructions give none: Sylvester doubling, and Paley's for ``n = q + 1``, ``q`` a
    prime = 3 (mod 4) (so every power of 2 and 12, 20, 24, 32, 44, 48, 60, 64, 68, 72, 80, 84, 88, 96, ...)."""
    if n == 1:
        return np.ones((1, 1), dtype=np.int8)
    if n % 2 == 0 and (h := hadamard(n // 2)) is not None:
        return np.block([[h, h], [h, -h]])
    q = n - 1
    if q < 3 or q % 4 != 3 or any(q % k == 0 for k in range(2, int(q ** 0.5) + 1)):
        return None
    squares = np.zeros(q, dtype=bool)
    squares[np.arange(1, q) ** 2 % q] = True
    chi = np.where(squares, 1, -1)
    chi[0] = 0
    h = np.eye(n, dtype=np.int8)
    h[0, 1:], h[1:, 0] = 1, -1
    h[1:, 1:] += chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q].astype(np.int8)
    return h * h[:, :1]  # rows signed so that the first column is +1 too (the first row already is)


def hadamard_order(n: int) -> int:
    """The smallest order >= ``n`` for which :func:`hadamard` builds a matrix."""
    while hadamard(n) is None:
        n += 1
    return n


def design_masks(num_samples: int, d: int, design: str = "hadamard", seed: int = 0) -> np.ndarray:
    """``num_samples`` kept-superpixel masks over ``d`` superpixels; the first keeps them all (the image).

    ``hadamard``: the rows of a Hadamard matrix of the smallest order that is at least ``num_samples`` and
    ``d + 1``, on ``d`` of its columns picked at random (fewer samples than that order: its first rows).
    ``random``: LIME's own coin flips, in complementary pairs (each mask and its inverse)."""
    if design not in DESIGNS:
        raise ExplainError(f"unknown LIME design '{design}'; use {' or '.join(DESIGNS)}")
    rng = np.random.default_rng(seed)
    if design == "random":
        half = rng.integers(0, 2, ((num_samples + 1) // 2, d)).astype(bool)
        half[0] = True  # the unperturbed copy (its pair: everything off)
        return np.stack([half, ~half], 1).reshape(-1, d)[:num_samples]
    n = hadamard_order(max(num_samples, d + 1))
    return hadamard(n)[:num_samples, 1 + rng.permutation(n - 1)[:d]] > 0


def _scorer(model: nn.Module, x: torch.Tensor, seg: np.ndarray, hide: torch.Tensor, size: int | None = None):
    """Scores of copies given as kept-superpixel masks (B x n): off superpixels painted ``hide``,
    the copy resized to ``size`` px (None: the input size) before the model sees it."""
    seg = torch.from_numpy(seg)
    forward = _any_size_vit(model, size) if size is not None and resizable_vit(model) else model

    def score(masks: torch.Tensor) -> torch.Tensor:
        keep = masks[:, seg][:, None].to(x.dtype)  # B x 1 x H x W
        xb = x[None] * keep + hide * (1 - keep)
        if size is not None:
            xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", antialias=True)
        return forward(xb)

    return score


def _any_size_vit(model: nn.Module, size: int):
    """A ViT forward at ``size`` px: positional embeddings resampled to the smaller patch grid once
    (a :class:`BlockTokens` model: its ViT's blocks read there, then its head)."""
    from timm.layers import resample_abs_pos_embed

    reader, model = (model, model.backbone) if isinstance(model, BlockTokens) else (None, model)
    pe = model.patch_embed
    grid = (size // pe.patch_size[0], size // pe.patch_size[1])
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    with torch.no_grad():
        pos = resample_abs_pos_embed(model.pos_embed, list(grid), num_prefix_tokens=prefix)
    extra = [t for t in (model.cls_token, model.reg_token) if t is not None]

    def forward(x):
        t = pe.norm(pe.proj(x).flatten(2).transpose(1, 2))
        first = [e.expand(len(x), -1, -1) for e in extra]
        t = torch.cat(first + [t + pos], 1) if model.no_embed_class else torch.cat(first + [t], 1) + pos
        if reader is not None:
            return reader.head(reader.read(tokens_after_blocks(model, model.norm_pre(t), reader.blocks)))
        return model.forward_head(model.norm(model.blocks(model.norm_pre(t))))

    return forward


def _hide_value(model: nn.Module, hide_color) -> torch.Tensor:
    """The normalised value of the colour an off superpixel takes (None: the dataset mean, i.e. 0)."""
    if hide_color is None:
        return torch.zeros(1, 3, 1, 1)
    cfg = data_config(model)
    rgb = torch.tensor(np.broadcast_to(np.asarray(hide_color, dtype=np.float32), (3,)).copy()) / 255.0
    return ((rgb - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])).view(1, 3, 1, 1)


def _fit(masks: np.ndarray, probs: np.ndarray, target: int, kernel_width: float, seed: int) -> tuple[np.ndarray, float]:
    """LIME's weighted linear fit of the target probability on the kept-superpixel masks: (weights, R^2)."""
    from lime.lime_base import LimeBase
    from sklearn.metrics import pairwise_distances

    d = masks.shape[1]
    distances = pairwise_distances(masks, masks[:1], metric="cosine").ravel()
    base = LimeBase(lambda dist: np.sqrt(np.exp(-dist ** 2 / kernel_width ** 2)), random_state=seed)
    _, local_exp, fidelity, _ = base.explain_instance_with_data(masks.astype(np.float64), probs, distances, target,
                                                                num_features=d)
    weights = np.zeros(d, dtype=np.float32)
    for s, w in local_exp:
        weights[s] = w
    return weights, float(fidelity)


def explain_lime(model: nn.Module, image, target, num_samples: int = 40, batch_size: int = 16,
                 segmentation: str = "slic", n_segments: int = 40, compactness: float = 10.0,
                 hide_color=None, size: int | None = None, bf16: bool = True, kernel_width: float = 0.25,
                 seed: int = 0, positive: int = 5, design: str = "hadamard", refine: int = 11,
                 progress: Callable[[float], None] | None = None) -> Explanation:
    """LIME on the model-input crop with ``num_samples`` perturbed copies, ``batch_size`` per model call.

    ``hide_color``: RGB 0..255 an off superpixel takes (default: the dataset mean colour);
    ``size``: px at which the copies are scored (default: :data:`VIT_SIZE` for ViTs, whose cost
    grows with the patch count, the input size for the rest); ``bf16``: score the copies under
    bfloat16 autocast (~2x faster on CPUs with AVX512-BF16); ``kernel_width``: of LIME's kernel on
    the cosine distance to the unperturbed image; ``design``: which superpixels each copy keeps
    (:func:`design_masks`: ``hadamard``, or LIME's ``random`` coin flips); ``refine``: how many of the
    strongest superpixels are measured again, with a Hadamard design of the next order (12 copies for 11)
    at the model's input size and every other superpixel kept, and ranked by that second fit (they keep
    the first fit's largest weights, in its order; 0: no second step). The prediction itself (``score``,
    the default target) comes from one full-size fp32 pass, as :func:`artlens.predict` makes it.
    """
    if num_samples < 2:
        raise ExplainError(f"LIME needs at least 2 samples, got num_samples={num_samples}")
    if refine < 0:
        raise ExplainError(f"refine={refine}: give how many superpixels to measure again (0: none)")
    prep = get_prep(model)
    names = label_names(model)
    img = open_image(image)
    crop = prep.crop(img)
    x = prep.tensor(crop)
    size = size or (VIT_SIZE if resizable_vit(model) else None)
    size = None if size == x.shape[-1] == x.shape[-2] else size
    seg = segment(np.asarray(crop, dtype=np.uint8), segmentation, n_segments, compactness, seed)
    d = int(seg.max()) + 1
    k = min(refine, d)
    masks = design_masks(num_samples, d, design, seed)
    uniq, inverse = np.unique(masks, axis=0, return_inverse=True)  # equal patterns are scored once
    n_refine = hadamard_order(k + 1) if k else 0
    total = len(uniq) + n_refine
    hide = _hide_value(model, hide_color)
    was_training = model.training
    model.eval()

    def scores(score, m: np.ndarray, done: int) -> np.ndarray:
        out = np.zeros((len(m), len(names)), dtype=np.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(m), batch_size):
                out[i:i + batch_size] = class_probs(score(torch.from_numpy(m[i:i + batch_size])).float()).numpy()
                if progress is not None:
                    progress(min(1.0, (done + i + batch_size) / total))
        return out

    try:
        with torch.inference_mode():
            p0 = class_probs(model(x[None]))[0].numpy()
            target = int(np.argmax(p0)) if target is None else target
            weights, fidelity = _fit(masks, scores(_scorer(model, x, seg, hide, size), uniq, 0)[inverse.ravel()],
                                     target, kernel_width, seed)
            refined = []
            if k:
                top = np.argsort(-weights, kind="stable")[:k]
                again = np.ones((n_refine, d), dtype=bool)
                again[:, top] = design_masks(n_refine, k, "hadamard", seed + 1)
                w2, _ = _fit(again, scores(_scorer(model, x, seg, hide, None), again, len(uniq)),
                             target, kernel_width, seed)
                refined = top[np.argsort(-w2[top], kind="stable")]
                weights[refined] = weights[top]  # top is in descending order of the first fit
    finally:
        model.train(was_training)
    return _lime_explanation(seg, weights, target, names, p0, img, prep, "lime", positive,
                             {"num_samples": num_samples, "unique_samples": len(uniq), "design": design,
                              "refined": [int(s) for s in refined], "refine_samples": n_refine,
                              "segmentation": segmentation, "size": size or int(x.shape[-1]), "seed": seed,
                              "fidelity": round(fidelity, 4)})


def _lime_explanation(seg, weights, target, names, p0, img, prep, method, positive, info) -> Explanation:
    signed = weights[seg]
    pos = np.clip(signed, 0, None)
    input_map = pos / pos.max() if pos.max() > 0 else pos
    box = prep.box(img.size)
    # The ranking keeps the order of negative superpixels too (deletion scores use it).
    rank = (signed - signed.min()) / (np.ptp(signed) or 1.0)
    order = np.argsort(-weights)
    return Explanation(
        heatmap=np.clip(to_image(input_map, box, img.size), 0, 1), target=int(target), label=names[target],
        score=float(p0[target]), method=method,
        extra={"box": [round(v, 2) for v in box], "input_size": list(seg.shape), "top": top_classes(p0, names),
               "input_map": input_map.astype(np.float32), "rank_map": to_image(rank.astype(np.float32), box, img.size),
               "segments": seg, "weights": weights,
               "positive_segments": [int(s) for s in order[:positive] if weights[s] > 0],
               "negative_segments": [int(s) for s in order[::-1][:positive] if weights[s] < 0],
               "num_segments": int(len(weights)), **info})


def plain_lime(model: nn.Module, image, target=None, seed: int = 0, num_samples: int = 1000) -> Explanation:
    """The library used as its README shows: ``explain_instance`` with its defaults (1000 samples,
    batch size 10, quickshift) on the image, the classifier preprocessing every copy. For comparison
    in the benchmark and tests only; :func:`explain` with ``method="lime"`` is the one to use."""
    from lime import lime_image

    prep = get_prep(model)
    names = label_names(model)
    img = open_image(image)
    target = resolve_target(model, target)

    def fn(batch):
        x = torch.stack([prep.tf(Image.fromarray(b.astype(np.uint8))) for b in batch])
        with torch.no_grad():
            return class_probs(model(x)).numpy()

    arr = np.asarray(img, dtype=np.uint8)
    p0 = fn(arr[None])[0]
    target = int(np.argmax(p0)) if target is None else target
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        arr, fn, random_seed=seed, labels=(target,), top_labels=None, num_samples=num_samples)
    # Put the image-sized segments on the input grid, so the result reads like explain()'s.
    seg = to_input_nearest(np.asarray(exp.segments), prep.box(img.size), tuple(prep.tensor(prep.crop(img)).shape[-2:]))
    weights = np.zeros(int(seg.max()) + 1, dtype=np.float32)
    for s, w in exp.local_exp[target]:
        weights[s] = w
    return _lime_explanation(seg, weights, target, names, p0, img, prep, "lime-plain", 5,
                             {"num_samples": num_samples, "segmentation": "quickshift", "seed": seed})
