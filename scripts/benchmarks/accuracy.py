"""Accuracy of the embedded default models' recipes on held-out images, clean and perturbed.

The shipped models train on (nearly) everything, so each recipe is measured as its card measures it:
trained again with more held out (``build_defaults.HOLDOUTS``) and tested on what it did not see.

- style: without 10 painters (artist-disjoint split), the estimate of style recognition on painters it
  does not know; and on a stratified random 80%, tested on new paintings by the painters it knows.
- artist: stratified random 85%, tested on the other 15% (new paintings by the 50 painters).
- origin: leave one generator out (each SD 1.5 checkpoint, FLUX.1-dev, DALL-E 2), a quarter of the
  painters of each human source per fold, every image at 224 px and JPEG q90 first; the shares called
  AI / undecided / human at the shipped band, and the harder folds (a whole human source, the whole SD
  1.5 family left out). Which generator: held-out prompts, and "unknown" for a generator left out.

``--work-dir DIR`` reuses finished runs in DIR (``make defaults`` leaves them in build/defaults) and
trains only the missing ones there; without it everything is trained in a temporary folder.

Perturbations of style and artist (artlens.data.perturb, before the model's preprocessing): JPEG 50,
downscale 0.25, upscale to 1024 px + JPEG 90, 4:3 aspect stretch + JPEG 85. Origin's perturbation
table is in its card (build_defaults.origin_robustness).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import build_defaults as B  # scripts/ is sys.path[0] under `python scripts/benchmark.py`

TITLES = {"holdout_style": "artist-disjoint", "holdout_style_known": "stratified random 20%: new paintings by known painters",
          "holdout_artist": "stratified random 15%: new paintings by known painters",
          "holdout_origin": "artist-disjoint 20%, AI images as the original 512 px files"}


def run(args) -> str:
    data = Path(args.data).resolve()
    quick = bool(getattr(args, "quick", False))
    caps = {"style": 2 if quick else 5, "artist": 1}
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        reuse = getattr(args, "work_dir", None)
        work = Path(reuse or tmp)
        bargs = B.parse_args(["--data", str(data), "--work-dir", str(work)] + (["--skip-train"] if reuse else []))
        for name in B.NAMES:
            if name == "origin":
                t0 = time.time()
                res = B.measure_origin(bargs.configs_dir, data)[-1]
                parts.append("### origin (default recipe, leave one generator out)\n\n" + B.origin_tables(res)
                             + f"\n\n_{time.time() - t0:.0f} s (backbone tokens cached per image)._")
                continue
            d = B.data_for(name, data, work)
            for sub, extra, _ in B.HOLDOUTS[name]:
                t0 = time.time()
                hdir = work / sub
                if quick:
                    hdir, extra = Path(tmp) / sub, extra + ["--epochs", "2", "--max-per-class", "20"]
                reused = bargs.skip_train and (hdir / "all_results.json").exists()
                B.train_one(name, bargs, extra, hdir, d)
                rows = B.test_images(hdir, data, name, caps[name])
                res = B.evaluate_folder(hdir, rows, name)
                groups = sorted({Path(f).stem.rsplit("_", 1)[0] for f, _ in rows})
                who = f"{len(groups)} {'painters' if name != 'origin' else 'artists'} in the test images"
                took = (f"{time.time() - t0:.0f} s for {len(rows)} images x {len(res)} conditions, "
                        + (f"run reused from {sub}" if reused else "training included"))
                parts.append(f"### {name} (default recipe, {TITLES[sub]}: {who})\n\n"
                             + B.results_table(name, res) + f"\n\n_{took}._")
    head = ("Held-out accuracy of the embedded defaults' recipes (`trainers/configs/default_*.yaml`, trained again "
            "with more held out as in their cards), clean and under perturbations "
            f"(at most {caps['style']} / {caps['artist']} test images per label for style / artist; origin "
            "on every image, each scored by the fold that left its generator or painter out). These are in-source measurements; no external data set was measured.")
    return head + "\n\n" + "\n\n".join(parts)
