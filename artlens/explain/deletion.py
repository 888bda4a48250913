"""Is the map faithful to the model? Deletion and insertion AUC (RISE, Petsiuk et al. 2018) and
the random baseline a real explanation must beat."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..images import open_image
from .base import ExplainError, Explanation, class_probs, resolve_target
from .geometry import get_prep, to_input


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
    prep = get_prep(model)
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
    m = to_input(hm, prep.box(img.size), x.shape[-2:])
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
        target = resolve_target(model, target)
        flat_s, flat_f = start.reshape(3, -1), finish.reshape(3, -1)
        for i in range(0, len(counts), batch_size):
            batch = []
            for c in counts[i:i + batch_size]:
                cur = flat_s.clone()
                idx = order[:c]
                cur[:, idx] = flat_f[:, idx]
                batch.append(cur.reshape(x.shape))
            probs += class_probs(model(torch.stack(batch)))[:, target].tolist()
    model.train(was_training)
    p = np.asarray(probs)
    return float((p[:-1] + p[1:]).sum() / 2 / steps)


def faithfulness(model: nn.Module, image, explanation: Explanation, steps: int = 20) -> dict:
    """Deletion and insertion AUC of one explanation (for its own target)."""
    return {"deletion_auc": deletion_score(model, image, explanation, mode="deletion", steps=steps),
            "insertion_auc": deletion_score(model, image, explanation, mode="insertion", steps=steps)}
