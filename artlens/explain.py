"""What the model looked at: CAM family, LIME, faithfulness scores, overlays, class averages.

One call explains any class of any model the project loads::

    exp = explain(model, "painting.jpg", "gradcam", target="Impressionism")
    overlay("painting.jpg", exp).save("overlay.png")

Heat maps are computed on exactly the tensor the prediction uses (``artlens.data.eval_transform``)
and mapped back onto the input image: the region the centre crop kept gets the map, resized; the
part of the image the model never saw (outside the crop) is 0. ``exp.extra["box"]`` is that
region in image pixels and ``exp.extra["input_map"]`` the map on the model's input grid.
"""
from __future__ import annotations

import contextlib
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import eval_transform
from .images import open_image
from .models import BlockTokens, label_names

__all__ = [
    "METHODS", "CAM_METHODS", "ExplainError", "Explanation", "explain", "explain_batch", "overlay",
    "default_layer", "layer_names", "deletion_score", "faithfulness", "random_map",
    "class_average_maps", "plot_class_maps", "heatmap_image", "save_png", "plain_lime",
]

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam")
METHODS = CAM_METHODS + ("lime",)
SEGMENTATIONS = ("slic", "quickshift")


class ExplainError(ValueError):
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


# ---------------------------------------------------------------- preprocessing geometry

_TENSOR_OPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor")


class _Prep:
    """The model's eval transform split into its geometric part (PIL -> PIL) and the rest."""

    def __init__(self, model: nn.Module):
        tf = eval_transform(model)
        ops = list(getattr(tf, "transforms", [tf]))
        i = next((k for k, op in enumerate(ops) if type(op).__name__ in _TENSOR_OPS), len(ops))
        self.geo, self.post = ops[:i], ops[i:]
        self.tf = tf
        self._boxes: dict = {}

    def crop(self, img: Image.Image) -> Image.Image:
        for op in self.geo:
            img = op(img)
        return img

    def tensor(self, crop: Image.Image) -> torch.Tensor:
        x = crop
        for op in self.post:
            x = op(x)
        return x

    def box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The region (x0, y0, x1, y1) of an image of ``size`` that ends up as the model input."""
        if size not in self._boxes:
            self._boxes[size] = self._box(size)
        return self._boxes[size]

    def _box(self, size):
        w, h = size
        x0, y0, x1, y1 = 0.0, 0.0, float(w), float(h)
        cw, ch = w, h
        for op in self.geo:
            ow, oh = op(Image.new("RGB", (cw, ch))).size  # the op itself says what size it makes
            name = type(op).__name__
            if "Crop" in name or name == "TrimBorder":
                left = getattr(op, "border_size", None) if name == "TrimBorder" else int(round((cw - ow) / 2.0))
                top = left if name == "TrimBorder" else int(round((ch - oh) / 2.0))
                sx, sy = (x1 - x0) / cw, (y1 - y0) / ch
                x0, y0 = x0 + left * sx, y0 + top * sy
                x1, y1 = x0 + ow * sx, y0 + oh * sy
            cw, ch = ow, oh
        return x0, y0, x1, y1


_PREP_CACHE: "weakref.WeakKeyDictionary[nn.Module, _Prep]" = weakref.WeakKeyDictionary()


def _prep(model: nn.Module) -> _Prep:
    prep = _PREP_CACHE.get(model)
    if prep is None:
        prep = _PREP_CACHE[model] = _Prep(model)
    return prep


def _to_image(input_map: np.ndarray, box, size, resample=Image.BILINEAR) -> np.ndarray:
    """Map from the model-input grid back onto the whole image; 0 outside the crop."""
    w, h = size
    x0, y0, x1, y1 = box
    ih, iw = input_map.shape
    sx, sy = iw / (x1 - x0), ih / (y1 - y0)
    mode = "I" if np.issubdtype(input_map.dtype, np.integer) else "F"
    # Integer maps (superpixel ids) are shifted by one, so that -1 marks "outside the crop".
    src = Image.fromarray(input_map.astype(np.int32) + 1 if mode == "I" else input_map.astype(np.float32), mode)
    out = src.transform((w, h), Image.EXTENT, ((0 - x0) * sx, (0 - y0) * sy, (w - x0) * sx, (h - y0) * sy),
                        resample=resample)
    arr = np.asarray(out)
    return (arr - 1) if mode == "I" else np.clip(arr, 0, None).astype(np.float32)


def _to_input(image_map: np.ndarray, box, input_hw) -> np.ndarray:
    """Map at the image's size -> the model-input grid (the same crop the transform makes)."""
    ih, iw = input_hw
    src = Image.fromarray(image_map.astype(np.float32), "F")
    return np.asarray(src.transform((iw, ih), Image.EXTENT, tuple(box), resample=Image.BILINEAR), dtype=np.float32)


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    m = m - m.min()
    top = m.max()
    return m / top if top > 0 else m


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


def _get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        top = [n for n, _ in model.named_children()]
        raise ExplainError(f"the model has no layer '{name}'; layers to try: {', '.join(layer_names(model)) or top}"
                           ) from None


def _reshape_transform(model: nn.Module, input_hw) -> Callable[[torch.Tensor], torch.Tensor]:
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


@contextlib.contextmanager
def _cam(model: nn.Module, method: str, layer: str, input_hw):
    """A pytorch-grad-cam object whose hooks are released however the block ends."""
    import pytorch_grad_cam as pgc

    cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
           "eigencam": pgc.EigenCAM, "layercam": pgc.LayerCAM}[method]
    was_training = model.training
    module = _get_layer(model, layer)
    # Only the gradient at the target layer is needed: its output becomes a leaf that requires
    # grad and no weight does, so the backward pass runs from the logits down to that layer only
    # (not through the early high-resolution layers), and frozen models work too.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    # pytorch-grad-cam reads activations and gradients as numpy arrays, which have no bfloat16
    bf16 = getattr(model, "bf16", None)
    if bf16:
        model.bf16 = False
    leaf = module.register_forward_hook(
        lambda mod, inp, out: out.detach().requires_grad_(True) if torch.is_tensor(out) and out.is_floating_point() else None)
    cam = None
    try:
        cam = cls(model=model, target_layers=[module], reshape_transform=_reshape_transform(model, input_hw))
        cam.batch_size = 32  # Score-CAM: masked copies per forward
        yield cam
    finally:
        leaf.remove()
        if cam is not None:
            cam.activations_and_grads.release()
        for p, f in flags:
            p.requires_grad_(f)
        if bf16:
            model.bf16 = bf16
        model.train(was_training)


# ---------------------------------------------------------------- targets

def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else logits.softmax(-1)


def _resolve_target(model: nn.Module, target) -> int | None:
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


def _top(probs: np.ndarray, names: list[str], k: int = 5) -> list:
    idx = np.argsort(-probs)[:k]
    return [{"label": names[i], "score": round(float(probs[i]), 6)} for i in idx]


# ---------------------------------------------------------------- the one call

def explain(model: nn.Module, image, method: str = "gradcam", target=None, layer: str | None = None,
            **kwargs) -> Explanation:
    """Explain one image (anything ``open_image`` accepts) for ``target`` (label, index or None = top class).

    CAM methods take ``layer`` (a module name; default :func:`default_layer`). LIME takes
    ``num_samples``, ``batch_size``, ``segmentation`` (slic|quickshift), ``n_segments``,
    ``hide_color``, ``seed`` and ``progress`` (a callable getting the fraction done).
    """
    return explain_batch(model, [image], method, target=target, layer=layer, **kwargs)[0]


def explain_batch(model: nn.Module, images: Sequence, method: str = "gradcam", target=None,
                  layer: str | None = None, batch_size: int | None = None, **kwargs) -> list[Explanation]:
    """Explain several images; ``target`` is one target for all or a list with one per image.

    ``batch_size``: images per CAM pass (default 8); for LIME, perturbed copies per forward pass.
    """
    method = method.lower().replace("_", "").replace("-", "")
    method = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}.get(method, method)
    if method not in METHODS:
        raise ExplainError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(images)
    if len(targets) != len(images):
        raise ExplainError(f"{len(targets)} targets for {len(images)} images")
    targets = [_resolve_target(model, t) for t in targets]
    if method == "lime":
        if layer:
            raise ExplainError("LIME has no target layer; --layer is for the CAM methods")
        if batch_size:
            kwargs["batch_size"] = batch_size
        return [_explain_lime(model, img, t, **kwargs) for img, t in zip(images, targets)]
    if kwargs:
        raise ExplainError(f"options {sorted(kwargs)} are for LIME; the CAM methods take only layer")
    out = []
    batch_size = batch_size or 8
    for i in range(0, len(images), batch_size):
        out += _explain_cam(model, images[i:i + batch_size], method, targets[i:i + batch_size], layer)
    return out


def _explain_cam(model, images, method, targets, layer) -> list[Explanation]:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    prep = _prep(model)
    names = label_names(model)
    imgs = [open_image(im) for im in images]
    x = torch.stack([prep.tensor(prep.crop(im)) for im in imgs])
    layer = layer or default_layer(model)
    with torch.enable_grad(), _cam(model, method, layer, x.shape[-2:]) as cam:
        if all(t is None for t in targets):
            maps = cam(input_tensor=x, targets=None)  # the top class of each image, from the same forward
            targets = cam.outputs.detach().argmax(-1).tolist()
        else:
            if any(t is None for t in targets):
                with torch.no_grad():
                    pred = model(x).argmax(-1).tolist()
                targets = [p if t is None else t for t, p in zip(targets, pred)]
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        probs = _probs(cam.outputs.detach()).numpy()
    out = []
    for im, m, t, p in zip(imgs, maps, targets, probs):
        m = _normalise(m)
        box = prep.box(im.size)
        out.append(Explanation(
            heatmap=_normalise(_to_image(m, box, im.size)), target=int(t), label=names[t], score=float(p[t]),
            method=method,
            extra={"layer": layer, "box": [round(v, 2) for v in box], "input_size": list(m.shape),
                   "top": _top(p, names), "input_map": m,
                   "class_specific": method != "eigencam"}))
    return out


# ---------------------------------------------------------------- LIME

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
            p = _probs(model(x)).numpy()
        done[0] += len(batch)
        if progress is not None:
            progress(min(1.0, done[0] / total))
        return p

    return fn


def _mean_std(model):
    from .data import data_config

    cfg = data_config(model)
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def _explain_lime(model, image, target, num_samples: int = 200, batch_size: int = 16,
                  segmentation: str = "slic", n_segments: int = 40, compactness: float = 10.0,
                  hide_color=None, seed: int = 0, positive: int = 5,
                  progress: Callable[[float], None] | None = None) -> Explanation:
    """LIME on the model-input crop: every perturbed copy goes straight to the backbone."""
    from lime import lime_image

    prep = _prep(model)
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
        heatmap=np.clip(_to_image(input_map, box, img.size), 0, 1), target=int(target), label=names[target],
        score=float(p0[target]), method=method,
        extra={"box": [round(v, 2) for v in box], "input_size": list(seg.shape), "top": _top(p0, names),
               "input_map": input_map.astype(np.float32), "rank_map": _to_image(rank.astype(np.float32), box, img.size),
               "segments": seg, "weights": weights,
               "positive_segments": [int(s) for s in order[:positive] if weights[s] > 0],
               "negative_segments": [int(s) for s in order[::-1][:positive] if weights[s] < 0],
               "num_segments": int(len(weights)), **info})


def plain_lime(model: nn.Module, image, target=None, seed: int = 0) -> Explanation:
    """The library used as its README shows: ``explain_instance`` with its defaults (1000 samples,
    batch size 10, quickshift) on the image, the classifier preprocessing every copy. For comparison
    in the benchmark and tests only; :func:`explain` with ``method="lime"`` is the one to use."""
    from lime import lime_image

    prep = _prep(model)
    names = label_names(model)
    img = open_image(image)
    target = _resolve_target(model, target)

    def fn(batch):
        x = torch.stack([prep.tf(Image.fromarray(b.astype(np.uint8))) for b in batch])
        with torch.no_grad():
            return _probs(model(x)).numpy()

    arr = np.asarray(img, dtype=np.uint8)
    p0 = fn(arr[None])[0]
    target = int(np.argmax(p0)) if target is None else target
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(arr, fn, random_seed=seed,
                                                                             labels=(target,), top_labels=None)
    # Put the image-sized segments on the input grid, so the result reads like explain()'s.
    seg_in = _to_input_nearest(np.asarray(exp.segments), prep.box(img.size), tuple(prep.tensor(prep.crop(img)).shape[-2:]))
    exp.segments = seg_in
    return _lime_explanation(exp, target, names, p0, img, prep, "lime-plain", 5,
                             {"num_samples": 1000, "segmentation": "quickshift", "seed": seed})


def _to_input_nearest(seg: np.ndarray, box, input_hw) -> np.ndarray:
    ih, iw = input_hw
    src = Image.fromarray(seg.astype(np.int32), "I")
    return np.asarray(src.transform((iw, ih), Image.EXTENT, tuple(box), resample=Image.NEAREST)).astype(np.int64)


# ---------------------------------------------------------------- faithfulness

def random_map(shape, cells: int = 7, seed: int = 0) -> np.ndarray:
    """A random ordering of ``cells x cells`` blocks: the baseline a real explanation must beat."""
    h, w = shape
    rng = np.random.default_rng(seed)
    block = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(block, "F").resize((w, h), Image.NEAREST), dtype=np.float32)


def deletion_score(model: nn.Module, image, heatmap, target=None, mode: str = "deletion", steps: int = 20,
                   batch_size: int = 32) -> float:
    """Area under the target-class probability curve as the most important pixels are removed
    (``deletion``: lower is better) or added back (``insertion``: higher is better).

    ``heatmap`` is an :class:`Explanation` or a map at the image's size. Pixels are ranked on the
    model-input grid; removed pixels take the dataset mean colour (0 after normalisation),
    insertion starts from a blurred copy (RISE, Petsiuk et al. 2018). The curve has ``steps + 1``
    points from 0 to 100% of the pixels; the area is normalised to 0..1.
    """
    if mode not in ("deletion", "insertion"):
        raise ExplainError(f"unknown mode '{mode}'; use deletion or insertion")
    prep = _prep(model)
    img = open_image(image)
    x = prep.tensor(prep.crop(img))
    if isinstance(heatmap, Explanation):
        target = heatmap.target if target is None else target
        hm = heatmap.extra.get("rank_map", heatmap.heatmap)
    else:
        hm = np.asarray(heatmap, dtype=np.float32)
    if hm.shape != (img.size[1], img.size[0]):
        raise ExplainError(f"heat map of shape {hm.shape} for an image of {img.size[1]}x{img.size[0]}; "
                           f"pass the map explain() returned (image size)")
    m = _to_input(hm, prep.box(img.size), x.shape[-2:])
    order = torch.from_numpy(np.argsort(-m.ravel(), kind="stable").copy())
    n = order.numel()
    if mode == "deletion":
        start, finish = x, torch.zeros_like(x)
    else:
        from torchvision.transforms.functional import gaussian_blur

        start, finish = gaussian_blur(x, kernel_size=11, sigma=5.0), x
    counts = [round(n * k / steps) for k in range(steps + 1)]
    probs = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        if target is None:
            target = int(model(x[None]).argmax(-1))
        target = _resolve_target(model, target)
        flat_s, flat_f = start.reshape(3, -1), finish.reshape(3, -1)
        for i in range(0, len(counts), batch_size):
            batch = []
            for c in counts[i:i + batch_size]:
                cur = flat_s.clone()
                idx = order[:c]
                cur[:, idx] = flat_f[:, idx]
                batch.append(cur.reshape(x.shape))
            probs += _probs(model(torch.stack(batch)))[:, target].tolist()
    model.train(was_training)
    p = np.asarray(probs)
    return float((p[:-1] + p[1:]).sum() / 2 / steps)


def faithfulness(model: nn.Module, image, explanation: Explanation, steps: int = 20) -> dict:
    """Deletion and insertion AUC of one explanation (for its own target)."""
    return {"deletion_auc": deletion_score(model, image, explanation, mode="deletion", steps=steps),
            "insertion_auc": deletion_score(model, image, explanation, mode="insertion", steps=steps)}


# ---------------------------------------------------------------- overlays

def heatmap_image(heatmap: np.ndarray, colormap: str = "jet") -> Image.Image:
    """A 0..1 map as an RGB image in a matplotlib colour map."""
    from matplotlib import colormaps

    rgb = colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3]
    return Image.fromarray((rgb * 255).astype(np.uint8))


def overlay(image, explanation: Explanation | np.ndarray, alpha: float = 0.5, colormap: str = "jet",
            boundaries: bool = True) -> Image.Image:
    """The heat map over the painting (``alpha`` of colour map). For LIME, the superpixels that
    raise the target's probability most are outlined in green, those that lower it most in red."""
    img = open_image(image)
    exp = explanation if isinstance(explanation, Explanation) else None
    hm = exp.heatmap if exp is not None else np.asarray(explanation, dtype=np.float32)
    if hm.shape != (img.size[1], img.size[0]):
        raise ExplainError(f"heat map {hm.shape} does not match the image ({img.size[1]}x{img.size[0]}); "
                           f"overlay the image that was explained")
    base = np.asarray(img, dtype=np.float32)
    # Heat is blended in proportion to its strength, so cold regions keep the painting's colours.
    a = alpha * np.clip(hm, 0, 1)[..., None] ** 0.5
    out = base * (1 - a) + np.asarray(heatmap_image(hm, colormap), dtype=np.float32) * a
    if exp is not None and "box" in exp.extra:
        x0, y0, x1, y1 = exp.extra["box"]
        outside = np.ones(hm.shape, bool)
        outside[max(0, round(y0)):max(0, round(y1)), max(0, round(x0)):max(0, round(x1))] = False
        out[outside] *= 0.5  # the part of the image the model did not see
    if boundaries and exp is not None and "segments" in exp.extra:
        from skimage.segmentation import find_boundaries

        seg = _to_image(exp.extra["segments"], exp.extra["box"], img.size, resample=Image.NEAREST)
        for ids, colour in ((exp.extra["positive_segments"], (0, 255, 0)), (exp.extra["negative_segments"], (255, 0, 0))):
            if ids:
                mask = np.isin(seg, ids)
                edge = find_boundaries(mask, mode="inner")
                edge[1:] |= edge[:-1]  # 2 px wide, so the outline shows on large images
                edge[:, 1:] |= edge[:, :-1]
                out[edge & mask] = colour
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG through a temporary name, so an interrupted run leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- class averages

def class_average_maps(model: nn.Module, data, method: str = "gradcam", size: int = 64,
                       max_per_class: int | None = 50, target: str = "label", layer: str | None = None,
                       batch_size: int = 8, seed: int = 0, counts: dict | None = None, **kwargs) -> dict:
    """Average normalised heat map of each class of a dataset, resized to ``size x size``.

    ``data`` is an imagefolder path or a dataset from :func:`artlens.data.load_data`. ``target``:
    ``label`` explains each image's own class when the model has it (else its top prediction);
    ``predicted`` always explains the top prediction. Maps are squashed to the square, so "top
    right" means the same region for every image. Returns ``{label: size x size array}``; pass a
    dict as ``counts`` to get the number of images behind each map.
    """
    from tqdm.auto import tqdm

    from .data import cap_per_class, load_data

    ds = load_data(str(data)) if isinstance(data, (str, os.PathLike)) else data
    ds = cap_per_class(ds, max_per_class, seed=seed)
    if target not in ("label", "predicted"):
        raise ExplainError(f"unknown target '{target}'; use label or predicted")
    names = set(label_names(model))
    sums: dict[str, np.ndarray] = {}
    n: dict[str, int] = {}
    labels = list(ds["label"])
    step = 1 if method == "lime" else batch_size
    for i in tqdm(range(0, len(ds), step), desc=f"{method} class maps", leave=False):
        rows = ds.select(range(i, min(i + step, len(ds))))
        imgs = [r["bytes"] if r.get("bytes") else r["path"] for r in rows["image"]]
        labs = labels[i:i + step]
        tg = [lab if target == "label" and lab in names else None for lab in labs]
        exps = explain_batch(model, imgs, method, target=tg, layer=layer,
                             batch_size=None if method == "lime" else step, **kwargs)
        for lab, exp in zip(labs, exps):
            m = np.asarray(Image.fromarray(exp.heatmap.astype(np.float32), "F").resize((size, size), Image.BILINEAR))
            sums[lab] = sums.get(lab, 0) + m
            n[lab] = n.get(lab, 0) + 1
    if counts is not None:
        counts.update(n)
    return {lab: (sums[lab] / n[lab]).astype(np.float32) for lab in sorted(sums)}


def plot_class_maps(maps_by_model: dict, path: str | os.PathLike | None = None, colormap: str = "jet",
                    title: str | None = None, labels: Sequence[str] | None = None):
    """Grid figure: one row per model, one column per class, each cell a class-average map.

    ``maps_by_model`` is ``{model name: {label: map}}`` (as from :func:`class_average_maps`). All
    cells share one colour scale (0..1), so rows can be compared. Returns the matplotlib figure and
    writes it as PNG when ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else sorted({lab for maps in maps_by_model.values() for lab in maps})
    rows, cols = len(maps_by_model), len(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.2, 1.7 * rows + 0.6), squeeze=False)
    im = None
    for r, (name, maps) in enumerate(maps_by_model.items()):
        for c, lab in enumerate(labels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if lab in maps:
                im = ax.imshow(maps[lab], cmap=colormap, vmin=0, vmax=1)
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            if r == 0:
                ax.set_title(lab.replace("_", " "), fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    return fig
