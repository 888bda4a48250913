#!/usr/bin/env python
"""Generate a synthetic painting dataset (imagefolder + metadata.csv + card) from a prompt recipe.

    python scripts/generate_synthetic.py --recipe scripts/recipes/monet_renoir.yaml \
        --model stabilityai/stable-diffusion-2-1-base --output-dir data/monet_renoir_sd21
    accelerate launch scripts/generate_synthetic.py --config gen.yaml     # several GPUs

Re-running skips images that exist; an interrupted run loses at most the batch in flight.
Only the main process writes metadata.csv, generation_config.yaml and README.md (the card).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from artlens.config import parse_with_config, save_config
from artlens.synth import (
    SynthError,
    build_jobs,
    check_settings,
    generate,
    load_pipeline,
    load_recipe,
    missing_jobs,
    push_dataset,
    write_metadata,
    write_synthetic_card,
)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="YAML whose keys are these flags (output_dir: ...)")
    p.add_argument("--recipe", default=None, help="prompt recipe YAML (see scripts/recipes/)")
    p.add_argument("--output-dir", default=None, help="imagefolder to write (and resume)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers text-to-image pipeline: Hub id or local folder")
    p.add_argument("--scheduler", default="default", help="diffusers scheduler class name, or 'default' (the model's)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed is derived from it and its prompt")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the recipe (balanced over labels)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="auto: float16 on CUDA, float32 on CPU")
    p.add_argument("--license", default="other", help="licence field of the dataset card")
    p.add_argument("--overwrite", action="store_true", help="allow other settings than the folder was made with")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="publish as a Hub dataset (parquet + card)")
    p.add_argument("--private", action="store_true")
    args = parse_with_config(p, argv)
    if not args.recipe or not args.output_dir:
        p.error("--recipe and --output-dir are required (on the command line or in --config)")
    if args.batch_size < 1 or args.steps < 1:
        p.error("--batch-size and --steps must be >= 1")
    return args


def _resolve_device(args) -> tuple[str, str]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")
    return device, dtype


def main(args) -> dict:
    import torch
    from accelerate import PartialState

    # CPU-only multi-process runs (accelerate launch --cpu, torchrun) need cpu=True to join the group
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    recipe = load_recipe(args.recipe)
    jobs = build_jobs(recipe, seed=args.seed, limit=args.limit)
    out = Path(args.output_dir)
    device, dtype = _resolve_device(args)
    if state.num_processes > 1 and args.device is None:
        device = str(state.device)
    settings = {"model": str(args.model), "scheduler": args.scheduler, "steps": args.steps, "guidance": args.guidance,
                "width": args.width, "height": args.height, "batch_size": args.batch_size, "dtype": dtype,
                "seed": args.seed}
    if state.is_main_process:
        check_settings(out, settings, overwrite=args.overwrite)
    state.wait_for_everyone()

    todo = missing_jobs(jobs, out)
    if todo:
        pipe = load_pipeline(args.model, args.scheduler, device=device, dtype=dtype)
        settings["scheduler_name"] = type(pipe.scheduler).__name__
        generate(pipe, jobs, out, steps=args.steps, guidance=args.guidance, width=args.width,
                           height=args.height, batch_size=args.batch_size, state=state)
    else:
        settings["scheduler_name"] = _scheduler_name(args)
    state.wait_for_everyone()

    # counted from the folder, so images written by every process are included
    result = {"images": len(jobs), "generated": len(todo) - len(missing_jobs(jobs, out)),
              "skipped": len(jobs) - len(todo), "output_dir": str(out)}
    if state.is_main_process:
        write_metadata(jobs, out, settings)
        from artlens.synth import read_metadata

        rows = read_metadata(out)
        card = write_synthetic_card(out, recipe, settings, rows, license=args.license)
        save_config(dict(vars(args), device=device, dtype=dtype), out / "generation_config.yaml")
        result["missing"] = len(missing_jobs(jobs, out))
        if args.push_to_hub:
            import datasets

            ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
            result["hub_url"] = push_dataset(ds, args.push_to_hub, card_path=card, private=args.private)
        print(f"{len(rows)} images in {out} ({result['generated']} generated now, {result['skipped']} already there)")
    return result


def _scheduler_name(args) -> str:
    """The scheduler class without loading the whole pipeline (nothing left to generate)."""
    import json

    from artlens.synth import read_metadata

    if (Path(args.output_dir) / "metadata.csv").exists():
        rows = read_metadata(args.output_dir)
        if rows and rows[0].get("scheduler"):
            return rows[0]["scheduler"]
    if args.scheduler and args.scheduler != "default":
        return args.scheduler
    cfg = Path(args.model).expanduser() / "scheduler" / "scheduler_config.json"
    if cfg.exists():
        return json.loads(cfg.read_text()).get("_class_name", "default")
    return "default"


if __name__ == "__main__":
    try:
        main(parse_args())
    except (SynthError, FileNotFoundError, ValueError) as e:
        sys.exit(f"generate_synthetic.py: error: {e}")
