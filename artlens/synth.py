"""Synthetic paintings: prompt recipes and the diffusers generation loop.

A recipe (YAML) is motifs x artists (or styles) x prompt templates, plus a negative prompt and a
number of images per prompt. :func:`build_jobs` expands it into one job per image, each with its
own deterministic seed (a hash of the base seed, the prompt and the image number, so adding motifs
or labels to a recipe never changes the seeds of images already made). :func:`generate` runs any
text-to-image pipeline ``AutoPipelineForText2Image`` can load over the jobs, writes an imagefolder
(``<label>/<file>.png``) and skips what already exists, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from .cards import DATASET_CARDS, render_dataset_card
from .errors import ArtlensError
from .files import atomic_write, write_bytes, write_json

__all__ = [
    "SynthError", "load_recipe", "build_jobs", "stable_seed", "slug", "load_pipeline", "generate",
    "missing_jobs", "write_metadata", "read_metadata", "GENERATION_KEYS", "check_settings",
    "write_synthetic_card", "push_dataset", "METADATA_COLUMNS", "SYNTHETIC_CARD_TEMPLATE",
]

SYNTHETIC_CARD_TEMPLATE = DATASET_CARDS / "synthetic_template.md"
# settings that change the pixels of an image with a given seed: a resumed run must use the same ones
GENERATION_KEYS = ("model", "scheduler", "steps", "guidance", "width", "height", "batch_size", "dtype", "seed")
METADATA_COLUMNS = ("file_name", "label", "artist", "style", "motif", "template", "prompt", "negative_prompt",
                    "seed", "model_id", "scheduler", "steps", "guidance", "width", "height")


class SynthError(ArtlensError, ValueError):
    """A recipe, pipeline or output folder is unusable; the message says what to do."""


# ---------------------------------------------------------------- recipes and jobs

def slug(text: str) -> str:
    """``Pierre-Auguste Renoir`` -> ``Pierre-Auguste_Renoir`` (ASCII, safe as a folder or file name)."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9\-]+", "_", text).strip("_") or "x"


def load_recipe(path: str | os.PathLike) -> dict:
    """Read and check a recipe. ``motifs`` may be a list or a YAML file (relative to the recipe)
    holding a list or ``{motifs: [...]}``; ``artists`` items are names or ``{name, style, label}``;
    ``styles`` (a list of names) can replace ``artists`` for recipes without artist names."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise SynthError(f"recipe {p} does not exist; see scripts/recipes/*.yaml for examples")
    r = yaml.safe_load(p.read_text()) or {}
    if not isinstance(r, dict):
        raise SynthError(f"recipe {p}: expected a mapping with motifs, artists (or styles) and templates")
    known = {"name", "description", "motifs", "artists", "styles", "templates", "negative_prompt",
             "images_per_prompt", "label_by", "license"}
    unknown = sorted(set(r) - known)
    if unknown:
        raise SynthError(f"recipe {p}: unknown keys {unknown}; allowed: {sorted(known)}")
    motifs = r.get("motifs")
    if isinstance(motifs, str):
        mp = (p.parent / motifs) if not Path(motifs).is_absolute() else Path(motifs)
        if not mp.exists():
            raise SynthError(f"recipe {p}: motifs file {mp} does not exist")
        motifs = yaml.safe_load(mp.read_text())
        motifs = motifs.get("motifs") if isinstance(motifs, dict) else motifs
    if not motifs or not isinstance(motifs, list):
        raise SynthError(f"recipe {p}: 'motifs' must be a non-empty list or a YAML file with one")
    subjects = []
    if r.get("artists"):
        for a in r["artists"]:
            a = {"name": a} if isinstance(a, str) else dict(a)
            if not a.get("name"):
                raise SynthError(f"recipe {p}: every artist needs a name, got {a}")
            subjects.append({"artist": str(a["name"]), "style": str(a.get("style") or ""), "label": a.get("label")})
    elif r.get("styles"):
        subjects = [{"artist": "", "style": str(s), "label": None} for s in r["styles"]]
    else:
        raise SynthError(f"recipe {p}: give 'artists' (names or {{name, style}}) or 'styles'")
    label_by = r.get("label_by", "artist" if r.get("artists") else "style")
    if label_by not in ("artist", "style"):
        raise SynthError(f"recipe {p}: label_by must be 'artist' or 'style', not '{label_by}'")
    for s in subjects:
        if s["label"] is None:
            s["label"] = slug(s[label_by]) if s[label_by] else None
        if not s["label"]:
            raise SynthError(f"recipe {p}: label_by is '{label_by}' but {s} has no {label_by}")
    templates = r.get("templates") or ["a painting of {motif} in the style of {artist}"]
    for t in templates:
        fields = set(re.findall(r"{(\w+)}", t))
        if not fields <= {"motif", "artist", "style"} or "motif" not in fields:
            raise SynthError(f"recipe {p}: template '{t}' must use {{motif}} and only {{artist}}, {{style}} besides")
        if "artist" in fields and any(not s["artist"] for s in subjects):
            raise SynthError(f"recipe {p}: template '{t}' uses {{artist}} but the recipe lists only styles")
    n = int(r.get("images_per_prompt", 1))
    if n < 1:
        raise SynthError(f"recipe {p}: images_per_prompt must be >= 1")
    return {
        "name": r.get("name") or p.stem, "description": r.get("description", ""), "motifs": [str(m) for m in motifs],
        "subjects": subjects, "templates": list(templates), "negative_prompt": r.get("negative_prompt") or "",
        "images_per_prompt": n, "label_by": label_by, "license": r.get("license"), "path": str(p),
    }


def stable_seed(base_seed: int, *parts) -> int:
    """A seed from the base seed and the job's identity, the same on every machine and Python."""
    h = hashlib.sha256(json.dumps([int(base_seed), *map(str, parts)]).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def build_jobs(recipe: dict, seed: int = 0, limit: int | None = None) -> list[dict]:
    """One job per image: file name, label, prompt, negative prompt and seed.

    Ordered motif by motif (then template, image, label), so the first ``limit`` jobs cover every
    label about equally.
    """
    jobs = []
    for mi, motif in enumerate(recipe["motifs"]):
        for ti, template in enumerate(recipe["templates"]):
            for k in range(recipe["images_per_prompt"]):
                for s in recipe["subjects"]:
                    prompt = template.format(motif=motif, artist=s["artist"], style=s["style"].replace("_", " "))
                    who = slug(s["artist"] or s["style"])
                    jobs.append({
                        "file_name": f"{s['label']}/{who}_m{mi:03d}_t{ti}_{k}.png",
                        "label": s["label"], "artist": s["artist"], "style": s["style"], "motif": motif,
                        "template": template, "prompt": prompt, "negative_prompt": recipe["negative_prompt"],
                        "seed": stable_seed(seed, prompt, k),
                    })
    names = [j["file_name"] for j in jobs]
    if len(set(names)) != len(names):
        raise SynthError("the recipe gives two images the same file name (duplicate artists or labels?)")
    return jobs[:limit] if limit else jobs


def chunk_jobs(jobs: Sequence[dict], batch_size: int) -> list[list[dict]]:
    """Fixed batches over the whole job list: an image is always made in the same batch, with the
    same neighbours, so regenerating it (after deletion) gives the same pixels."""
    return [list(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]


def missing_jobs(jobs: Sequence[dict], out_dir: str | os.PathLike) -> list[dict]:
    out = Path(out_dir)
    return [j for j in jobs if not (out / j["file_name"]).exists()]


# ---------------------------------------------------------------- settings (resume safety)

def check_settings(out_dir: str | os.PathLike, settings: dict, overwrite: bool = False) -> None:
    """Refuse to resume into a folder made with other generation settings (mixed images otherwise)."""
    path = Path(out_dir) / "generation.json"
    new = {k: settings.get(k) for k in GENERATION_KEYS}
    if path.exists() and not overwrite:
        old = json.loads(path.read_text()).get("settings", {})
        diff = {k: (old.get(k), new[k]) for k in GENERATION_KEYS if old.get(k) != new[k]}
        if diff:
            raise SynthError(
                f"{out_dir} was generated with other settings {diff} (old, new); resume with the same settings, "
                f"choose another --output-dir, or pass --overwrite to regenerate everything")
    write_json(path, {"settings": new})


# ---------------------------------------------------------------- pipeline and generation

def load_pipeline(model: str, scheduler: str | None = None, device: str | None = None, dtype: str = "auto"):
    """Any text-to-image pipeline ``AutoPipelineForText2Image`` loads (Hub id or local folder);
    CUDA in fp16 when present, CPU in fp32 otherwise."""
    import diffusers
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "float16" if str(device).startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    local = Path(model).expanduser()
    if local.exists() and not (local / "model_index.json").exists():
        raise SynthError(f"{model} has no model_index.json; pass a diffusers pipeline folder (save_pretrained) or a Hub id")
    try:
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(str(local) if local.exists() else model,
                                                                   torch_dtype=torch_dtype)
    except (OSError, ValueError) as e:
        raise SynthError(f"could not load the text-to-image pipeline '{model}' ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]}); without network pass a local pipeline folder") from None
    if scheduler and scheduler != "default":
        cls = getattr(diffusers, scheduler, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise SynthError(f"unknown scheduler '{scheduler}'; use a diffusers scheduler class name such as "
                             f"DPMSolverMultistepScheduler, EulerDiscreteScheduler or DDIMScheduler")
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def generate(pipe, jobs: Sequence[dict], out_dir: str | os.PathLike, steps: int = 25, guidance: float = 7.5,
             width: int = 512, height: int = 512, batch_size: int = 1, state=None) -> int:
    """Generate the missing images of ``jobs`` into ``out_dir``; returns how many this process wrote.

    Batches are fixed over the whole job list (see :func:`chunk_jobs`); a batch runs when any of
    its images is missing and only missing images are written, each to a temporary name first, so
    an interrupted run loses at most the batch in flight. With ``state`` (an accelerate
    ``PartialState``) the batches to do are split between processes.
    """
    import torch
    from tqdm.auto import tqdm

    out = Path(out_dir)
    multi = state is not None and state.num_processes > 1
    if multi:
        state.wait_for_everyone()  # every process must see the same folder, hence the same batch list
    todo = [c for c in chunk_jobs(jobs, batch_size) if missing_jobs(c, out)]
    is_main = state is None or state.is_main_process
    if multi:
        state.wait_for_everyone()  # nobody writes before everyone has listed what is missing
        with state.split_between_processes(todo) as mine:
            mine = list(mine)
    else:
        mine = todo
    written = 0
    for chunk in tqdm(mine, desc="generating", unit="batch", disable=not is_main):
        gens = [torch.Generator(device="cpu").manual_seed(int(j["seed"])) for j in chunk]
        neg = [j["negative_prompt"] for j in chunk]
        result = pipe(prompt=[j["prompt"] for j in chunk], negative_prompt=neg if any(neg) else None,
                      num_inference_steps=int(steps), guidance_scale=float(guidance), width=int(width),
                      height=int(height), generator=gens, num_images_per_prompt=1)
        for job, img in zip(chunk, result.images):
            path = out / job["file_name"]
            if path.exists():
                continue
            write_bytes(path, _png_bytes(img))
            written += 1
    return written


# ---------------------------------------------------------------- metadata, card, push

def write_metadata(jobs: Sequence[dict], out_dir: str | os.PathLike, settings: dict) -> Path:
    """``metadata.csv`` (the imagefolder convention: ``file_name`` first) for every image on disk."""
    out = Path(out_dir)
    path = out / "metadata.csv"
    extra = {"model_id": settings["model"], "scheduler": settings.get("scheduler_name") or settings.get("scheduler"),
             "steps": settings["steps"], "guidance": settings["guidance"], "width": settings["width"],
             "height": settings["height"]}
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
        w.writeheader()
        for j in jobs:
            if (out / j["file_name"]).exists():
                w.writerow({**{k: j[k] for k in METADATA_COLUMNS if k in j}, **extra})
    return path


def read_metadata(out_dir: str | os.PathLike) -> list[dict]:
    with open(Path(out_dir) / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def write_synthetic_card(out_dir: str | os.PathLike, recipe: dict, settings: dict, rows: Sequence[dict],
                         license: str = "other", pretty_name: str | None = None,
                         template_path: str | os.PathLike | None = None) -> Path:
    """``README.md`` of a generated imagefolder, from ``dataset_cards/synthetic_template.md``."""
    from collections import Counter

    counts = Counter(r["label"] for r in rows)
    model = settings["model"]
    hub_model = model if ("/" in model and not Path(model).expanduser().exists()) else None
    card_data = {
        "license": license, "task_categories": ["image-classification", "text-to-image"],
        "tags": ["synthetic", "art", "paintings", "artlens", "diffusers"] + ([f"generated-by:{hub_model}"] if hub_model else []),
        "size_categories": [_size_category(len(rows))], "pretty_name": pretty_name or recipe["name"],
    }
    recipe_public = {k: recipe[k] for k in ("name", "label_by", "templates", "negative_prompt", "images_per_prompt")}
    recipe_public["subjects"] = recipe["subjects"]
    recipe_public["num_motifs"] = len(recipe["motifs"])
    return render_dataset_card(
        template_path or SYNTHETIC_CARD_TEMPLATE, Path(out_dir) / "README.md", card_data,
        pretty_name=card_data["pretty_name"], description=recipe.get("description", ""), model=model,
        hub_model=hub_model, settings={k: settings.get(k) for k in GENERATION_KEYS},
        scheduler_name=settings.get("scheduler_name") or settings.get("scheduler"),
        recipe_yaml=_yaml(recipe_public), motifs=recipe["motifs"], num_images=len(rows),
        label_counts=sorted(counts.items()), label_by=recipe["label_by"], license=license,
    )


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=100).strip()


def push_dataset(dataset, repo_id: str, card_path: str | os.PathLike | None = None, private: bool = False,
                 token: str | None = None) -> str:
    """Publish a ``datasets`` Dataset/DatasetDict as parquet on the Hub, then its card as README.md."""
    try:
        dataset.push_to_hub(repo_id, private=private, token=token)
        if card_path:
            from huggingface_hub import DatasetCard

            # push_to_hub wrote a README with the parquet `configs` and `dataset_info`; keep them in ours
            remote = DatasetCard.load(repo_id, repo_type="dataset", token=token)
            card = DatasetCard.load(str(card_path))
            for key in ("configs", "dataset_info"):
                if remote.data.get(key) is not None:
                    setattr(card.data, key, remote.data.get(key))
            card.push_to_hub(repo_id, repo_type="dataset", token=token)
    except Exception as e:  # noqa: BLE001 - network/auth errors: say what happened and what to do
        raise SynthError(f"could not push to the Hub dataset '{repo_id}' ({type(e).__name__}: {str(e)[:200]}); "
                         f"check the network and `huggingface-cli login`") from None
    return f"https://huggingface.co/datasets/{repo_id}"
