"""Datasets, labels, splits, balancing and the one preprocessing definition.

Preprocessing always comes from the model's ``pretrained_cfg`` (size, mean, std, interpolation,
crop), through timm's own ``resolve_data_config`` / ``create_transform``, so training,
evaluation, export and prediction agree, and so do timm and transformers loaders of an export.
"""
from __future__ import annotations

import io
import json
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torch import nn

from .errors import ArtlensError
from .files import write_json
from .images import IMAGE_EXTENSIONS, list_images, open_image

__all__ = [
    "DataError", "data_config", "eval_transform", "train_transform", "AUGMENTATIONS",
    "load_data", "group_from_filename", "load_label_map", "apply_label_map", "compose_labels",
    "cap_per_class", "class_weights", "split_data", "save_split", "load_split", "TorchDataset",
    "five_crops", "TTA_MODES", "TTA_VIEWS", "tta_views", "jpeg_reencode", "canonical_image", "source_view", "native_crop", "small_view", "tiny_view", "RETAKES", "load_labelled_folders", "PERTURBATIONS", "parse_perturbations", "perturb",
]


class DataError(ArtlensError, ValueError):
    """A dataset, column, label map or split option is unusable; the message says what to do."""


# ---------------------------------------------------------------- preprocessing

def data_config(model: nn.Module) -> dict:
    """timm's resolved data config (input_size, interpolation, mean, std, crop_pct, crop_mode)."""
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


def eval_transform(model: nn.Module) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised CHW tensor, exactly as timm/transformers loaders of the model do."""
    from timm.data import create_transform

    return create_transform(**data_config(model), is_training=False)


def jpeg_reencode(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def canonical_image(img: Image.Image, size: int = 224, quality: int = 90) -> Image.Image:
    """The shorter side brought to ``size`` px (aspect kept), then one JPEG round trip at ``quality``.

    What the human-or-AI detector sees of every image, in training, in measurement and in prediction:
    sources that differ in native resolution and encoding history (256 px paintings, 512 px AI tiles,
    PNG uploads) all reach the model's preprocessing in one form, so neither size nor encoding can be
    what it learns.
    """
    s = size / min(img.size)
    if abs(s - 1.0) > 1e-6:
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
    return jpeg_reencode(img, quality)


def source_view(img: Image.Image, seed: int) -> Image.Image:
    """One seeded random re-take of an image, as another source would hand it over: a crop of 60-100% of
    each side, the aspect squashed by up to 1.25x, resampled so the shorter side is 128-1024 px (down or
    up), and in four cases out of five one JPEG round trip at quality 50-95.

    For the detector's training copies (:func:`artlens.features.image_tokens` ``view``): the same
    painting or AI image reaches :func:`canonical_image` with another size and encoding history, so the
    traces one source leaves (its native size, its resampling, its JPEG settings) stop telling the
    sources apart. ``seed`` fixes the draw, so a cached copy is the copy it says it is.
    """
    rng = random.Random(seed)
    w, h = img.size
    cw, ch = max(8, round(w * rng.uniform(0.6, 1.0))), max(8, round(h * rng.uniform(0.6, 1.0)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    a = rng.uniform(0.8, 1.25)
    short = 2 ** rng.uniform(7, 10)
    s = short / min(cw * a, ch)
    img = img.resize((max(8, round(cw * a * s)), max(8, round(ch * s))),
                     rng.choice([Image.BICUBIC, Image.BILINEAR, Image.LANCZOS]))
    if rng.random() < 0.8:
        img = jpeg_reencode(img, rng.randint(50, 95))
    return img


def native_crop(img: Image.Image, seed: int, size: int = 224) -> Image.Image:
    """One seeded crop of an image at its native resolution, no resampling and no re-encoding: each side
    ``size`` px up to the whole side (drawn apart), at a random place.

    For the detector's training copies (:func:`artlens.features.image_tokens` ``retake="native"``): every
    AI image of the shared data is 512 px and every painting 224-256 px, so after
    :func:`canonical_image` the AI images are the ones shrunk by 0.44 and the paintings the ones barely
    resampled. A native crop of an AI image reaches the canonical form shrunk by anything from 0.44 to 1,
    as paintings are, so the resampling factor stops telling them apart.
    """
    rng = random.Random(seed)
    w, h = img.size
    cw, ch = rng.randint(min(size, w), w), rng.randint(min(size, h), h)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def _thumbnail(img: Image.Image, seed: int, lo: int, hi: int) -> Image.Image:
    rng = random.Random(seed)
    s = rng.randint(lo, hi) / min(img.size)
    img = img.resize((max(8, round(img.width * s)), max(8, round(img.height * s))),
                     rng.choice([Image.BICUBIC, Image.BILINEAR, Image.LANCZOS, Image.BOX]))
    return jpeg_reencode(img, rng.randint(60, 95)) if rng.random() < 0.5 else img


def small_view(img: Image.Image, seed: int) -> Image.Image:
    """One seeded small copy of an image: the shorter side resampled to 48-112 px (random filter), in
    half the cases one JPEG round trip at quality 60-95. For training copies of the style and artist models
    (:func:`artlens.features.image_tokens` ``retake="small"``): thumbnails and tiny uploads reach the
    canonical form upscaled from a few dozen pixels, which the ``source`` re-takes (128 px at the
    smallest) never show."""
    return _thumbnail(img, seed, 48, 112)


def tiny_view(img: Image.Image, seed: int) -> Image.Image:
    """:func:`small_view` at 32-64 px (``retake="tiny"``): what a quarter-size copy of a 128-256 px
    painting is. Measured as the style model's thumbnail copy and not shipped (docs/experiments.md section 17)."""
    return _thumbnail(img, seed, 32, 64)


RETAKES = {"source": source_view, "native": native_crop, "small": small_view, "tiny": tiny_view}


class _RandomRescaleJpeg:
    """Random downscale and JPEG re-encoding, so neither resolution nor encoding is a shortcut."""

    def __init__(self, scale=(0.25, 1.0), quality=(40, 95), p=0.8):
        self.scale, self.quality, self.p = scale, quality, p

    def __repr__(self) -> str:
        # part of the feature-cache key: other ranges must give other cache entries
        return f"{type(self).__name__}(scale={self.scale}, quality={self.quality}, p={self.p})"

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() < self.p:
            s = random.uniform(*self.scale)
            w, h = img.size
            img = img.resize((max(8, int(w * s)), max(8, int(h * s))), Image.BICUBIC)
        if random.random() < self.p:
            img = jpeg_reencode(img, random.randint(*self.quality))
        return img


AUGMENTATIONS = ("none", "flip", "flip_rotate", "robust")


def train_transform(model: nn.Module, aug: str = "flip", color_jitter: float = 0.0,
                    rotation: float = 15.0) -> Callable[[Image.Image], torch.Tensor]:
    """Training transform: resize to the eval scale first, then augment, then eval-style crop.

    Every image is brought to one resolution (shorter side = input_size / crop_pct) before the
    crop, so its native resolution cannot become a feature. Presets: ``none``; ``flip``;
    ``flip_rotate`` (flip + rotation, AI-ArtBench); ``robust`` (flip, random resized crop, random
    downscale and JPEG re-encoding: for models that must hold up on other sources). ``robust``
    degrades the image *as given*, before that resize: sources of different native resolution
    (256 px paintings, 512 px AI images here) should be brought to one size first, as
    ``scripts/build_defaults.py`` does, or the degradation itself differs between them.
    Colour jitter is off by default.
    """
    from torchvision import transforms as T

    if aug not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation '{aug}'; choose one of {', '.join(AUGMENTATIONS)}")
    cfg = data_config(model)
    size = cfg["input_size"][-2:]
    interp = T.InterpolationMode.BICUBIC if cfg["interpolation"] == "bicubic" else T.InterpolationMode.BILINEAR
    scale_size = int(min(size) / cfg.get("crop_pct", 1.0))
    ops: list = []
    if aug == "robust":
        ops.append(_RandomRescaleJpeg())
    if cfg.get("crop_mode") == "border":
        from timm.data.transforms import CenterCropOrPad, ResizeKeepRatio
        # pad to square like timm's eval transform (longest side fits, borders in the mean colour)
        ops += [ResizeKeepRatio(scale_size, interpolation=cfg["interpolation"], longest=1.0),
                CenterCropOrPad(scale_size, fill=[round(255 * v) for v in cfg["mean"]])]
    else:
        ops.append(T.Resize(scale_size, interpolation=interp))
    if aug in ("flip", "flip_rotate", "robust"):
        ops.append(T.RandomHorizontalFlip())
    if aug == "flip_rotate":
        ops.append(T.RandomRotation(rotation, interpolation=interp))
    if color_jitter:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    if aug == "robust":
        ops.append(T.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(0.75, 1.333), interpolation=interp))
    else:
        ops.append(T.CenterCrop(size) if aug in ("none", "flip") else T.RandomCrop(size))
    ops += [T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])]
    return T.Compose(ops)


def five_crops(img: Image.Image, size: int) -> list[Image.Image]:
    """Four corners and the centre at full resolution (ArtNet's patch expansion)."""
    from torchvision.transforms.functional import five_crop

    w, h = img.size
    if min(w, h) < size:
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    return list(five_crop(img, [size, size]))


# ---------------------------------------------------------------- loading

_TRAILING_INDEX = re.compile(r"[_\- ]*\(?\d+\)?$")


def group_from_filename(path: str) -> str:
    """``Alfred_Sisley_113.jpg`` -> ``Alfred_Sisley`` (the artist, for group-disjoint splits)."""
    stem = Path(path).stem
    return _TRAILING_INDEX.sub("", stem) or stem


def load_data(
    data: str,
    image_column: str = "image",
    label_column: str = "label",
    split: str | None = None,
    group_column: str | None = None,
    streaming: bool = False,
):
    """Load a local imagefolder or a Hub dataset as a ``datasets.Dataset``.

    The result has the columns ``image`` (undecoded: ``{"path", "bytes"}``), ``label`` (string
    label names) and ``group`` (artist, from ``group_column`` or parsed from file names).
    A local folder is read with ``datasets``' ``imagefolder`` builder: labels from folder names,
    or from a ``metadata.csv`` whose ``file_name`` column names the images.
    """
    import datasets

    path = Path(data).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{data} is a file; pass a folder laid out as <label>/<image> (imagefolder)")
        if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in path.rglob("*")):
            raise DataError(f"{data} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            f"lay it out as <label>/<image>")
        ds = datasets.load_dataset("imagefolder", data_dir=str(path), split=split or "train")
    else:
        if data.count("/") != 1 or data.startswith((".", "/", "~")):
            raise DataError(f"{data}: no such folder, and not a Hub dataset id (org/name)")
        try:
            ds = datasets.load_dataset(data, split=split or "train", streaming=streaming)
        except Exception as e:  # noqa: BLE001 - network/Hub errors: say what happened and what to do
            raise DataError(f"could not load the Hub dataset '{data}' ({type(e).__name__}: {str(e)[:200]}); "
                            f"without network, download it elsewhere and pass a local folder") from None
        if streaming:
            return ds
    cols = ds.column_names
    if image_column not in cols:
        raise DataError(f"no image column '{image_column}' in {data}; columns are {cols} (use --image-column)")
    if label_column not in cols:
        raise DataError(f"no label column '{label_column}' in {data}; columns are {cols} (use --label-column)")
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    feat = ds.features[label_column]
    names = getattr(feat, "names", None)
    if group_column and group_column not in cols:
        raise DataError(f"no group column '{group_column}' in {data}; columns are {cols}")

    ds = ds.rename_column(label_column, "_label")

    def _row(ex):
        lab = ex["_label"]
        out = {"label": names[lab] if names is not None else str(lab)}
        if group_column:
            out["group"] = str(ex[group_column])
        else:
            p = ex["image"].get("path") or ""
            out["group"] = group_from_filename(p) if p else ""
        return out

    keep = ("image", "group", group_column)
    drop = [c for c in ds.column_names if c not in keep]
    return ds.map(_row, remove_columns=drop, desc="labels")


# ---------------------------------------------------------------- labels

def load_label_map(path: str | os.PathLike) -> dict[str, str]:
    """YAML ``coarse: [fine, ...]`` -> ``{fine: coarse}``. Fine labels not listed are dropped."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise DataError(f"label map {p} does not exist")
    spec = yaml.safe_load(p.read_text()) or {}
    spec = spec.get("map", spec)
    if not isinstance(spec, dict):
        raise DataError(f"label map {p}: expected 'coarse: [fine, ...]' entries")
    out = {}
    for coarse, fines in spec.items():
        for f in [fines] if isinstance(fines, str) else fines:
            if f in out:
                raise DataError(f"label map {p}: '{f}' is mapped twice ({out[f]}, {coarse})")
            out[str(f)] = str(coarse)
    return out


def apply_label_map(ds, mapping: dict[str, str]):
    """Merge fine labels into coarse ones; rows whose label is not in the map are dropped."""
    ds = ds.filter(lambda ex: ex["label"] in mapping, desc="label map")
    return ds.map(lambda ex: {"label": mapping[ex["label"]]}, desc="label map")


def compose_labels(ds, prefix: str, sep: str = "_", lowercase: bool = True):
    """Composed labels such as AI-ArtBench's ``AI_baroque``: ``prefix + sep + label``."""
    return ds.map(lambda ex: {"label": f"{prefix}{sep}{ex['label'].lower() if lowercase else ex['label']}"},
                  desc="compose labels")


def cap_per_class(ds, max_per_class: int | None, seed: int = 0):
    """Keep at most ``max_per_class`` random rows of each label (balancing)."""
    if not max_per_class:
        return ds
    rng = random.Random(seed)
    by = defaultdict(list)
    for i, lab in enumerate(ds["label"]):
        by[lab].append(i)
    keep = []
    for lab in sorted(by):
        idx = by[lab]
        rng.shuffle(idx)
        keep += idx[:max_per_class]
    return ds.select(sorted(keep))


def class_weights(labels: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """Balanced class weights, n / (k * n_c), in the order of ``names``."""
    counts = Counter(labels)
    n, k = len(labels), len(names)
    return torch.tensor([n / (k * max(counts.get(c, 0), 1)) for c in names], dtype=torch.float32)


# ---------------------------------------------------------------- splits

def split_data(ds, test_size: float = 0.2, val_size: float = 0.1, by: str = "random", seed: int = 0):
    """Split into train / validation / test with a fixed seed.

    ``by="random"``: stratified by label. ``by="group"``: group-disjoint (no artist in two
    splits); groups are assigned per label so that every label with enough groups appears in
    each split. Returns ``{"train": idx, "validation": idx, "test": idx}`` (row indices).
    """
    labels = list(ds["label"])
    n = len(labels)
    if n < 3:
        raise DataError(f"{n} images are too few to split")
    rng = random.Random(seed)
    out = {"train": [], "validation": [], "test": []}
    if by == "random":
        by_label = defaultdict(list)
        for i, lab in enumerate(labels):
            by_label[lab].append(i)
        for lab in sorted(by_label):
            idx = by_label[lab]
            rng.shuffle(idx)
            nt = int(round(len(idx) * test_size)) if test_size else 0
            nv = int(round(len(idx) * val_size)) if val_size else 0
            if len(idx) >= 3:
                nt, nv = max(nt, 1 if test_size else 0), max(nv, 1 if val_size else 0)
            out["test"] += idx[:nt]
            out["validation"] += idx[nt:nt + nv]
            out["train"] += idx[nt + nv:]
    elif by == "group":
        groups = list(ds["group"])
        if not any(groups):
            raise DataError("a group split needs groups: file names like Artist_Name_12.jpg or --group-column")
        # each group goes with its majority label
        glab = defaultdict(Counter)
        for g, lab in zip(groups, labels):
            glab[g][lab] += 1
        by_label = defaultdict(list)
        for g in sorted(glab):
            by_label[glab[g].most_common(1)[0][0]].append(g)
        where = {}
        for lab in sorted(by_label):
            gs = by_label[lab]
            rng.shuffle(gs)
            k = len(gs)
            nt = max(1, int(round(k * test_size))) if test_size and k >= 2 else 0
            nv = max(1, int(round(k * val_size))) if val_size and k - nt >= 2 else 0
            for j, g in enumerate(gs):
                where[g] = "test" if j < nt else "validation" if j < nt + nv else "train"
        for i, g in enumerate(groups):
            out[where[g]].append(i)
    else:
        raise DataError(f"unknown split '{by}'; use random or group")
    return {k: sorted(v) for k, v in out.items()}


def save_split(split: dict, ds, path: str | os.PathLike) -> None:
    """Write the split as file names (or row indices) per part, so it can be reused and audited."""
    def key(i):
        p = ds[i]["image"].get("path")
        return os.path.basename(p) if p else i
    write_json(path, {part: [key(i) for i in idx] for part, idx in split.items()}, indent=1)


def load_split(path: str | os.PathLike, ds) -> dict:
    payload = json.loads(Path(path).read_text())
    names = {}
    for i, im in enumerate(ds["image"]):
        names[os.path.basename(im.get("path") or str(i))] = i
    return {part: [names[k] if isinstance(k, str) else k for k in keys] for part, keys in payload.items()}


# ---------------------------------------------------------------- torch view

class TorchDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` (from :func:`load_data`) as (tensor, label index) pairs.

    Images are opened with :func:`artlens.images.open_image`, like everywhere else. With
    ``five_crop=size`` every image yields five items (4 corners + centre at full resolution).
    """

    def __init__(self, ds, label_names: Sequence[str], transform: Callable, five_crop: int | None = None):
        self.ds = ds
        self.index = {n: i for i, n in enumerate(label_names)}
        unknown = sorted(set(ds["label"]) - set(self.index))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not among the model's labels {list(label_names)[:10]}")
        self.labels = [self.index[lab] for lab in ds["label"]]
        self.transform = transform
        self.five_crop = five_crop

    def __len__(self):
        return len(self.ds) * (5 if self.five_crop else 1)

    def open(self, i: int) -> Image.Image:
        im = self.ds[i]["image"]
        return open_image(im["bytes"] if im.get("bytes") else im["path"])

    def __getitem__(self, i):
        j, crop = divmod(i, 5) if self.five_crop else (i, None)
        img = self.open(j)
        if crop is not None:
            img = five_crops(img, self.five_crop)[crop]
        return self.transform(img), self.labels[j]


# ---------------------------------------------------------------- perturbations (robustness evaluation)

PERTURBATIONS = ("jpeg", "scale", "crop", "upscale", "aspect")


def parse_perturbations(specs: Sequence[str] | None) -> list[tuple[str, float]]:
    """``["jpeg:30,50", "scale:0.25"]`` -> ``[("jpeg", 30), ("jpeg", 50), ("scale", 0.25)]``."""
    out = []
    for spec in specs or []:
        kind, _, vals = str(spec).partition(":")
        if kind not in PERTURBATIONS or not vals:
            raise DataError(f"bad perturbation '{spec}'; use KIND:V1,V2 with KIND in {', '.join(PERTURBATIONS)} "
                            f"(e.g. jpeg:30,50 scale:0.25,0.5 crop:0.6 upscale:1024 aspect:1.5)")
        try:
            out += [(kind, float(v)) for v in vals.split(",") if v]
        except ValueError:
            raise DataError(f"bad perturbation value in '{spec}': numbers expected") from None
    return out


def perturb(img: Image.Image, kind: str, value: float) -> Image.Image:
    """jpeg:Q re-encode at quality Q; scale:F downscale by F; crop:F centre crop keeping F of each side;
    upscale:S resize so the longer side is S px; aspect:R stretch the width by R."""
    w, h = img.size
    if kind == "jpeg":
        return jpeg_reencode(img, int(value))
    if kind == "scale":
        return img.resize((max(8, round(w * value)), max(8, round(h * value))), Image.BICUBIC)
    if kind == "crop":
        cw, ch = max(8, round(w * value)), max(8, round(h * value))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))
    if kind == "upscale":
        s = value / max(w, h)
        return img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.BICUBIC)
    if kind == "aspect":
        return img.resize((max(8, round(w * value)), h), Image.BICUBIC)
    raise DataError(f"unknown perturbation '{kind}'; use one of {', '.join(PERTURBATIONS)}")


def load_labelled_folders(paths: Sequence[str | os.PathLike], labels: Sequence[str]):
    """Every image under folder ``paths[i]`` (recursively) gets label ``labels[i]``.

    For training on sources rather than on folder names, e.g. human vs AI:
    ``load_labelled_folders(["paintings_styles10", "ai_sd15_styles15"], ["human", "ai"])``.
    Same columns as :func:`load_data` (``image`` undecoded, ``label``, ``group`` from file names).
    """
    import datasets

    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} folders but {len(labels)} labels; give one label per folder")
    rows = {"image": [], "label": [], "group": []}
    for folder, label in zip(paths, labels):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder (labelled folders must be local folders of images)")
        files = list_images(folder)
        if not files:
            raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        rows["image"] += [{"path": str(f.resolve()), "bytes": None} for f in files]
        rows["label"] += [str(label)] * len(files)
        rows["group"] += [group_from_filename(str(f)) for f in files]
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Value("string"),
                                  "group": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


# ---------------------------------------------------------------- test-time views

TTA_MODES = ("none", "flip", "crops")
TTA_VIEWS = {"none": 1, "flip": 2, "crops": 6}  # len(tta_views(img, mode, size))


def tta_views(img: Image.Image, mode: str | bool | None, size: int) -> list[Image.Image]:
    """The images whose predictions are averaged.

    ``flip``: the image and its mirror. ``crops``: those two plus the four corner crops
    (at the model's input scale), which look at details at full resolution.
    """
    mode = {True: "flip", False: "none", None: "none"}.get(mode, mode)
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode '{mode}'; use one of {', '.join(TTA_MODES)}")
    views = [img]
    if mode in ("flip", "crops"):
        views.append(ImageOps.mirror(img))
    if mode == "crops":
        w, h = img.size
        s = int(size * 1.25) / min(w, h)
        big = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        views += five_crops(big, int(size * 1.25 * 0.8))[:4]
    return views
