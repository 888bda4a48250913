"""Gradient-weighted attention rollout for ViTs (Chefer et al. 2021, "Generic attention-model
explainability"): the attention maps of every block, weighted by their gradient for the class and
clipped at 0, averaged over heads and multiplied through the blocks; the class token's row over the
patch tokens is the map. Class-specific, and it uses every block, not one target layer."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..images import open_image
from ..models import BlockTokens, label_names
from .base import ExplainError, Explanation, class_probs, frozen_eval, normalise, top_classes
from .geometry import get_prep, to_image

if TYPE_CHECKING:
    from .registry import Method


def _vit(model: nn.Module) -> nn.Module:
    """The ViT whose attention is read: the model itself, or the backbone of a :class:`BlockTokens` model."""
    return model.backbone if isinstance(model, BlockTokens) else model


def attention_model(model: nn.Module) -> bool:
    """A timm ViT / DeiT (or a :class:`BlockTokens` model on one) whose blocks have a plain ``attn`` with
    the attention dropout to hook."""
    model = _vit(model)
    blocks = getattr(model, "blocks", None)
    return (hasattr(model, "patch_embed") and getattr(model, "num_prefix_tokens", 0) > 0 and blocks is not None
            and len(blocks) > 0 and all(hasattr(b, "attn") and hasattr(b.attn, "attn_drop") for b in blocks))


@contextlib.contextmanager
def attention_hooks(model: nn.Module):
    """Yields a list that gets each block's attention probabilities (B x heads x N x N), gradients
    retained. Fused attention is switched off while the block runs (it never forms the matrix)."""
    maps: list[torch.Tensor] = []
    model = _vit(model)
    fused = [b.attn.fused_attn for b in model.blocks]

    def keep(mod, inp, out):
        out.retain_grad()
        maps.append(out)

    hooks = [b.attn.attn_drop.register_forward_hook(keep) for b in model.blocks]
    try:
        for b in model.blocks:
            b.attn.fused_attn = False
        yield maps
    finally:
        for h in hooks:
            h.remove()
        for b, f in zip(model.blocks, fused):
            b.attn.fused_attn = f


def rollout(maps: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Class-token relevance of the patch tokens (B x patches) from attention maps with gradients."""
    b, _, n, _ = maps[0].shape
    rel = torch.eye(n).expand(b, n, n).clone()
    for a in maps:
        cam = (a.grad * a).float().clamp(min=0).mean(1)  # float: BlockTokens runs under bf16
        rel = rel + cam @ rel
    return rel[:, 0, prefix:]


class AttentionRollout:
    """The registry's entry point: ``batch_size`` images per forward/backward pass (default 8)."""

    images_per_pass = 8

    @classmethod
    def explain(cls, method: Method, model: nn.Module, images: Sequence, targets: list, layer: str | None = None,
                batch_size: int | None = None, **options) -> list[Explanation]:
        if options:
            raise ExplainError(f"options {sorted(options)} are for LIME; {method.display_name} takes none")
        if layer:
            raise ExplainError(f"{method.display_name} reads every block's attention; it takes no --layer")
        if not attention_model(model):
            raise ExplainError(f"{method.display_name} needs a ViT / DeiT (attention blocks and a class token); "
                               f"for {type(model).__name__} use gradcam")
        step = batch_size or cls.images_per_pass
        out = []
        for i in range(0, len(images), step):
            out += explain_rollout(model, images[i:i + step], targets[i:i + step], method.name)
        return out


def explain_rollout(model: nn.Module, images: Sequence, targets: list, method: str = "rollout") -> list[Explanation]:
    prep = get_prep(model)
    names = label_names(model)
    imgs = [open_image(im) for im in images]
    x = torch.stack([prep.tensor(prep.crop(im)) for im in imgs]).requires_grad_(True)
    # only the attention maps' gradients are needed
    with frozen_eval(model), torch.enable_grad(), attention_hooks(model) as maps:
        logits = model(x)
        targets = [int(logits[k].argmax()) if t is None else t for k, t in enumerate(targets)]
        logits[torch.arange(len(x)), targets].sum().backward()
        rel = rollout(maps, _vit(model).num_prefix_tokens).detach()
    probs = class_probs(logits.detach()).numpy()
    ih, iw = x.shape[-2:]
    gh, gw = _vit(model).patch_embed.grid_size
    out = []
    for im, r, t, p in zip(imgs, rel.numpy(), targets, probs):
        # the token grid to the input size, bicubic: smooth, and each token's value at its centre
        grid = Image.fromarray(normalise(r.reshape(gh, gw)), "F")
        m = normalise(np.asarray(grid.resize((iw, ih), Image.BICUBIC)))
        box = prep.box(im.size)
        out.append(Explanation(
            heatmap=normalise(to_image(m, box, im.size)), target=int(t), label=names[t], score=float(p[t]),
            method=method,
            extra={"layer": "all blocks", "box": [round(v, 2) for v in box], "input_size": list(m.shape),
                   "top": top_classes(p, names), "input_map": m, "class_specific": True}))
    return out
