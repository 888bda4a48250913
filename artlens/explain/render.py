"""Pictures of explanations: colour-mapped heat maps, overlays on the painting, PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_path
from ..images import open_image
from .base import ExplainError, Explanation
from .geometry import to_image


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

        seg = to_image(exp.extra["segments"], exp.extra["box"], img.size, resample=Image.NEAREST)
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
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return path
