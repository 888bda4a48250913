#!/usr/bin/env python
"""Build a Hub-ready painting dataset from local imagefolders (human-made and AI-generated).

    python scripts/prepare_dataset.py \
        --source path=../shared/data/paintings_styles10,origin=human,label=style \
        --source path=../shared/data/ai_sd15_styles15,origin=ai,label=style \
        --resolution 256 --split group --output-dir data/styles_human_ai

Columns: image, style, artist, origin (human|ai), generator, source. Every image is resized
(shorter side = --resolution, centre crop) and re-encoded the same way, so neither native size nor
encoding history separates the sources; exact and near duplicates (perceptual hash) are dropped;
splits come from artlens.data.split_data (``--split group``: no artist in two splits). Writes
parquet (``data/<split>-*.parquet``) and/or ``save_to_disk``, a card (README.md) with ``configs``,
``dataset_info`` and the provenance of every source, and ``duplicates.json``.

``--describe FOLDER ...`` instead writes a card for existing imagefolders as they are
(the cards in dataset_cards/ for ../shared/data are made this way).

A --source is ``key=value`` pairs separated by commas: path (required), origin (human|ai),
label (what the folder names are: style|artist), generator, source (where the images come
from), license, name. In a --config YAML, ``source`` is a list of such strings or mappings.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from collections import Counter
from pathlib import Path

import yaml

from artlens.cards import DATASET_CARDS
from artlens.config import parse_with_config, save_config
from artlens.data import DataError, group_from_filename, split_data
from artlens.files import atomic_path, write_json
from artlens.images import IMAGE_EXTENSIONS, ImageError, open_image
from artlens.synth import slug

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ("style", "artist", "origin", "generator", "source")
PREPARED_TEMPLATE = DATASET_CARDS / "prepared_template.md"
FOLDER_TEMPLATE = DATASET_CARDS / "imagefolder_template.md"
SOURCE_KEYS = ("path", "origin", "label", "generator", "source", "license", "name")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags")
    p.add_argument("--source", action="append", default=None,
                   help="path=FOLDER,origin=human|ai,label=style|artist[,generator=..,source=..,license=..,name=..]; repeatable")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--resolution", type=int, default=256, help="shorter side after resizing; 0 keeps the size")
    p.add_argument("--crop", default="center", choices=["center", "none"], help="centre-crop to a square")
    p.add_argument("--format", default="jpeg", choices=["jpeg", "png"], help="one encoding for every image")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--near-duplicates", type=int, default=6,
                   help="max perceptual-hash distance (of 64 bits) of near duplicates; -1 keeps them")
    p.add_argument("--label-column", default="style", choices=["style", "artist", "origin"],
                   help="column the splits are stratified on")
    p.add_argument("--common-labels", action="store_true",
                   help="keep only --label-column values that every source has (e.g. the styles real and AI sets share)")
    p.add_argument("--split", default="group", choices=["random", "group"], help="group: artist-disjoint splits")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--val-size", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-format", default="parquet", help="parquet, disk, or parquet,disk")
    p.add_argument("--num-proc", type=int, default=1, help="processes for datasets.map")
    p.add_argument("--pretty-name", default=None)
    p.add_argument("--license", default="other", help="licence field of the card")
    p.add_argument("--push-to-hub", default=None, metavar="REPO")
    p.add_argument("--private", action="store_true")
    p.add_argument("--describe", nargs="+", default=None, metavar="FOLDER",
                   help="only write cards for these imagefolders (into --output-dir as <name>.md)")
    p.add_argument("--card-info", default=None, help="YAML with description/source/licence/caveats per --describe set")
    args = parse_with_config(p, argv)
    if not args.output_dir:
        p.error("--output-dir is required")
    if not args.describe and not args.source:
        p.error("give at least one --source (or --describe FOLDER ...)")
    return args


# ---------------------------------------------------------------- sources

def parse_source(spec) -> dict:
    if isinstance(spec, str):
        parts = [s for s in spec.split(",") if s.strip()]
        if len(parts) == 1 and "=" not in parts[0]:
            parts = [f"path={parts[0]}"]
        bad = [s for s in parts if "=" not in s]
        if bad:
            raise DataError(f"--source '{spec}': expected key=value pairs separated by commas (path=..,origin=..)")
        spec = dict(s.split("=", 1) for s in parts)
    spec = {str(k).strip(): str(v).strip() for k, v in dict(spec).items()}
    unknown = sorted(set(spec) - set(SOURCE_KEYS))
    if unknown:
        raise DataError(f"--source: unknown keys {unknown}; use {', '.join(SOURCE_KEYS)}")
    if "path" not in spec:
        raise DataError("--source needs path=FOLDER")
    path = Path(spec["path"]).expanduser()
    if not path.is_dir():
        raise DataError(f"--source {path}: no such folder; pass an imagefolder laid out as <label>/<image>")
    origin = spec.get("origin", "human")
    if origin not in ("human", "ai"):
        raise DataError(f"--source {path}: origin must be human or ai, not '{origin}'")
    label = spec.get("label", "style")
    if label not in ("style", "artist"):
        raise DataError(f"--source {path}: label (what the folder names are) must be style or artist, not '{label}'")
    return {"path": path, "origin": origin, "label": label, "generator": spec.get("generator", "" if origin == "human" else "unknown"),
            "source": spec.get("source", ""), "license": spec.get("license", ""), "name": spec.get("name", path.name)}


def _key(text: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower()


def _read_metadata(folder: Path) -> tuple[dict, dict]:
    """Rows of ``metadata.csv``/``.tsv`` keyed by file name (relative) and by artist key."""
    by_file, by_artist = {}, {}
    for name, delim in (("metadata.csv", ","), ("metadata.tsv", "\t")):
        f = folder / name
        if not f.exists():
            continue
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter=delim):
                if row.get("file_name"):
                    by_file[row["file_name"]] = row
                if row.get("artist"):
                    by_artist.setdefault(_key(row["artist"]), row)
                    # "Velazquez, Diego" is stored as Vel_zquez_Diego: non-ASCII letters became "_"
                    by_artist.setdefault(_key(str(row["artist"]).encode("ascii", "replace").decode().replace("?", "_")), row)
    return by_file, by_artist


def collect_rows(src: dict) -> list[dict]:
    """One row per image of a source: path, style, artist, origin, generator, source."""
    folder = src["path"]
    by_file, by_artist = _read_metadata(folder)
    rows = []
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file() or f.parent == folder:
            continue
        rel = f.relative_to(folder).as_posix()
        meta = by_file.get(rel) or by_artist.get(_key(group_from_filename(f.name))) or {}
        folder_label = f.relative_to(folder).parts[0]
        artist = meta.get("artist") or (folder_label if src["label"] == "artist" else group_from_filename(f.name))
        style = folder_label if src["label"] == "style" else (meta.get("style") or "")
        generator = meta.get("model_id") or meta.get("checkpoint") or src["generator"]
        rows.append({"path": str(f), "style": style, "artist": slug(artist),
                     "origin": src["origin"], "generator": generator if src["origin"] == "ai" else "",
                     "source": src["name"]})
    if not rows:
        raise DataError(f"{folder} holds no images in <label>/<image> folders")
    return rows


# ---------------------------------------------------------------- normalise, hash, dedupe

def normalise(img, resolution: int, crop: str):
    from PIL import Image

    if resolution:
        w, h = img.size
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    if crop == "center":
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return img


def _encode(img, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=quality)
    return buf.getvalue()


def _process(ex, resolution, crop, fmt, quality):
    import imagehash

    img = open_image(ex["path"])
    exact = hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()
    img = normalise(img, resolution, crop)
    name = f"{ex['source']}/{Path(ex['path']).parent.name}/{Path(ex['path']).stem}.{'jpg' if fmt == 'jpeg' else 'png'}"
    return {"image": {"bytes": _encode(img, fmt, quality), "path": name}, "sha256": exact,
            "phash": str(imagehash.phash(img)), "width": img.size[0], "height": img.size[1]}


def find_duplicates(sha: list[str], phash: list[str], max_distance: int) -> dict[int, tuple[int, str]]:
    """``{dropped index: (kept index, 'exact'|'near')}``; the first occurrence is kept."""
    import numpy as np

    dropped, first = {}, {}
    for i, s in enumerate(sha):
        if s in first:
            dropped[i] = (first[s], "exact")
        else:
            first[s] = i
    if max_distance >= 0 and phash:
        bits = np.array([[int(c, 16) for c in h] for h in phash], dtype=np.uint8)
        bits = np.unpackbits(bits[:, :, None], axis=2)[:, :, 4:].reshape(len(phash), -1)  # 16 hex -> 64 bits
        kept = []
        for i in range(len(phash)):
            if i in dropped:
                continue
            if kept:
                d = (bits[kept] != bits[i]).sum(1)
                j = int(d.argmin())
                if d[j] <= max_distance:
                    dropped[i] = (kept[j], "near")
                    continue
            kept.append(i)
    return dropped


# ---------------------------------------------------------------- card helpers

def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


# ---------------------------------------------------------------- main

def prepare(args) -> dict:
    import datasets

    sources = [parse_source(s) for s in args.source]
    rows = []
    for src in sources:
        src_rows = collect_rows(src)
        src["images"] = len(src_rows)
        rows += src_rows
    names = [s["name"] for s in sources]
    if len(set(names)) != len(names):
        raise DataError(f"two sources share the name {names}; give each a name=... in --source")
    if args.common_labels:
        shared = set.intersection(*({r[args.label_column] for r in rows if r["source"] == s["name"]} for s in sources))
        if not shared:
            raise DataError(f"the sources share no {args.label_column}; drop --common-labels")
        rows = [r for r in rows if r[args.label_column] in shared]
        for src in sources:
            src["images"] = sum(1 for r in rows if r["source"] == src["name"])

    ds = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("path",) + COLUMNS})
    ds = ds.map(_process, fn_kwargs=dict(resolution=args.resolution, crop=args.crop, fmt=args.format, quality=args.quality),
                num_proc=args.num_proc if args.num_proc > 1 else None, desc="normalising and hashing")
    dups = find_duplicates(ds["sha256"], ds["phash"], args.near_duplicates)
    # a painting found in two sources keeps its first row; empty fields are filled from the copy
    fill = {}
    for i, (j, _) in dups.items():
        for c in ("style", "artist"):
            if not rows[j][c] and rows[i][c] and (j, c) not in fill:
                fill[(j, c)] = rows[i][c]
    if fill:
        def _fill(ex, idx):
            return {c: fill.get((idx, c), ex[c]) for c in ("style", "artist")}
        ds = ds.map(_fill, with_indices=True, desc="filling fields from duplicates")
    keep = [i for i in range(len(ds)) if i not in dups]
    dup_report = [{"dropped": rows[i]["path"], "kept": rows[j]["path"], "kind": kind} for i, (j, kind) in sorted(dups.items())]
    for src in sources:
        src["dropped_duplicates"] = sum(1 for i in dups if rows[i]["source"] == src["name"])
        gens = sorted({r["generator"] for r in rows if r["source"] == src["name"] and r["generator"]})
        if gens:
            src["generator"] = ", ".join(gens)
    ds = ds.select(keep)

    labels = ds[args.label_column]
    if not all(labels):
        raise DataError(f"some rows have no {args.label_column}; choose --label-column among columns every source has")
    view = ds.select_columns(["artist"]).add_column("label", labels).rename_column("artist", "group")
    parts = split_data(view, test_size=args.test_size, val_size=args.val_size, by=args.split, seed=args.seed)
    features = datasets.Features({"image": datasets.Image(), **{c: datasets.Value("string") for c in COLUMNS}})
    ds = ds.select_columns(["image", *COLUMNS]).cast(features)
    dd = datasets.DatasetDict({k: ds.select(v) for k, v in parts.items() if v})

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    formats = {f.strip() for f in str(args.save_format).split(",")}
    if not formats <= {"parquet", "disk"}:
        raise DataError(f"--save-format {args.save_format}: use parquet, disk or parquet,disk")
    split_bytes = {}
    if "parquet" in formats:
        (out / "data").mkdir(exist_ok=True)
        for split, part in dd.items():
            final = out / "data" / f"{split}-00000-of-00001.parquet"
            with atomic_path(final) as tmp:
                part.to_parquet(str(tmp))
            split_bytes[split] = final.stat().st_size
    if "disk" in formats:
        dd.save_to_disk(str(out / "disk"))

    stats = {split: dict(num_examples=len(part), by_label=sorted(Counter(part[args.label_column]).items()),
                         by_origin=sorted(Counter(part["origin"]).items()), artists=len(set(part["artist"])))
             for split, part in dd.items()}
    card_data = {
        "license": args.license, "task_categories": ["image-classification"],
        "tags": ["art", "paintings", "artlens"] + (["synthetic", "ai-generated"] if any(s["origin"] == "ai" for s in sources) else []),
        "size_categories": [_size_category(len(ds))], "pretty_name": args.pretty_name or out.name,
        "configs": [{"config_name": "default", "data_files": [
            {"split": split, "path": f"data/{split}-*"} for split in dd]}],
        "dataset_info": {
            "features": [{"name": "image", "dtype": "image"}] + [{"name": c, "dtype": "string"} for c in COLUMNS],
            "splits": [{"name": split, "num_examples": len(part), "num_bytes": split_bytes.get(split, 0)}
                       for split, part in dd.items()],
        },
    }
    from artlens.cards import render_dataset_card

    recipe = {k: getattr(args, k) for k in ("resolution", "crop", "format", "quality", "near_duplicates",
                                            "label_column", "split", "test_size", "val_size", "seed")}
    render_dataset_card(
        PREPARED_TEMPLATE, out / "README.md", card_data, pretty_name=card_data["pretty_name"],
        sources=[{**s, "path": str(s["path"])} for s in sources], stats=stats, recipe=recipe,
        num_images=len(ds), num_duplicates=len(dups), num_exact=sum(1 for v in dups.values() if v[1] == "exact"),
        label_column=args.label_column, license=args.license)
    write_json(out / "duplicates.json", dup_report, indent=1)
    save_config(args, out / "prepare_config.yaml")
    result = {"output_dir": str(out), "splits": {k: len(v) for k, v in dd.items()}, "duplicates": len(dups),
              "images": len(ds), "sources": [{k: (str(v) if k == "path" else v) for k, v in s.items()} for s in sources]}
    if args.push_to_hub:
        from artlens.synth import push_dataset

        result["hub_url"] = push_dataset(dd, args.push_to_hub, card_path=out / "README.md", private=args.private)
    print(f"{len(ds)} images ({len(dups)} duplicates dropped) -> {out}: " +
          ", ".join(f"{k} {len(v)}" for k, v in dd.items()))
    return result


def describe(args) -> list[Path]:
    """Cards for imagefolders as they are (counts per label, artists, sizes, provenance, caveats)."""
    from PIL import Image

    from artlens.cards import render_dataset_card

    info_all = yaml.safe_load(Path(args.card_info).read_text()) if args.card_info else {}
    out_dir = Path(args.output_dir)
    written = []
    for folder in args.describe:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"--describe {folder}: no such folder")
        info = dict(info_all.get(folder.name, {}))
        counts, groups, sizes = Counter(), {}, Counter()
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() and f.parent != folder:
                lab = f.relative_to(folder).parts[0]
                counts[lab] += 1
                groups.setdefault(lab, set()).add(group_from_filename(f.name))
                with Image.open(f) as im:
                    sizes[f"{im.size[0]}x{im.size[1]}"] += 1
        if not counts:
            raise DataError(f"--describe {folder}: no images in <label>/<image> folders")
        n = sum(counts.values())
        card_data = {
            "license": info.get("license", "other"), "task_categories": ["image-classification"],
            "tags": ["art", "paintings", "artlens"] + list(info.get("tags", [])),
            "size_categories": [_size_category(n)], "pretty_name": info.get("pretty_name", folder.name),
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "*/*"}]}],
            "dataset_info": {"features": [{"name": "image", "dtype": "image"},
                                          {"name": "label", "dtype": {"class_label": {"names": {
                                              i: lab for i, lab in enumerate(sorted(counts))}}}}],
                             "splits": [{"name": "train", "num_examples": n}]},
        }
        if info.get("license_name"):
            card_data["license_name"] = info["license_name"]
        out = out_dir / f"{folder.name}.md"
        render_dataset_card(
            FOLDER_TEMPLATE, out, card_data, name=folder.name, pretty_name=card_data["pretty_name"], info=info,
            num_images=n, label_counts=sorted(counts.items()),
            label_groups={k: len(v) for k, v in groups.items()}, sizes=sorted(sizes.items(), key=lambda kv: -kv[1]),
            extra_files=sorted(p.name for p in folder.iterdir() if p.is_file()))
        written.append(out)
        print(f"card: {out}")
    return written


def main(args):
    if args.describe:
        return describe(args)
    return prepare(args)


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, ImageError, FileNotFoundError) as e:
        sys.exit(f"prepare_dataset.py: error: {e}")
