"""Model folders that load everywhere: timm (``local-dir:``), transformers (TimmWrapper) and ``pipeline``.

A folder holds ``config.json``, ``model.safetensors``, a ``README.md`` model card, ``all_results.json``
and, when given, the metrics files and the training config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .cards import render_model_card
from .files import atomic_path, write_json, write_text
from .metrics import save_metrics
from .models import BlockTokens, ModelError, _classifier_name, fold_head, load_model, read_config, set_label_names
from .models import label_names as model_label_names

__all__ = ["save_model_folder", "push_to_hub", "model_config"]

# pretrained_cfg keys that describe the source checkpoint, not this export
_DROP_CFG = ("url", "hf_hub_id", "hf_hub_filename", "file", "source", "state_dict", "tag", "label_offset",
             "offline_package", "test_input_size", "test_crop_pct", "test_pool_size")


def model_config(model: nn.Module, names: Sequence[str]) -> dict:
    """``config.json`` content in timm's hub format.

    timm's own ``save_for_hf`` writes ``num_classes`` into ``model_args``, which makes
    transformers' TimmWrapper fail ("got multiple values for keyword argument 'num_classes'");
    here ``num_classes`` lives only at the top level and in ``pretrained_cfg``.
    """
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _DROP_CFG and v is not None}
    arch = cfg.pop("architecture", None) or model.default_cfg.get("architecture")
    cfg["num_classes"] = model.num_classes
    cfg.pop("label_names", None)
    # timm builds a PretrainedCfg dataclass from pretrained_cfg and rejects unknown keys, so the
    # artlens_* settings (threshold, positive label, TTA) live top-level; load_model puts them back.
    extra = {k: cfg.pop(k) for k in list(cfg) if k.startswith("artlens_")}
    out = {
        "architecture": arch,
        "num_classes": model.num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": getattr(model, "global_pool", None) if isinstance(getattr(model, "global_pool", None), str) else "avg",
        "label_names": list(names),
        "pretrained_cfg": json.loads(json.dumps(cfg, default=list)),
    }
    if extra:
        out["artlens"] = json.loads(json.dumps(extra, default=list))
    return out


def _head_state(model: nn.Module, backbone: str) -> dict:
    """The classifier's tensors, after checking that every other tensor is ``backbone``'s pretrained one."""
    ref = load_model(backbone).state_dict()
    if isinstance(model, BlockTokens):
        for k, v in model.backbone.state_dict().items():
            if k not in ref or not torch.equal(v.detach().cpu().float(), ref[k].float()):
                raise ValueError(f"tensor backbone.{k} is not {backbone}'s pretrained one")
        return model.head_state()
    cls = _classifier_name(model)
    sd = model.state_dict()
    for k, v in sd.items():
        if not k.startswith(cls + ".") and (k not in ref or not torch.equal(v.detach().cpu().float(), ref[k].float())):
            raise ValueError(f"tensor {k} is not {backbone}'s pretrained one (a fine-tuned backbone): "
                             "save the whole model (backbone=None)")
    return {k: v for k, v in sd.items() if k.startswith(cls + ".")}


def save_model_folder(model: nn.Module, out_dir, label_names: Sequence[str] | None = None, metrics: dict | None = None,
                      train_config: dict | None = None, datasets=None, card_fields: dict | None = None,
                      dtype: torch.dtype | None = None, results: dict | None = None, backbone: str | None = None) -> Path:
    """Write a model folder. The ArtNet head, if any, is folded into a plain linear classifier first.

    With ``backbone`` (a model whose backbone is exactly that pretrained model, e.g. a linear probe on
    ``vit_base_patch16_clip_quickgelu_224.openai``) ``model.safetensors`` holds only the classifier and
    ``config.json`` names the backbone (``artlens_backbone``): :func:`artlens.models.load_model` adds its
    pretrained weights (offline package, else the Hub). Such a folder is small, but plain timm cannot load
    it; ``artlens export <folder> <out>`` writes the whole model.
    """
    from safetensors.torch import save_file

    if isinstance(model, BlockTokens) and not backbone:
        raise ModelError("this model reads several blocks of its ViT (artlens.models.BlockTokens: the origin and artist "
                         "models): no plain timm architecture holds it, so it cannot be exported whole; its "
                         "folder (heads + backbone name) loads with artlens.models.load_model and artlens predict")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = fold_head(model).eval()
    if label_names is not None:
        set_label_names(model, label_names)
    names = model_label_names(model)
    pcfg = {k: v for k, v in model.pretrained_cfg.items() if k != "artlens_backbone"}
    model.pretrained_cfg = dict(pcfg, artlens_backbone=backbone) if backbone else pcfg
    cfg = model_config(model, names)
    state = _head_state(model, backbone) if backbone else model.state_dict()
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in state.items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    write_json(out / "config.json", cfg, default=str)
    if metrics:
        save_metrics(metrics, out, prefix="test")
    if train_config is not None:
        import yaml

        write_text(out / "train_config.yaml", yaml.safe_dump(train_config, sort_keys=False))
    all_results = dict(results or {})
    if metrics:
        all_results.update({f"test_{k}": v for k, v in metrics.items()
                            if k in ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "n")})
    if "artlens_threshold" in model.pretrained_cfg:
        all_results["threshold"] = model.pretrained_cfg["artlens_threshold"]
    write_json(out / "all_results.json", all_results, default=str)
    fields = dict(card_fields or {})
    fields.setdefault("model_name", out.name)
    render_model_card(out / "README.md", architecture=cfg["architecture"], label_names=names,
                      pretrained_cfg=model.pretrained_cfg, datasets=datasets, metrics=metrics,
                      recipe=fields.pop("recipe", None) or _recipe(train_config), **fields)
    return out


def _recipe(cfg: dict | None) -> dict:
    keys = ("model", "freeze", "head", "epochs", "optimizer", "lr", "schedule", "batch_size", "img_size", "aug",
            "split", "label_smoothing", "class_weights", "cache_features", "train_blocks", "tta", "view_rows", "seed")
    optional = ("train_blocks", "view_rows")  # listed only when used
    return {k: cfg[k] for k in keys if cfg and k in cfg and (cfg[k] or k not in optional)}


def push_to_hub(folder, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload artlens model", repo_type: str = "model") -> str:
    """Upload a folder (model or dataset) with huggingface_hub; token from the usual places."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if repo_type == "model" and not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); export or train one first")
    if repo_type == "model":
        backbone = (read_config(folder).get("artlens") or {}).get("artlens_backbone")
        if backbone:
            raise ValueError(f"{folder} holds only a classifier for the pretrained {backbone}; timm on the Hub "
                             f"needs the whole model: `artlens export {folder} <out> --fp16`, then push <out>")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                             commit_message=commit_message,
                             ignore_patterns=["*.tmp", "checkpoints/*", "*.pt", "*.pth", "*.bin"])
    return str(getattr(info, "commit_url", info))
