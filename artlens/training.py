"""Training: the trainer's flags and the run that ``trainers/train.py`` (the entry point: exit codes) calls.

Like timm's ``train.py`` over ``timm.optim.create_optimizer_v2`` / ``timm.scheduler.create_scheduler_v2``:

- :func:`build_parser`, :func:`parse_args`: the trainer's flags, with a strict ``--config`` YAML (:mod:`artlens.config`);
- :func:`create_optimizer`, :func:`create_scheduler`: from the trainer's flags (a Namespace) or a dict/kwargs;
- :func:`load_dataset`, :func:`make_split`, :func:`label_map_path`: the rows to train on and where each goes;
- :func:`set_train_mode`, :func:`predict_loader`, :func:`save_weights`: pieces of the epoch loop;
- :func:`train`: the whole run (Accelerate loop, resumable checkpoints, best checkpoint on the test split,
  threshold of binary origin models, model folder) on the Namespace of :func:`parse_args`; scripts run whole
  trainings in-process with ``train(parse_args(argv))``;
- :func:`read_results`: the results dict of a finished run, from its output folder.

The threshold rules (``choose_threshold``, ``calibrated_threshold``) are in :mod:`artlens.metrics`.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as D
from .config import ConfigError, parse_with_config, save_config
from .data import DataError
from .export import push_to_hub, save_model_folder
from .features import extract_features
from .files import atomic_path, write_json
from .metrics import calibrated_threshold, choose_threshold, compute_metrics, save_metrics
from .models import Tail, freeze, load_model, set_head

__all__ = ["build_parser", "parse_args", "str2bool", "optional_int", "optional_str", "threshold_arg",
           "create_optimizer", "create_scheduler", "label_map_path", "load_dataset", "make_split", "set_train_mode",
           "predict_loader", "save_weights", "train", "read_results"]

LABEL_MAPS = Path(__file__).resolve().parent / "label_maps"


# ---------------------------------------------------------------- flags (trainers/train.py's)

DESCRIPTION = "Fine-tune a timm image classifier on paintings with Accelerate."
LIST_KEYS = ("data", "data_labels", "train_extra", "test_data", "compose_prefix")


def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off", "none", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{v}'")


def optional_int(v):
    return None if v is None or str(v).lower() in ("", "none", "null", "0") else int(v)


def optional_str(v):
    return None if v is None or str(v).lower() in ("", "none", "null") else str(v)


def threshold_arg(value: str) -> str:
    """--threshold: auto, calibrated, none or a probability."""
    v = str(value).strip().lower()
    if v in ("auto", "calibrated", "none"):
        return v
    try:
        t = float(v)
    except ValueError:
        t = -1.0
    if not 0.0 < t < 1.0:
        raise argparse.ArgumentTypeError(f"'{value}' is not a threshold; use auto, calibrated, none or a number "
                                         "between 0 and 1 (e.g. 0.5)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file whose keys are these flags (underscores); flags override it")
    p.add_argument("--output-dir", default=None, help="where checkpoints, metrics and the model folder go (required)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tf_efficientnet_lite0",
                   help="timm name, model folder, Hub id (org/name), or style/artist/origin")
    g.add_argument("--pretrained", type=str2bool, default=True, help="start from pretrained weights")
    g.add_argument("--freeze", default="none", help="none | linear_probe | prefixes:conv1,bn1,layer1 | top:0.3")
    g.add_argument("--head", default="linear", choices=["linear", "artnet"], help="artnet: dropout->BN->linear (folded on export)")
    g.add_argument("--head-dropout", type=float, default=0.5, help="dropout of the artnet head")
    g.add_argument("--drop-rate", type=float, default=0.0, help="timm dropout before the classifier")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="imagefolder path or Hub dataset id; several as a YAML list or comma-separated (labels from each, or --data-labels)")
    g.add_argument("--data-labels", default=None, help="one label per --data folder: every image of folder i gets label i")
    g.add_argument("--train-extra", default=None,
                   help="more sources (folders or Hub ids, list or comma-separated) added to the training split only")
    g.add_argument("--test-data", default=None,
                   help="a separate test set (all of it is the test split; --data is then split into train/validation)")
    g.add_argument("--dataset-split", default=None, help="split of a Hub dataset to read (default train)")
    g.add_argument("--image-column", default="image")
    g.add_argument("--label-column", default="label")
    g.add_argument("--group-column", default=None, type=optional_str, help="artist column for --split group (default: from file names)")
    g.add_argument("--label-map", default=None, type=optional_str,
                   help="YAML 'coarse: [fine, ...]' merging labels, or a shipped map's name (artnet5, ai_artbench20, ...)")
    g.add_argument("--compose-prefix", default=None, type=optional_str,
                   help="prefix labels (AI -> AI_baroque); one prefix per --data source for origin x style labels")
    g.add_argument("--split", default="random", choices=["random", "group"], help="group = artist-disjoint")
    g.add_argument("--split-file", default=None, type=optional_str, help="reuse a split.json written by an earlier run")
    g.add_argument("--test-size", type=float, default=0.2)
    g.add_argument("--val-size", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--max-per-class", type=optional_int, default=None, help="cap images per label before splitting")
    g.add_argument("--max-train-samples", type=optional_int, default=None, help="cap the training split")
    g.add_argument("--class-weights", type=str2bool, default=False, help="class-weighted loss (balanced weights)")
    g.add_argument("--img-size", type=optional_int, default=None, help="input size (default: the model's)")
    g.add_argument("--pad-square", type=str2bool, default=False,
                   help="pad to square instead of cropping (stored in the exported config: crop_mode=border)")
    g.add_argument("--five-crop", type=str2bool, default=False,
                   help="train on the 4 corners + centre at full resolution; evaluation averages the 5")
    g.add_argument("--aug", default="flip", choices=["none", "flip", "flip_rotate", "robust"])
    g.add_argument("--rotation", type=float, default=15.0, help="degrees for --aug flip_rotate")
    g.add_argument("--num-workers", type=int, default=0)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--eval-batch-size", type=optional_int, default=None)
    g.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd"])
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--l1", type=float, default=0.0, help="L1 penalty on the trainable weights")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step", "onecycle", "constant"])
    g.add_argument("--step-epochs", type=int, default=2, help="step schedule: multiply the lr by --step-gamma every N epochs")
    g.add_argument("--step-gamma", type=float, default=0.5)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    g.add_argument("--patience", type=optional_int, default=None, help="early stopping: epochs without improvement")
    g.add_argument("--metric", default="accuracy", choices=["accuracy", "balanced_accuracy", "f1_macro", "loss"],
                   help="validation metric for the best checkpoint and early stopping")
    g = p.add_argument_group("frozen-backbone fast path")
    g.add_argument("--cache-features", type=str2bool, default=False,
                   help="with --freeze linear_probe: compute backbone features once (disk cache), train the head on them")
    g.add_argument("--feature-copies", type=int, default=1, help="augmented copies of each training image in the cache")
    g.add_argument("--tta", default="none", choices=["none", "flip", "crops"],
                   help="average features (cache) or predictions over these views; stored as the model's default")
    g.add_argument("--predict-tta", default=None, choices=["none", "flip", "crops"],
                   help="views for validation, test and the stored default when they should differ from the training "
                        "rows of --tta (e.g. train on flip rows, predict with crops); default: same as --tta")
    g.add_argument("--view-rows", type=str2bool, default=False,
                   help="with --cache-features and --tta: every view is a row of its own (training rows that augment; "
                        "validation/test probabilities averaged over the views, as the predictor does)")
    g.add_argument("--train-blocks", type=int, default=0,
                   help="with --cache-features: also fine-tune the last N block stages and conv_head of an "
                        "EfficientNet/MobileNet on cached outputs of the stages below them (0: linear probe)")
    g.add_argument("--threshold", default="auto", type=threshold_arg,
                   help="binary origin models: 'auto' (maximise balanced accuracy on validation), 'calibrated' "
                        "(where a class-balanced logistic fit of the validation probabilities crosses 0.5: the same "
                        "aim, less sensitive to a few validation images), a number in (0, 1), or none")
    g.add_argument("--positive-label", default="ai", help="the class whose probability the threshold applies to")
    g = p.add_argument_group("run")
    g.add_argument("--resume", type=str2bool, default=False, help="continue from the last checkpoint in --output-dir")
    g.add_argument("--keep-checkpoints", type=str2bool, default=False, help="keep checkpoints/ after training")
    g.add_argument("--log-with", default="none", choices=["none", "tensorboard", "trackio"])
    g.add_argument("--push-to-hub", default=None, type=optional_str, help="Hub repo id to upload the model folder to")
    g.add_argument("--hub-private", type=str2bool, default=False)
    g.add_argument("--model-name", default=None, type=optional_str, help="name in the model card (default: folder name)")
    g.add_argument("--summary", default="", help="one paragraph for the model card")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Flags, with ``--config`` YAML values as defaults. Unknown YAML keys raise :class:`ConfigError`."""
    args = parse_with_config(build_parser(), argv, exit_on_error=False)
    for k in LIST_KEYS:
        v = getattr(args, k)
        if isinstance(v, str):
            setattr(args, k, [s.strip() for s in v.split(",") if s.strip()] if "," in v or k == "data_labels" else v)
    if not args.output_dir:
        raise ConfigError("no output folder: pass --output-dir DIR (or output_dir: in the config)")
    if not args.data:
        raise ConfigError("no data: pass --data FOLDER_OR_HUB_ID (or data: in the config)")
    if args.cache_features and args.freeze not in ("linear_probe", "linear", "frozen"):
        raise ConfigError(f"--cache-features needs a frozen backbone (--freeze linear_probe), got --freeze {args.freeze}")
    if args.train_blocks and not args.cache_features:
        raise ConfigError("--train-blocks works on cached features: add --cache-features true --freeze linear_probe, "
                          "or fine-tune without the cache with --freeze prefixes:... / top:0.3")
    if args.train_blocks < 0:
        raise ConfigError(f"--train-blocks must be 0 or more, got {args.train_blocks}")
    if args.predict_tta is None:
        args.predict_tta = args.tta
    if args.train_blocks and (args.tta != "none" or args.predict_tta != "none") and not args.view_rows:
        raise ConfigError("--train-blocks with --tta needs --view-rows true (spatial maps of views cannot be averaged)")
    if args.data_labels and (not isinstance(args.data, list) or len(args.data) != len(args.data_labels)):
        n = len(args.data) if isinstance(args.data, list) else 1
        raise ConfigError(f"--data-labels gives {len(args.data_labels)} labels for {n} data folder(s); give one label per folder")
    if isinstance(args.data, list) and len(args.data) == 1 and not args.data_labels:
        args.data = args.data[0]
    try:  # a YAML number skips the flag's type check
        args.threshold = threshold_arg(args.threshold)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"--threshold: {e}") from None
    return args


# ---------------------------------------------------------------- data

def _load_one(args, data, prefix=None):
    ds = D.load_data(data, image_column=args.image_column, label_column=args.label_column,
                     split=args.dataset_split, group_column=args.group_column)
    if args.label_map:
        ds = D.apply_label_map(ds, D.load_label_map(label_map_path(args.label_map)))
        if len(ds) == 0:
            raise DataError(f"the label map {args.label_map} matches none of the labels in {data}")
    if prefix:
        ds = D.compose_labels(ds, prefix)
    return D.cap_per_class(ds, args.max_per_class, seed=args.seed)


def label_map_path(name: str) -> Path:
    """A YAML path, or the name of a map shipped in artlens/label_maps (``artnet5``)."""
    p = Path(name)
    if p.exists():
        return p
    shipped = LABEL_MAPS / f"{p.stem}.yaml"
    if "/" not in name and shipped.exists():
        return shipped
    known = sorted(f.stem for f in LABEL_MAPS.glob("*.yaml"))
    raise DataError(f"label map '{name}' not found: pass a YAML file or one of {', '.join(known)}")


def _as_list(v) -> list:
    return [] if v in (None, "", []) else list(v) if isinstance(v, (list, tuple)) else [s.strip() for s in str(v).split(",") if s.strip()]


def load_dataset(args):
    """The rows to train and evaluate on, and where each must go.

    Returns ``(ds, labels, fixed)``: ``fixed`` maps row indices of ``--train-extra`` rows to
    "train" and of ``--test-data`` rows to "test"; the other rows are split by ``--split``.
    """
    import datasets

    data = _as_list(args.data)
    prefixes = _as_list(args.compose_prefix)
    if len(prefixes) > 1 and len(prefixes) != len(data):
        raise ConfigError(f"--compose-prefix gives {len(prefixes)} prefixes for {len(data)} data sources; "
                          f"give one prefix, or one per --data entry")
    if args.data_labels:
        main = D.cap_per_class(D.load_labelled_folders(data, _as_list(args.data_labels)), args.max_per_class, seed=args.seed)
        if prefixes:
            main = D.compose_labels(main, prefixes[0])
    else:
        parts = [_load_one(args, d, prefixes[i] if len(prefixes) > 1 else (prefixes[0] if prefixes else None))
                 for i, d in enumerate(data)]
        main = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    pieces, fixed = [main], {}
    n = len(main)
    for role, srcs in (("train", _as_list(args.train_extra)), ("test", _as_list(args.test_data))):
        for src in srcs:
            extra = _load_one(args, src, prefixes[0] if len(prefixes) == 1 else None)
            fixed.update({i: role for i in range(n, n + len(extra))})
            n += len(extra)
            pieces.append(extra)
    ds = pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(
        [p.cast(pieces[0].features) for p in pieces])
    labels = sorted(set(main["label"]) | {ds[i]["label"] for i, r in fixed.items() if r == "train"})
    if len(labels) < 2:
        raise DataError(f"{args.data}: found {len(labels)} label(s) {labels}; a classifier needs at least 2")
    unknown = sorted(set(ds["label"]) - set(labels))
    if unknown:
        raise DataError(f"--test-data labels {unknown[:5]} never occur in the training data {labels[:10]}; "
                        f"use a --label-map that maps both onto the same names")
    return ds, labels, fixed


def make_split(args, ds, fixed: dict, out: Path, is_main: bool) -> dict:
    """Row indices of train/validation/test: ``--split-file``, else ``--split`` of the rows ``fixed`` leaves
    free plus the fixed ones; written to ``out/split.json`` by the main process."""
    if args.split_file:
        split = D.load_split(args.split_file, ds)
    else:
        free = [i for i in range(len(ds)) if i not in fixed]
        test_size = 0.0 if any(r == "test" for r in fixed.values()) else args.test_size
        sub = D.split_data(ds.select(free), test_size=test_size, val_size=args.val_size, by=args.split, seed=args.seed)
        split = {k: [free[i] for i in v] for k, v in sub.items()}
        for i, role in sorted(fixed.items()):
            split[role].append(i)
    if args.max_train_samples and len(split["train"]) > args.max_train_samples:
        rng = np.random.RandomState(args.seed)
        split["train"] = sorted(rng.choice(split["train"], args.max_train_samples, replace=False).tolist())
    if not split["train"]:
        raise DataError("the training split is empty; lower --test-size/--val-size or add images")
    if is_main:
        D.save_split(split, ds, out / "split.json")
    return split


# ---------------------------------------------------------------- model pieces

def set_train_mode(module: nn.Module) -> None:
    """train() except for modules whose parameters are all frozen: their BN statistics stay fixed too."""
    module.train()
    for m in module.modules():
        ps = list(m.parameters(recurse=False))
        if ps and not any(p.requires_grad for p in ps):
            m.eval()


# the trainer's defaults (trainers/train.py flags) for what a dict or keyword arguments leave out
OPTIMIZER_DEFAULTS = {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}
SCHEDULER_DEFAULTS = {"schedule": "cosine", "epochs": 10, "step_epochs": 2, "step_gamma": 0.5, "lr": None}
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "onecycle", "constant")


def _settings(cfg, defaults: dict, overrides: dict) -> argparse.Namespace:
    """``defaults`` updated from ``cfg`` (a Namespace, a dict or None), then from non-None ``overrides``."""
    given = vars(cfg) if isinstance(cfg, argparse.Namespace) else dict(cfg or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(f"unexpected settings {unknown}; valid ones are {sorted(defaults)}")
    out = {k: given.get(k, v) for k, v in defaults.items()}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return argparse.Namespace(**out)


def create_optimizer(cfg=None, params=None, **kwargs) -> torch.optim.Optimizer:
    """The optimizer of the trainer's flags over ``params`` (a module: its trainable parameters).

    ``cfg`` is the trainer's Namespace or a dict; keyword arguments override it. Settings: ``optimizer``
    (adamw, adam, sgd), ``lr``, ``momentum`` (SGD) and ``weight_decay``; the others of ``cfg`` are ignored.
    """
    a = _settings(cfg, OPTIMIZER_DEFAULTS, kwargs)
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if a.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer '{a.optimizer}' is not one of {list(OPTIMIZERS)}")
    if a.optimizer == "sgd":
        return torch.optim.SGD(params, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    if a.optimizer == "adam":
        return torch.optim.Adam(params, lr=a.lr, weight_decay=a.weight_decay)
    return torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)


def create_scheduler(cfg=None, optimizer=None, steps_per_epoch: int = 1, **kwargs):
    """The per-step learning-rate schedule of the trainer's flags (stepped after every optimizer step).

    Settings (``cfg`` as for :func:`create_optimizer`, keyword arguments override it): ``schedule``
    (cosine over all steps, step: times ``step_gamma`` every ``step_epochs`` epochs, onecycle up to
    ``lr``, the optimizer's lr when not given, constant) and ``epochs``.
    """
    a = _settings(cfg, SCHEDULER_DEFAULTS, kwargs)
    if a.schedule not in SCHEDULES:
        raise ConfigError(f"schedule '{a.schedule}' is not one of {list(SCHEDULES)}")
    total = max(1, steps_per_epoch * a.epochs)
    if a.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if a.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, steps_per_epoch * a.step_epochs),
                                               gamma=a.step_gamma)
    if a.schedule == "onecycle":
        max_lr = a.lr if a.lr is not None else optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total + 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@torch.no_grad()
def predict_loader(module, loader, accelerator, crops: int = 1, desc: str = "eval"):
    """Softmax probabilities and targets in dataset order; rows of one image's crops are averaged."""
    from tqdm.auto import tqdm

    module.eval()
    probs, ys = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        logits = module(x)
        p, y = accelerator.gather_for_metrics((logits.float().softmax(-1), y))
        probs.append(p.cpu())
        ys.append(y.cpu())
    probs = torch.cat(probs).numpy() if probs else np.zeros((0, 0))
    ys = torch.cat(ys).numpy() if ys else np.zeros((0,), int)
    if crops > 1:
        probs = probs.reshape(-1, crops, probs.shape[-1]).mean(1)
        ys = ys[::crops]
    return probs, ys


def save_weights(module: nn.Module, path: Path) -> None:
    """The module's state dict as safetensors, via a temporary file (a kill never leaves half a file)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp))


# ---------------------------------------------------------------- the run

def train(args: argparse.Namespace) -> dict:
    """One training run on the Namespace of ``trainers/train.py``'s ``parse_args``; returns the results dict.

    Writes ``<output_dir>/train_config.yaml`` (the resolved flags), ``split.json``, resumable checkpoints
    (``--resume``), and at the end the model folder (config.json, model.safetensors, card, metrics,
    all_results.json, history.json). Several runs may follow each other in one process.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm.auto import tqdm

    out = Path(args.output_dir)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # train() may run several times in one process (tests)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.log_with == "none" else args.log_with,
        project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    is_main = accelerator.is_main_process
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(args, out / "train_config.yaml")
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        ds, labels, fixed = load_dataset(args)
    split = make_split(args, ds, fixed, out, is_main)
    parts = {k: ds.select(v) for k, v in split.items()}
    accelerator.print(f"{len(ds)} images, {len(labels)} labels; split "
                      + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))

    set_seed(args.seed)
    model = load_model(args.model, num_classes=len(labels), pretrained=args.pretrained, label_names=labels,
                       drop_rate=args.drop_rate)
    if args.img_size and hasattr(model, "patch_embed") and tuple(model.pretrained_cfg["input_size"][-2:]) != (args.img_size,) * 2:
        # vision transformers size their position embeddings at creation; timm resamples the checkpoint's
        set_seed(args.seed)
        model = load_model(args.model, num_classes=len(labels), pretrained=args.pretrained, label_names=labels,
                           drop_rate=args.drop_rate, img_size=args.img_size)
    cfg = dict(model.pretrained_cfg)
    if args.img_size:
        cfg["input_size"] = (3, args.img_size, args.img_size)
        cfg.pop("test_input_size", None)
    if args.pad_square:
        # stored in config.json, so timm/transformers loaders of the export pad the same way
        cfg.update(crop_mode="border", crop_pct=1.0)
    if args.predict_tta != "none":
        cfg["artlens_tta"] = args.predict_tta
    model.pretrained_cfg = cfg
    freeze(model, args.freeze)
    set_head(model, args.head, dropout=args.head_dropout)
    if args.head == "artnet":
        for p in model.get_classifier().parameters():
            p.requires_grad = True
    size = int(D.data_config(model)["input_size"][-1])
    # validation and test rows come in groups of the prediction views, averaged as the predictor averages them
    n_views = D.TTA_VIEWS[args.predict_tta] if args.cache_features and args.view_rows else 1
    crops = (5 if args.five_crop else 1) * n_views
    five = size if args.five_crop else None
    ev_bs = args.eval_batch_size or args.batch_size
    index = {n: i for i, n in enumerate(labels)}
    seed_loader = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731

    feature_time = 0.0
    if args.cache_features:
        # frozen backbone: compute its output once, then train only the classifier on it
        model.to(accelerator.device)
        t0 = time.perf_counter()
        feats = {}
        opts = dict(batch_size=ev_bs, cache=True, five_crop=five, view_rows=args.view_rows,
                    train_blocks=args.train_blocks, seed=args.seed, num_workers=args.num_workers,
                    device=accelerator.device, show_progress=accelerator.is_local_main_process)
        with accelerator.main_process_first():
            if args.aug == "none" and args.feature_copies <= 1 and args.predict_tta == args.tta:
                # one deterministic view set for every split: one cache entry that other splits reuse
                f, labs = extract_features(model, ds, D.eval_transform(model), tta=args.tta, desc="features", **opts)
                for part, idx in split.items():
                    rows = [i * crops + k for i in idx for k in range(crops)]
                    feats[part] = (f[rows], [labs[r] for r in rows])
            for part, sub in parts.items():
                if part in feats:
                    continue
                if len(sub) == 0:
                    feats[part] = (np.zeros((0, model.num_features), np.float32), [])
                    continue
                train = part == "train"
                tf = D.train_transform(model, aug=args.aug, rotation=args.rotation) if train and args.aug != "none" else D.eval_transform(model)
                feats[part] = extract_features(model, sub, tf, copies=args.feature_copies if train else 1,
                                               tta=args.tta if train else args.predict_tta, desc=f"features {part}", **opts)
        feature_time = time.perf_counter() - t0
        model.cpu()
        module = Tail(model, args.train_blocks) if args.train_blocks else model.get_classifier()

        def make_ds(part):
            f, labs = feats[part]
            return torch.utils.data.TensorDataset(torch.from_numpy(f), torch.tensor([index[x] for x in labs], dtype=torch.long))
        train_set = make_ds("train")
        val_set, test_set = make_ds("validation"), make_ds("test")
    else:
        module = model
        tf_train = D.train_transform(model, aug=args.aug, rotation=args.rotation)
        tf_eval = D.eval_transform(model)
        train_set = D.TorchDataset(parts["train"], labels, tf_train, five_crop=five)
        val_set = D.TorchDataset(parts["validation"], labels, tf_eval, five_crop=five)
        test_set = D.TorchDataset(parts["test"], labels, tf_eval, five_crop=five)

    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                               num_workers=args.num_workers, generator=seed_loader(), drop_last=False)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=ev_bs * crops, num_workers=args.num_workers)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=ev_bs * crops, num_workers=args.num_workers)

    weights = D.class_weights(list(parts["train"]["label"]), labels) if args.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing)
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"--freeze {args.freeze} leaves nothing to train")
    optimizer = create_optimizer(args, trainable)
    module, optimizer, train_loader, val_loader, test_loader, criterion = accelerator.prepare(
        module, optimizer, train_loader, val_loader, test_loader, criterion)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    scheduler = accelerator.prepare(create_scheduler(args, optimizer, steps_per_epoch * accelerator.num_processes))

    ckpt = out / "checkpoints"
    state_path = ckpt / "trainer_state.json"
    state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "bad_epochs": 0, "stopped": False,
             "checkpoint": None, "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("checkpoint"):
            accelerator.load_state(str(ckpt / state["checkpoint"]))
        accelerator.print(f"resumed after epoch {state['epoch']} (best {args.metric} {state['best_metric']})")
    elif ckpt.exists() and is_main:
        shutil.rmtree(ckpt)  # a fresh run must not mix with an old run's checkpoints
    if is_main:
        ckpt.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    if args.log_with != "none":
        accelerator.init_trackers("artlens", config={k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                                     for k, v in vars(args).items()})

    has_val = len(val_set) > 0
    higher = args.metric != "loss"
    t_train = time.perf_counter()
    bar = tqdm(range(state["epoch"] + 1, args.epochs + 1), desc="epochs", disable=not accelerator.is_local_main_process)
    for epoch in bar:
        if state["stopped"]:
            break
        # each epoch's randomness depends only on (seed, epoch): a resumed run repeats it exactly
        set_seed(args.seed + epoch)
        train_loader.set_epoch(epoch)
        set_train_mode(accelerator.unwrap_model(module))
        total, count = 0.0, 0
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not accelerator.is_local_main_process):
            with accelerator.accumulate(module):
                loss = criterion(module(x), y)
                if args.l1:
                    loss = loss + args.l1 * sum(p.abs().sum() for p in trainable)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total += float(loss.detach()) * len(y)
            count += len(y)
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"]}
        if has_val:
            probs, ys = predict_loader(module, val_loader, accelerator, crops, desc="validation")
            vm = compute_metrics(ys, probs.argmax(1), labels)
            row.update(val_loss=float(-np.log(np.clip(probs[np.arange(len(ys)), ys], 1e-12, 1)).mean()),
                       val_accuracy=vm["accuracy"], val_balanced_accuracy=vm["balanced_accuracy"], val_f1_macro=vm["f1_macro"])
            value = row["val_loss"] if args.metric == "loss" else vm[args.metric]
        else:
            value = -row["train_loss"] if higher else row["train_loss"]
        better = state["best_metric"] is None or (value > state["best_metric"] if higher else value < state["best_metric"])
        if better:
            state.update(best_metric=value, best_epoch=epoch, bad_epochs=0)
            if is_main:
                save_weights(accelerator.unwrap_model(module), ckpt / "best.safetensors")
        else:
            state["bad_epochs"] += 1
        if args.patience and state["bad_epochs"] >= args.patience:
            state["stopped"] = True
        state["history"].append(row)
        if args.log_with != "none":
            accelerator.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k.startswith(("val_acc", "train_loss"))})
        # checkpoint, then the state file that points at it: a kill at any moment leaves a usable pair
        name = f"epoch_{epoch}"
        accelerator.save_state(str(ckpt / name))
        state.update(epoch=epoch, checkpoint=name)
        if is_main:
            write_json(state_path, state, default=str)
            for old in ckpt.glob("epoch_*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        if state["stopped"]:
            accelerator.print(f"early stop after epoch {epoch}: no {args.metric} improvement for {args.patience} epochs")
            break
    train_time = time.perf_counter() - t_train
    accelerator.wait_for_everyone()

    # ---- the best checkpoint on the test split
    from safetensors.torch import load_file

    unwrapped = accelerator.unwrap_model(module)
    if (ckpt / "best.safetensors").exists():
        unwrapped.load_state_dict(load_file(str(ckpt / "best.safetensors"), device=str(accelerator.device)))
    results = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "early_stopped": state["stopped"],
               f"best_val_{args.metric}": state["best_metric"], "train_runtime_s": round(train_time, 3),
               "feature_runtime_s": round(feature_time, 3), "num_train": len(parts["train"]),
               "num_validation": len(parts["validation"]), "num_test": len(parts["test"]), "label_names": labels}
    threshold = None
    pos = args.positive_label
    if len(labels) == 2 and pos in labels and args.threshold != "none":  # parse_args normalised it
        k = labels.index(pos)
        if args.threshold in ("auto", "calibrated"):
            if has_val:
                probs, ys = predict_loader(module, val_loader, accelerator, crops, desc="threshold")
                rule = calibrated_threshold if args.threshold == "calibrated" else choose_threshold
                threshold = rule(probs[:, k], ys == k)
            else:
                threshold = 0.5
        else:
            threshold = float(args.threshold)
        model.pretrained_cfg = dict(model.pretrained_cfg, artlens_threshold=threshold, artlens_positive=pos)
        results["threshold"] = threshold

    metrics = None
    if len(test_set) > 0:
        probs, ys = predict_loader(module, test_loader, accelerator, crops, desc="test")
        if threshold is not None:
            k = labels.index(pos)
            pred = np.where(probs[:, k] >= threshold, k, 1 - k)
        else:
            pred = probs.argmax(1)
        metrics = compute_metrics(ys, pred, labels)
        results.update({f"test_{k}": metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_macro")})
    if has_val:
        probs, ys = predict_loader(module, val_loader, accelerator, crops, desc="validation")
        vm = compute_metrics(ys, probs.argmax(1), labels)
        results.update({f"val_{k}": vm[k] for k in ("accuracy", "balanced_accuracy", "f1_macro")})
    if is_main:
        if has_val:
            save_metrics(vm, out, prefix="validation")
        model.cpu()
        datasets = [d for d in (args.data if isinstance(args.data, list) else [args.data]) if not Path(d).exists()]
        card = {"model_name": args.model_name or out.name, "base_model": str(args.model), "summary": args.summary}
        save_model_folder(model, out, label_names=labels, metrics=metrics, train_config=vars(args),
                          datasets=datasets or None, card_fields=card, results=results)
        write_json(out / "history.json", state["history"], default=str)
        if not args.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        if args.push_to_hub:
            results["hub_url"] = push_to_hub(out, args.push_to_hub, private=args.hub_private)
    if args.log_with != "none":
        accelerator.end_training()
    accelerator.wait_for_everyone()
    results["output_dir"] = str(out)
    return results


# ---------------------------------------------------------------- finished runs

# all_results.json holds these test-metric details that train() does not return
_FILE_ONLY = ("test_n", "test_precision_macro", "test_recall_macro")


def read_results(output_dir) -> dict:
    """The results of a finished run in ``output_dir`` as :func:`train` returned them (from all_results.json).

    Only a Hub upload's ``hub_url`` is missing (it is not in the file).
    """
    out = Path(output_dir)
    path = out / "all_results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: no finished training run in {out}")
    results = {k: v for k, v in json.loads(path.read_text()).items() if k not in _FILE_ONLY}
    results["output_dir"] = str(out)
    return results
