"""Preprocessing geometry: which part of the image the model sees, and maps moved between the
model-input grid and the image."""
from __future__ import annotations

import weakref

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import eval_transform

_TENSOR_OPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor")


class Prep:
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


_PREP_CACHE: weakref.WeakKeyDictionary[nn.Module, Prep] = weakref.WeakKeyDictionary()


def get_prep(model: nn.Module) -> Prep:
    """The model's :class:`Prep`, built once per model."""
    prep = _PREP_CACHE.get(model)
    if prep is None:
        prep = _PREP_CACHE[model] = Prep(model)
    return prep


def to_image(input_map: np.ndarray, box, size, resample=Image.BILINEAR) -> np.ndarray:
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


def to_input(image_map: np.ndarray, box, input_hw) -> np.ndarray:
    """Map at the image's size -> the model-input grid (the same crop the transform makes)."""
    ih, iw = input_hw
    src = Image.fromarray(image_map.astype(np.float32), "F")
    return np.asarray(src.transform((iw, ih), Image.EXTENT, tuple(box), resample=Image.BILINEAR), dtype=np.float32)


def to_input_nearest(seg: np.ndarray, box, input_hw) -> np.ndarray:
    """Integer map (superpixel ids) at the image's size -> the model-input grid, nearest neighbour."""
    ih, iw = input_hw
    src = Image.fromarray(seg.astype(np.int32), "I")
    return np.asarray(src.transform((iw, ih), Image.EXTENT, tuple(box), resample=Image.NEAREST)).astype(np.int64)
