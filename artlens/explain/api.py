"""The one call: ``explain(model, image, method, target)``, any method of the registry."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .base import ExplainError, Explanation, resolve_target
from .registry import default_method, get_method


def explain(model: nn.Module, image, method: str | None = None, target=None, layer: str | None = None,
            **kwargs) -> Explanation:
    """Explain one image (anything ``open_image`` accepts) for ``target`` (label, index or None = top class).

    ``method``: a registry name; None is :func:`~artlens.explain.registry.default_method` (the
    better map for the architecture: attention rollout for ViT / DeiT, Grad-CAM otherwise).
    CAM methods take ``layer`` (a module name; default :func:`default_layer`). LIME takes the
    options of :func:`~artlens.explain.lime.explain_lime` (``num_samples``, ``batch_size``,
    ``segmentation``, ``n_segments``, ``perturb``, ``seed``, ``progress``: a callable getting the
    fraction done...).
    """
    return explain_batch(model, [image], method, target=target, layer=layer, **kwargs)[0]


def explain_batch(model: nn.Module, images: Sequence, method: str | None = None, target=None,
                  layer: str | None = None, batch_size: int | None = None, **kwargs) -> list[Explanation]:
    """Explain several images; ``target`` is one target for all or a list with one per image.

    ``batch_size``: images per CAM pass (default 8); for LIME, perturbed copies per forward pass.
    """
    spec = get_method(method or default_method(model))
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(images)
    if len(targets) != len(images):
        raise ExplainError(f"{len(targets)} targets for {len(images)} images")
    targets = [resolve_target(model, t) for t in targets]
    return spec.run(model, images, targets, layer=layer, batch_size=batch_size, **kwargs)
