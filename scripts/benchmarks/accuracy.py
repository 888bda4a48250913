"""Accuracy of the embedded default models on held-out images, clean and perturbed.

- style: the default recipe (trainers/configs/default_style.yaml) retrained twice: without 10 painters
  (artist-disjoint split) and tested on their paintings, the estimate of style recognition on painters
  it does not know; and on a stratified random 80%, tested on new paintings by the painters it knows.
  The shipped model saw every painting.
- artist, origin: the shipped folders on their own held-out test split (split.json in the folder):
  artist = stratified random 15%, origin = artist-disjoint 20% (AI images as the original 512 px files).

Perturbations (artlens.data.perturb, before the model's preprocessing): JPEG 50, downscale 0.25,
upscale to 1024 px + JPEG 90, 4:3 aspect stretch + JPEG 85, and for origin the
resolution shortcut both ways (human upscaled to 1024 px, AI downscaled to 256 px, JPEG 85).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import build_defaults as B  # noqa: E402


def run(args) -> str:
    from artlens.models import DEFAULTS_DIR

    data = Path(args.data).resolve()
    quick = bool(getattr(args, "quick", False))
    caps = {"style": 2 if quick else 5, "artist": 1, "origin": 5 if quick else 25}
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        bargs = B.parse_args(["--data", str(data), "--work-dir", tmp])
        d = B.data_for("style", data, Path(tmp))
        for split, title in (("group", "artist-disjoint"), ("random", "stratified random 20%: new paintings by known painters")):
            t0 = time.time()
            hdir = Path(tmp) / f"holdout_style_{split}"
            extra = ["--split", split, "--test-size", "0.2", "--val-size", "0"]
            if quick:
                extra += ["--epochs", "2", "--max-per-class", "20"]
            B.train_one("style", bargs, extra, hdir, d)
            rows = B.test_images(hdir, data, "style", caps["style"])
            res = B.evaluate_folder(hdir, rows, "style")
            painters = sorted({Path(f).stem.rsplit("_", 1)[0] for f, _ in rows})
            parts.append(f"### style (default recipe, {title}: {len(painters)} painters in the test images)\n\n"
                         + B.results_table("style", res) + f"\n\n_{time.time() - t0:.0f} s (training included)._")
        for name in ("artist", "origin"):
            t0 = time.time()
            folder = DEFAULTS_DIR / name
            rows = B.test_images(folder, data, name, caps[name])
            res = B.evaluate_folder(folder, rows, name)
            split = "stratified random 15%" if name == "artist" else "artist-disjoint 20%"
            parts.append(f"### {name} (shipped folder, held-out {split})\n\n" + B.results_table(name, res)
                         + f"\n\n_{time.time() - t0:.0f} s for {len(rows)} images x {len(res)} conditions._")
    head = ("Held-out accuracy of the embedded defaults (`artlens/defaults`), clean and under perturbations "
            f"(at most {caps['style']} / {caps['artist']} / {caps['origin']} test images per label for "
            "style / artist / origin). These are in-source measurements; no external data set was measured.")
    return head + "\n\n" + "\n\n".join(parts)
