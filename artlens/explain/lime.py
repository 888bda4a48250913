"""LIME on the model-input crop: superpixels (SLIC by default) switched off at random, the
backbone's probabilities fitted by a local linear model (Ribeiro et al. 2016)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import data_config
from ..images import open_image
from ..models import label_names
from .base import ExplainError, Explanation, class_probs, resolve_target, top_classes
from .geometry import get_prep, to_image, to_input_nearest

if TYPE_CHECKING:
    from .registry import Method

SEGMENTATIONS = ("slic", "quickshift")


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


def _segmenter(segmentation: str, n_segments: int, compactness: float, seed: int):
    if segmentation == "slic":
        from skimage.segmentation import slic

        # SLIC gives compact superpixels of similar size: a painting's brush texture does not
        # shatter them into hundreds of slivers the way quickshift does.
        return lambda img: slic(img, n_segments=n_segments, compactness=compactness, start_label=0)
    if segmentation == "quickshift":
        from lime.wrappers.scikit_image import SegmentationAlgorithm

        return SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=seed)
    raise ExplainError(f"unknown segmentation '{segmentation}'; use {' or '.join(SEGMENTATIONS)}")


def _classifier_fn(model: nn.Module, total: int, progress: Callable[[float], None] | None):
    mean, std = _mean_std(model)
    done = [0]

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(batch, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            p = class_probs(model(x)).numpy()
        done[0] += len(batch)
        if progress is not None:
            progress(min(1.0, done[0] / total))
        return p

    return fn


def _mean_std(model):
    cfg = data_config(model)
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def explain_lime(model, image, target, num_samples: int = 200, batch_size: int = 16,
                 segmentation: str = "slic", n_segments: int = 40, compactness: float = 10.0,
                 hide_color=None, seed: int = 0, positive: int = 5,
                 progress: Callable[[float], None] | None = None) -> Explanation:
    """LIME on the model-input crop: every perturbed copy goes straight to the backbone."""
    from lime import lime_image

    prep = get_prep(model)
    names = label_names(model)
    img = open_image(image)
    crop = prep.crop(img)
    arr = np.asarray(crop, dtype=np.uint8)
    fn = _classifier_fn(model, num_samples + 1, progress)
    p0 = fn(arr[None])[0]
    target = int(np.argmax(p0)) if target is None else target
    was_training = model.training
    model.eval()
    # Channels-last convolutions are ~1.6x faster on CPU for these batches; the weights are put
    # back in their usual layout afterwards.
    model.to(memory_format=torch.channels_last)
    try:
        explainer = lime_image.LimeImageExplainer(random_state=seed)
        exp = explainer.explain_instance(
            arr, fn, labels=(target,), top_labels=None, hide_color=hide_color, num_samples=num_samples,
            batch_size=batch_size, segmentation_fn=_segmenter(segmentation, n_segments, compactness, seed),
            random_seed=seed)
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    return _lime_explanation(exp, target, names, p0, img, prep, "lime", positive,
                             {"num_samples": num_samples, "segmentation": segmentation, "seed": seed})


def _lime_explanation(exp, target, names, p0, img, prep, method, positive, info) -> Explanation:
    seg = np.asarray(exp.segments)
    weights = np.zeros(int(seg.max()) + 1, dtype=np.float32)
    for s, w in exp.local_exp[target]:
        weights[s] = w
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


def plain_lime(model: nn.Module, image, target=None, seed: int = 0) -> Explanation:
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
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(arr, fn, random_seed=seed,
                                                                             labels=(target,), top_labels=None)
    # Put the image-sized segments on the input grid, so the result reads like explain()'s.
    seg_in = to_input_nearest(np.asarray(exp.segments), prep.box(img.size), tuple(prep.tensor(prep.crop(img)).shape[-2:]))
    exp.segments = seg_in
    return _lime_explanation(exp, target, names, p0, img, prep, "lime-plain", 5,
                             {"num_samples": 1000, "segmentation": "quickshift", "seed": seed})
