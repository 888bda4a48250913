"""Section "explain": time and faithfulness of every explanation method on the offline backbone.

Model: offline tf_efficientnet_lite0 (224 px) with a 3-style linear head fitted on pooled features
of 12 paintings per style (so the explained class is a real painting class, not an ImageNet one).
Images: held-out paintings of those styles from paintings_styles10. For each method: median wall
time per image after one warm-up call, and the mean deletion AUC (lower is better) and insertion
AUC (higher is better) of its maps, next to a random block ordering. LIME as artlens runs it is
compared with the plain use of the library (``explain_instance`` defaults) on the same images.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

STYLES = ["Baroque", "Impressionism", "Surrealism"]
TARGETS = {"gradcam": 0.3, "lime": 5.0}


def quick_style_model(data_dir: Path, per_class: int = 12):
    from artlens.features import fit_probe
    from artlens.images import list_images

    return fit_probe({s: list_images(data_dir / "paintings_styles10" / s)[:per_class] for s in STYLES})


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args) -> str:
    from artlens.explain import CAM_METHODS, deletion_score, explain, plain_lime, random_map
    from artlens.images import list_images

    torch.set_num_threads(2)
    data = Path(args.data)
    quick = getattr(args, "quick", False)
    model = quick_style_model(data)
    per_style = 1 if quick else 2
    files = [list_images(data / "paintings_styles10" / s)[30 + i] for i in range(per_style) for s in STYLES]
    slow_files = files[: (1 if quick else 3)]  # Score-CAM and plain LIME: the costly ones
    steps = 10 if quick else 20
    targets = {f: explain(model, f, "gradcam").target for f in files}

    rows = []

    def measure(name, settings, fn, on, warm_up=True):
        if warm_up:
            fn(on[0])
        times, dels, ins = [], [], []
        for f in on:
            e, dt = _timed(lambda: fn(f))
            times.append(dt)
            dels.append(deletion_score(model, f, e, steps=steps))
            ins.append(deletion_score(model, f, e, mode="insertion", steps=steps))
        row = {"method": name, "settings": settings, "time": statistics.median(times),
               "deletion": float(np.mean(dels)), "insertion": float(np.mean(ins)), "n": len(on), "files": on}
        rows.append(row)
        return row

    explain(model, files[0], "lime", num_samples=10)  # imports and first-call costs, once for both LIME rows
    for method in CAM_METHODS:
        on = slow_files if method == "scorecam" else files
        measure(method, "default layer (blocks.6)", lambda f, m=method: explain(model, f, m, target=targets[f]), on,
                warm_up=method != "scorecam")
    fast = measure("lime", "artlens: SLIC ~40 superpixels, 200 samples, batch 16, model-input crop",
                   lambda f: explain(model, f, "lime", target=targets[f]), files)
    plain = measure("lime (plain library use)", "explain_instance defaults: quickshift, 1000 samples, batch 10",
                    lambda f: plain_lime(model, f, target=targets[f]), slow_files, warm_up=False)
    fast_same = measure("lime", "artlens, on the plain run's images", lambda f: explain(model, f, "lime", target=targets[f]),
                        slow_files, warm_up=False)
    rows.remove(fast_same)

    rand_del, rand_ins = [], []
    for f in files:
        from artlens.images import open_image

        w, h = open_image(f).size
        for seed in range(3):
            r = random_map((h, w), seed=seed)
            rand_del.append(deletion_score(model, f, r, target=targets[f], steps=steps))
            rand_ins.append(deletion_score(model, f, r, target=targets[f], mode="insertion", steps=steps))
    rows.append({"method": "random blocks (baseline)", "settings": "7x7 random order, 3 seeds", "time": 0.0,
                 "deletion": float(np.mean(rand_del)), "insertion": float(np.mean(rand_ins)), "n": len(files)})

    lines = ["| method | settings | time / image (s) | deletion AUC (lower better) | insertion AUC (higher better) | images |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['settings']} | {r['time']:.3f} | {r['deletion']:.3f} | {r['insertion']:.3f} | {r['n']} |")
    speedup = plain["time"] / fast_same["time"]
    grad = next(r for r in rows if r["method"] == "gradcam")
    checks = [
        f"Grad-CAM {grad['time']:.3f} s per image (target <= {TARGETS['gradcam']} s): "
        f"{'met' if grad['time'] <= TARGETS['gradcam'] else 'NOT met'}",
        f"LIME {fast['time']:.2f} s per image (target <= {TARGETS['lime']} s): "
        f"{'met' if fast['time'] <= TARGETS['lime'] else 'NOT met'}",
        f"LIME vs plain library use on the same {plain['n']} images: {fast_same['time']:.2f} s vs {plain['time']:.2f} s "
        f"= {speedup:.1f}x faster (target >= 5x: {'met' if speedup >= 5 else 'NOT met'}); deletion AUC "
        f"{fast_same['deletion']:.3f} vs {plain['deletion']:.3f} "
        f"({'no worse' if fast_same['deletion'] <= plain['deletion'] + 1e-9 else 'WORSE'})",
    ]
    notes = ("Offline tf_efficientnet_lite0 at 224 px with a 3-style linear head (Baroque, Impressionism, "
             "Surrealism; 12 paintings each), explained on held-out paintings_styles10 images for the predicted "
             f"class. Deletion/insertion: {steps + 1}-point curves of the class probability as the top-ranked "
             "pixels are set to the mean colour / restored from a blurred copy. Score-CAM and plain LIME run on "
             "the first images only (their cost).")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks) + "\n\n" + notes + "\n"
