"""What the model looked at: CAM family, LIME, faithfulness scores, overlays, class averages.

One call explains any class of any model the project loads::

    exp = explain(model, "painting.jpg", "gradcam", target="Impressionism")
    overlay("painting.jpg", exp).save("overlay.png")

Heat maps are computed on exactly the tensor the prediction uses (``artlens.data.eval_transform``)
and mapped back onto the input image: the region the centre crop kept gets the map, resized; the
part of the image the model never saw (outside the crop) is 0. ``exp.extra["box"]`` is that
region in image pixels and ``exp.extra["input_map"]`` the map on the model's input grid.

The modules, as in pytorch-grad-cam: ``registry`` (the one list of methods: :data:`REGISTRY`),
``api`` (:func:`explain`), ``cam`` (:class:`~artlens.explain.cam.BaseCAM` and one class per CAM
method), ``rollout`` (gradient-weighted attention rollout, ViTs), ``lime``, ``deletion`` (deletion/insertion AUC), ``render`` (colour maps, overlays),
``dataset`` (class-average maps), and ``base`` / ``geometry`` (what they share).
"""
from .api import explain, explain_batch
from .base import ExplainError, Explanation, heat_stats
from .cam import default_layer, layer_names
from .dataset import class_average_maps, plot_class_maps
from .deletion import deletion_score, faithfulness, random_map
from .lime import SEGMENTATIONS, plain_lime
from .registry import (
    CAM_METHODS,
    METHODS,
    REGISTRY,
    Method,
    default_method,
    display_names,
    get_method,
    method_names,
)
from .render import heatmap_image, overlay, save_png

__all__ = [
    "METHODS", "CAM_METHODS", "ExplainError", "Explanation", "explain", "explain_batch", "overlay",
    "default_layer", "layer_names", "deletion_score", "faithfulness", "random_map",
    "class_average_maps", "plot_class_maps", "heatmap_image", "save_png", "plain_lime",
    "REGISTRY", "Method", "default_method", "method_names", "display_names", "get_method", "heat_stats", "SEGMENTATIONS",
]
