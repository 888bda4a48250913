"""The one list of explanation methods. Everything that names methods (``explain()``, the CLI's
``--method``, the Space's dropdown, the scripts) reads it from here.

    >>> REGISTRY["gradcam"].display_name, REGISTRY["gradcam"].class_specific
    ('Grad-CAM', True)
    >>> method_names(takes_layer=True)          # the CAM family
    ('gradcam', 'gradcam++', 'scorecam', 'eigencam', 'layercam')

To add a method: write its explainer (a :class:`~artlens.explain.cam.BaseCAM` subclass naming
its pytorch-grad-cam class, or any class with the same ``explain`` classmethod) and add one
:class:`Method` line below. :func:`default_method` is the method used when none is named.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from .base import ExplainError, Explanation
from .cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from .lime import LIME
from .rollout import AttentionRollout, attention_model


@dataclass(frozen=True)
class Method:
    """One explanation method.

    ``name``: what ``explain()`` and ``--method`` take; ``display_name``: what a person reads;
    ``class_specific``: the map changes with the class explained (Eigen-CAM's does not);
    ``takes_layer``: it reads a target layer (the CAM family; LIME perturbs the input instead);
    ``explainer``: the class whose ``explain(method, model, images, targets, layer, batch_size,
    **options)`` classmethod computes the maps; ``options``: the keyword options it takes besides
    ``layer`` and ``batch_size``; ``note``: a caution shown next to the display name where a user
    picks a method; ``aliases``: other spellings accepted (lower case, no ``-``/``_``).
    """

    name: str
    display_name: str
    class_specific: bool
    takes_layer: bool
    explainer: type
    options: tuple[str, ...] = ()
    note: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The display name with its note, for a menu: ``LIME (slow: ...)``."""
        return f"{self.display_name} ({self.note})" if self.note else self.display_name

    def run(self, model: nn.Module, images: Sequence, targets: list, layer: str | None = None,
            batch_size: int | None = None, **options) -> list[Explanation]:
        """Explain ``images`` for ``targets`` (class indices or None = top class, one per image)."""
        return self.explainer.explain(self, model, images, targets, layer=layer, batch_size=batch_size, **options)


REGISTRY: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method("gradcam", "Grad-CAM", class_specific=True, takes_layer=True, explainer=GradCAM),
    Method("gradcam++", "Grad-CAM++", class_specific=True, takes_layer=True, explainer=GradCAMPlusPlus,
           aliases=("gradcampp", "gradcamplusplus")),
    Method("scorecam", "Score-CAM", class_specific=True, takes_layer=True, explainer=ScoreCAM),
    Method("eigencam", "Eigen-CAM", class_specific=False, takes_layer=True, explainer=EigenCAM),
    Method("layercam", "Layer-CAM", class_specific=True, takes_layer=True, explainer=LayerCAM),
    Method("rollout", "Attention rollout", class_specific=True, takes_layer=False, explainer=AttentionRollout,
           note="ViT / DeiT only", aliases=("attentionrollout", "gradrollout")),
    Method("lime", "LIME", class_specific=True, takes_layer=False, explainer=LIME,
           options=("num_samples", "segmentation", "n_segments", "compactness", "hide_color", "size", "bf16",
                    "kernel_width", "seed", "positive", "design", "refine", "progress"),
           note="slower: 52 perturbed copies, a few seconds on a CPU"),
)})


def default_method(model: nn.Module) -> str:
    """The method used when none is named: per architecture, the one with the better deletion
    AUC in docs/benchmarks.md (ViT / DeiT: gradient-weighted attention rollout; the rest: Grad-CAM)."""
    return "rollout" if attention_model(model) else "gradcam"


def method_names(*, takes_layer: bool | None = None, class_specific: bool | None = None) -> tuple[str, ...]:
    """The methods' names in registry order, optionally only those with the given properties."""
    return tuple(m.name for m in REGISTRY.values()
                 if (takes_layer is None or m.takes_layer == takes_layer)
                 and (class_specific is None or m.class_specific == class_specific))


def display_names(notes: bool = False) -> dict[str, str]:
    """``{name: display name}`` (``notes=True``: with the note, as :attr:`Method.label`)."""
    return {m.name: m.label if notes else m.display_name for m in REGISTRY.values()}


def get_method(name: str) -> Method:
    """The method called ``name``, case, ``-`` and ``_`` ignored (``Grad-CAM`` is ``gradcam``)."""
    key = name.lower().replace("_", "").replace("-", "")
    for m in REGISTRY.values():
        if key == m.name or key in m.aliases:
            return m
    raise ExplainError(f"unknown method '{key}'; choose one of {', '.join(REGISTRY)}")


METHODS = method_names()
CAM_METHODS = method_names(takes_layer=True)
