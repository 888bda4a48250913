"""Accuracy of the embedded default models' recipes on held-out images, clean and perturbed.

The shipped models train on (nearly) everything, so each recipe is measured as its card measures it, from
the backbone tokens cached per image (``artlens.features.image_tokens``): the first run computes them.

- style: painter folds (every painter of both sources in one fold: unseen painters) and stratified random
  folds (known painters), three seeds; heads trained without one style at a time (the "none of these" rule);
  JPEG 50 and 0.25x copies of `perturb_per_style` paintings a style (40), each scored by the fold that did
  not see its painter.
- artist: 15% of each painter's paintings held out (three seeds), clean and upscaled to 900 px + JPEG 85.
- origin: leave one generator out (each SD 1.5 checkpoint, FLUX.1-dev, DALL-E 2), a quarter of the
  painters of each human source per fold, every image at 224 px and JPEG q90 first; the shares called
  AI / undecided / human at the shipped band, and the harder folds (a whole human source, the whole SD
  1.5 family left out). Which generator: held-out prompts, and "unknown" for a generator left out.

``--work-dir DIR`` keeps the perturbed copies there (``make defaults`` leaves them in build/defaults).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import build_defaults as B  # scripts/ is sys.path[0] under `python scripts/benchmark.py`


def run(args) -> str:
    data = Path(args.data).resolve()
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(getattr(args, "work_dir", None) or tmp)
        bargs = B.parse_args(["--data", str(data), "--work-dir", str(work)])
        t0 = time.time()
        res = B.measure_style(bargs.configs_dir, data, work)[-1]
        parts.append("### style (default recipe)\n\n" + B.style_tables(res) + f"\n\n_{time.time() - t0:.0f} s._")
        t0 = time.time()
        res = B.measure_artist(bargs.configs_dir, data, work)[-1]
        parts.append("### artist (default recipe)\n\n" + B.artist_tables(res) + f"\n\n_{time.time() - t0:.0f} s._")
        t0 = time.time()
        res = B.measure_origin(bargs.configs_dir, data)[-1]
        parts.append("### origin (default recipe, leave one generator out)\n\n" + B.origin_tables(res)
                     + f"\n\n_{time.time() - t0:.0f} s (backbone tokens cached per image)._")
    head = ("Held-out accuracy of the embedded defaults' recipes (`trainers/configs/default_*.yaml`, measured as in "
            "their cards), clean and under perturbations. These are in-source measurements; no external data set "
            "was measured.")
    return head + "\n\n" + "\n\n".join(parts)
