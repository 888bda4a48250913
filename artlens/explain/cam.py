"""The CAM family: one base class that runs a pytorch-grad-cam method on the model-input crop,
and one small subclass per method.

The base class owns the hooks: :meth:`BaseCAM.hooks` is a context manager that makes the target
layer's output a gradient leaf, freezes the weights, turns bf16 off, and puts everything back
(hooks removed, grad flags and bf16 restored) however the block ends.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..images import open_image
from ..models import BlockTokens, label_names
from .base import ExplainError, Explanation, class_probs, frozen_eval, normalise, top_classes
from .geometry import get_prep, to_image

if TYPE_CHECKING:
    from .registry import Method


# ---------------------------------------------------------------- layers

def layer_names(model: nn.Module) -> list[str]:
    """Layers worth explaining, shallow to deep (timm's feature stages): the layer-by-layer view."""
    info = getattr(model, "feature_info", None)
    names = []
    if info is not None:
        for f in (info if isinstance(info, list) else info.info):
            names.append(f["module"])
    return [n.replace("_", ".") if not _has(model, n) and _has(model, n.replace("_", ".")) else n for n in names]


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _is_vit_like(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and getattr(model, "num_prefix_tokens", 0) > 0


def default_layer(model: nn.Module) -> str:
    """The target layer used when none is named.

    CNNs (ResNet, EfficientNet, ConvNeXt...) and Swin: the last feature stage. ViT / DeiT (class
    token models): ``norm1`` of the last block, because the last block's *output* patch tokens
    do not reach the class token, so their gradient (and Grad-CAM) would be zero.
    """
    if _is_vit_like(model):
        return f"blocks.{len(model.blocks) - 1}.norm1"
    if isinstance(model, BlockTokens):  # the detector: the deepest block it reads, as for a ViT
        return f"backbone.blocks.{model.blocks[-1]}.norm1"
    names = layer_names(model)
    if names and _has(model, names[-1]):
        return names[-1]
    raise ExplainError(f"cannot find a target layer in {type(model).__name__}; name one with --layer "
                       f"(a module name from model.named_modules(), e.g. the last convolutional stage)")


def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        top = [n for n, _ in model.named_children()]
        raise ExplainError(f"the model has no layer '{name}'; layers to try: {', '.join(layer_names(model)) or top}"
                           ) from None


def reshape_transform(model: nn.Module, input_hw) -> Callable[[torch.Tensor], torch.Tensor]:
    """Bring a layer's output to N x C x H x W: token sequences (ViT, DeiT) and NHWC maps (Swin)."""
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
    H, W = input_hw

    def fn(t):
        if isinstance(t, (tuple, list)):
            t = t[0]
        if t.ndim == 3:
            n = t.shape[1] - prefix
            gh = max(1, round(math.sqrt(n * H / W)))
            gw = n // gh
            if gh * gw != n:
                raise ExplainError(f"cannot lay {t.shape[1]} tokens ({prefix} prefix) out on a grid for a "
                                   f"{H}x{W} input; choose another --layer")
            return t[:, prefix:, :].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)
        if t.ndim == 4:
            return t.permute(0, 3, 1, 2) if nhwc else t
        raise ExplainError(f"layer output of shape {tuple(t.shape)} has no spatial grid; choose a feature "
                           f"layer with --layer (one of {', '.join(layer_names(model))})")

    return fn


# ---------------------------------------------------------------- the base class

class BaseCAM:
    """A CAM method: pytorch-grad-cam's class ``library_class`` on ``model`` at ``layer``.

    ``BaseCAM.explain`` is what the registry calls; ``hooks`` is the context manager around one
    pass of the library object.
    """

    library_class: str = ""  # the class in pytorch_grad_cam
    images_per_pass: int = 8  # default batch_size: images per CAM pass
    masks_per_pass: int = 32  # Score-CAM: masked copies per forward

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model = model
        self.layer = layer  # None: default_layer(model), found when first needed

    @contextlib.contextmanager
    def hooks(self, input_hw):
        """A pytorch-grad-cam object whose hooks are released however the block ends."""
        import pytorch_grad_cam as pgc

        cls = getattr(pgc, self.library_class)
        model = self.model
        self.layer = self.layer or default_layer(model)
        module = get_layer(model, self.layer)
        # Only the gradient at the target layer is needed: its output becomes a leaf that requires
        # grad and no weight does (frozen_eval), so the backward pass runs from the logits down to that
        # layer only (not through the early high-resolution layers), and frozen models work too.
        with frozen_eval(model):
            # pytorch-grad-cam reads activations and gradients as numpy arrays, which have no bfloat16
            bf16 = getattr(model, "bf16", None)
            if bf16:
                model.bf16 = False
            leaf = module.register_forward_hook(
                lambda mod, inp, out: out.detach().requires_grad_(True) if torch.is_tensor(out) and out.is_floating_point() else None)
            cam = None
            try:
                cam = cls(model=model, target_layers=[module], reshape_transform=reshape_transform(model, input_hw))
                cam.batch_size = self.masks_per_pass
                yield cam
            finally:
                leaf.remove()
                if cam is not None:
                    cam.activations_and_grads.release()
                if bf16:
                    model.bf16 = bf16

    def explain_images(self, images: Sequence, targets: list, method: str, class_specific: bool) -> list[Explanation]:
        """One pass over ``images`` (targets: class indices or None = top class)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model = self.model
        prep = get_prep(model)
        names = label_names(model)
        imgs = [open_image(im) for im in images]
        x = torch.stack([prep.tensor(prep.crop(im)) for im in imgs])
        self.layer = self.layer or default_layer(model)
        with torch.enable_grad(), self.hooks(x.shape[-2:]) as cam:
            if all(t is None for t in targets):
                maps = cam(input_tensor=x, targets=None)  # the top class of each image, from the same forward
                targets = cam.outputs.detach().argmax(-1).tolist()
            else:
                if any(t is None for t in targets):
                    with torch.no_grad():
                        pred = model(x).argmax(-1).tolist()
                    targets = [p if t is None else t for t, p in zip(targets, pred)]
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
            probs = class_probs(cam.outputs.detach()).numpy()
        out = []
        for im, m, t, p in zip(imgs, maps, targets, probs):
            m = normalise(m)
            box = prep.box(im.size)
            out.append(Explanation(
                heatmap=normalise(to_image(m, box, im.size)), target=int(t), label=names[t], score=float(p[t]),
                method=method,
                extra={"layer": self.layer, "box": [round(v, 2) for v in box], "input_size": list(m.shape),
                       "top": top_classes(p, names), "input_map": m, "class_specific": class_specific}))
        return out

    @classmethod
    def explain(cls, method: Method, model: nn.Module, images: Sequence, targets: list, layer: str | None = None,
                batch_size: int | None = None, **options) -> list[Explanation]:
        """Explain ``images`` in passes of ``batch_size`` (default 8); CAMs take no other option."""
        if options:
            raise ExplainError(f"options {sorted(options)} are for LIME; the CAM methods take only layer")
        out = []
        batch_size = batch_size or cls.images_per_pass
        for i in range(0, len(images), batch_size):
            cam = cls(model, layer)
            out += cam.explain_images(images[i:i + batch_size], targets[i:i + batch_size], method.name,
                                      method.class_specific)
        return out


# ---------------------------------------------------------------- the methods

class GradCAM(BaseCAM):
    """Gradient-weighted class activation map (Selvaraju et al. 2017)."""

    library_class = "GradCAM"


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: second-order weights, better with several instances of a class (Chattopadhay et al. 2018)."""

    library_class = "GradCAMPlusPlus"


class ScoreCAM(BaseCAM):
    """Score-CAM: each channel weighted by the score of the input masked by it; no gradients (Wang et al. 2020)."""

    library_class = "ScoreCAM"


class EigenCAM(BaseCAM):
    """Eigen-CAM: first principal component of the activations; the same map for every class (Muhammad & Yeasin 2020)."""

    library_class = "EigenCAM"


class LayerCAM(BaseCAM):
    """Layer-CAM: element-wise positive gradients times activations, finer on shallow layers (Jiang et al. 2021)."""

    library_class = "LayerCAM"
