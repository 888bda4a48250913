"""Cached backbone features for frozen-backbone training and evaluation.

With a frozen backbone (linear probe) the backbone's output for an image never changes, so it
is computed once, stored under ``artlens.offline.cache_dir()/features`` and reused: training
the head for 10 epochs then costs a few matrix products per epoch instead of 10 passes of the
backbone over every image.

The cache key covers everything that changes the numbers: the model reference and its weights
file, the resolved preprocessing, the list of image files with their sizes and mtimes (or a
hash of in-memory bytes), and the view options (augmentation, copies, TTA, five crops).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .data import (
    RETAKES,
    TTA_VIEWS,
    DataError,
    TorchDataset,
    canonical_image,
    data_config,
    eval_transform,
    five_crops,
    tta_views,
)
from .files import atomic_path, atomic_write
from .images import open_image
from .models import TOKENS, block_tokens, load_model, pooled_features, trunk_features
from .offline import cache_dir

__all__ = ["extract_features", "features_key", "pooled_features", "image_tokens"]

def _image_fingerprint(ds) -> list:
    out = []
    for im in ds["image"]:
        p = im.get("path") if isinstance(im, dict) else None
        b = im.get("bytes") if isinstance(im, dict) else None
        if b:
            out.append(hashlib.sha1(b).hexdigest())
        elif p and os.path.exists(p):
            # the linked file, not the link: prepared folders of links (build_defaults, benchmarks) share entries
            st = os.stat(p)
            out.append([os.path.realpath(p), st.st_size, int(st.st_mtime)])
        else:
            out.append(str(p))
    return out


def _model_fingerprint(model: nn.Module) -> dict:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    ref = {k: cfg.get(k) for k in ("architecture", "hf_hub_id", "source", "tag", "file")}
    ref["class"] = type(model).__name__
    # always None (nothing sets a model reference here); the key stays so that feature caches
    # already on disk keep their names
    ref["ref"] = None
    # cheap identity of the backbone weights: a few sums over the state dict; the classifier is
    # left out (features do not depend on it, and a new head must not invalidate the cache)
    head = {id(p) for p in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
    with torch.no_grad():
        sd = {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in head}
        keys = [k for k in sd if sd[k].is_floating_point()]
        pick = keys[:: max(1, len(keys) // 16)]
        ref["weights_sum"] = [round(float(sd[k].double().sum()), 6) for k in pick]
    return ref


def features_key(model: nn.Module, ds, transform_desc: str, **options) -> str:
    """Hex digest identifying one feature array (model, preprocessing, images, view options)."""
    payload = {
        "model": _model_fingerprint(model),
        "data_config": {k: str(v) for k, v in data_config(model).items()},
        "transform": transform_desc,
        "images": _image_fingerprint(ds),
        "options": {k: str(v) for k, v in sorted(options.items())},
        "version": 1,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    ds,
    transform: Callable,
    batch_size: int = 32,
    cache: bool = True,
    tta: str | bool | None = None,
    five_crop: int | None = None,
    copies: int = 1,
    view_rows: bool = False,
    train_blocks: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    desc: str = "features",
    show_progress: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Pooled backbone features of every image in ``ds`` (from :func:`artlens.data.load_data`).

    Returns ``(feats, labels)``: ``feats`` is float32 ``(rows, D)``, ``labels`` the string label
    of each row. Rows are image-major; an image gives ``copies`` rows (each an independent draw of
    a random ``transform``, for augmented linear probes), times 5 with ``five_crop=size`` (the four
    corners and the centre, in :func:`artlens.data.five_crops` order). ``tta`` averages each row's
    features over the views of :func:`artlens.data.tta_views` (``flip``, ``crops``; ``True``
    means ``flip``), the same views the predictor averages at inference; with ``view_rows`` each
    view is a row of its own instead (view-major within an image: training rows that augment, and
    evaluation rows whose predictions are averaged like the predictor's). ``train_blocks=N``
    returns, instead of pooled features, the spatial input of the last N stages of
    ``model.blocks`` (:func:`artlens.models.trunk_features`, stored as float16), for fine-tuning
    those stages on the cache. Randomness (augmented copies) is seeded by ``seed`` and the global
    RNG states are restored afterwards.
    """
    from safetensors.numpy import load_file, save_file
    from tqdm.auto import tqdm

    tta = {True: "flip", False: "none", None: "none", "true": "flip", "false": "none"}.get(tta, tta)
    copies = max(1, int(copies))
    labels_once = [str(lab) for lab in ds["label"]]
    n_views = TTA_VIEWS[tta] if view_rows else 1
    if train_blocks and tta != "none" and not view_rows:
        raise ValueError("spatial maps of different views cannot be averaged: pass view_rows=True with train_blocks")
    per_image = copies * (5 if five_crop else 1) * n_views
    labels = [lab for lab in labels_once for _ in range(per_image)]

    # object addresses in a transform's repr would make every key new
    desc_tf = re.sub(r" at 0x[0-9a-f]+", "", repr(transform))
    # only when used, so that cache entries written before these options existed keep their keys
    extra = {"view_rows": True} if view_rows else {}
    if train_blocks:
        extra["train_blocks"] = int(train_blocks)
    key = features_key(model, ds, desc_tf, tta=tta, five_crop=five_crop, copies=copies,
                       seed=seed if copies > 1 or _is_random(transform) else 0, **extra)
    path = cache_dir() / "features" / f"{key}.safetensors"
    if cache and path.exists():
        try:
            feats = load_file(str(path))["features"]
            if feats.shape[0] == len(labels):
                return feats, labels
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
            pass

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    size = data_config(model)["input_size"][-1]

    class _Rows(TorchDataset):
        def __len__(self):
            return len(self.ds) * per_image

        def __getitem__(self, i):
            j, r = divmod(i, per_image)
            r, v = divmod(r, n_views)
            img = self.open(j)
            if five_crop:
                img = five_crops(img, five_crop)[r % 5]
            views = tta_views(img, tta, size)
            views = views[v:v + 1] if view_rows else views
            return torch.stack([self.transform(im) for im in views]), self.labels[j]

    rows = _Rows(ds, sorted(set(labels_once)), transform)
    g = torch.Generator().manual_seed(seed)
    state = (random.getstate(), torch.random.get_rng_state())
    random.seed(seed)
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         generator=g)
    out = []
    try:
        for x, _ in tqdm(loader, desc=desc, disable=not show_progress, leave=False):
            b, v = x.shape[:2]
            # channels-last input alone makes the CPU convolutions about twice as fast
            x = x.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last)
            if train_blocks:
                out.append(trunk_features(model, x, train_blocks).half().contiguous().cpu())
            else:
                out.append(pooled_features(model, x).float().view(b, v, -1).mean(1).cpu())
    finally:
        random.setstate(state[0])
        torch.random.set_rng_state(state[1])
        model.train(was_training)
    if train_blocks:
        feats = torch.cat(out).numpy() if out else np.zeros((0,), np.float16)
    else:
        feats = torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, model.num_features), np.float32)
    if cache:
        with atomic_path(path) as tmp:
            save_file({"features": np.ascontiguousarray(feats)}, str(tmp))
    return feats, labels


def _file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def image_tokens(model: nn.Module, files: Sequence[str | os.PathLike], canonical: tuple[int, int] | None = (224, 90),
                 batch_size: int = 32, bf16: bool = True, cache: bool = True, desc: str = "tokens",
                 show_progress: bool = True, view: int = 0,
                 retake: str = "source") -> np.ndarray:
    """``(N, blocks, 2, D)`` float16: :func:`block_tokens` of every block of a ViT for each image file.

    Each image is first brought to one form (:func:`artlens.data.canonical_image` with ``canonical`` =
    (size, JPEG quality); ``None``: as it is), then the model's own preprocessing. The result is cached
    per image, keyed by the file's content and the model, preprocessing and options, so another split,
    recipe or subset of the same files costs no backbone pass, and an interrupted run keeps every batch
    it finished. ``bf16`` runs the backbone under bfloat16 autocast (2.7x faster on CPUs that have it;
    :class:`artlens.models.BlockTokens` predicts the same way). ``view`` > 0: the tokens of training copy
    number ``view`` of each image (:func:`artlens.data.source_view`, seeded by the file's content and
    ``view``) instead of the image as it is; ``retake`` names the kind of copy (:data:`artlens.data.RETAKES`:
    ``"source"``, a re-take as another source would hand it over; ``"native"``, a crop at native resolution;
    ``"small"`` and ``"tiny"``, a 48-112 or 32-64 px thumbnail).
    """
    if retake not in RETAKES:
        raise DataError(f"unknown retake {retake!r}; choose one of {', '.join(RETAKES)}")
    from tqdm.auto import tqdm

    payload = {"model": _model_fingerprint(model), "data_config": {k: str(v) for k, v in data_config(model).items()},
               "canonical": list(canonical) if canonical else None, "bf16": bool(bf16), "tokens": TOKENS, "version": 1}
    if view:
        payload["view"] = int(view)
        if retake != "source":  # the first kind keeps the cache names it had before kinds existed
            payload["retake"] = retake
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
    root = cache_dir() / "tokens" / key
    digests = [_file_digest(f) for f in files]
    paths = [root / d[:2] / f"{d}.npy" for d in digests]
    todo = [i for i, p in enumerate(paths) if not (cache and p.exists())]
    transform = eval_transform(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    computed: dict[int, np.ndarray] = {}
    try:
        for start in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not show_progress or not todo,
                          unit="batch"):
            idx = todo[start:start + batch_size]
            imgs = [open_image(files[i]) for i in idx]
            if view:
                imgs = [RETAKES[retake](im, int(digests[i][:12], 16) + int(view)) for im, i in zip(imgs, idx)]
            if canonical:
                imgs = [canonical_image(im, *canonical) for im in imgs]
            x = torch.stack([transform(im) for im in imgs]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
                t = block_tokens(model, x, range(len(model.blocks)))
            t = t.float().cpu().numpy().astype(np.float16)
            for i, arr in zip(idx, t):
                if cache:
                    with atomic_write(paths[i], "wb") as f:
                        np.save(f, arr)
                else:
                    computed[i] = arr
    finally:
        model.train(was_training)
    return np.stack([computed[i] if i in computed else np.load(p) for i, p in enumerate(paths)])


def _is_random(transform) -> bool:
    names = {type(t).__name__ for t in getattr(transform, "transforms", [transform])}
    return bool(names & {"RandomHorizontalFlip", "RandomRotation", "RandomResizedCrop", "RandomCrop",
                         "ColorJitter", "_RandomRescaleJpeg"})


def fit_probe(files_by_label: dict, model: str = "tf_efficientnet_lite0", C: float = 0.5) -> nn.Module:
    """A quick linear probe: logistic regression on pooled backbone features of a few images per
    label, written into the timm classifier (a normal model, e.g. for explanations or smoke tests).

    ``files_by_label``: ``{label: [image files]}``. For real training use ``trainers/train.py``.
    """
    from sklearn.linear_model import LogisticRegression

    names = list(files_by_label)
    m = load_model(model, num_classes=len(names), label_names=names)
    t = eval_transform(m)
    feats, ys = [], []
    for y, name in enumerate(names):
        x = torch.stack([t(open_image(f)) for f in files_by_label[name]])
        with torch.no_grad():
            feats.append(pooled_features(m, x).numpy())
        ys += [y] * len(x)
    clf = LogisticRegression(max_iter=2000, C=C).fit(np.concatenate(feats), ys)
    head = m.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.tensor(clf.coef_, dtype=torch.float32))
        head.bias.copy_(torch.tensor(clf.intercept_, dtype=torch.float32))
    return m.eval()
