"""The LIME that artlens ran before the fast one, as a fixed reference for the ``explain`` section.

``lime_image`` on the model-input crop, about 40 SLIC superpixels, 200 random samples, every copy scored
in fp32 at 224 px, an off superpixel in its own mean colour (the code of ``artlens/explain/lime.py`` before
af62337). It costs about 90 s an image on 2 CPU cores, so its deletion AUCs are measured once, on the
paintings of :func:`paintings`, and kept in ``previous_lime.json`` beside this file; the section scores
today's LIME on the same paintings and compares painting by painting. Re-measure with

    python scripts/benchmarks/previous_lime.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).with_name("previous_lime.json")
STEPS = 10  # deletion curve: 11 points


def paintings(data: Path) -> list[str]:
    """One painting of each of the first 8 styles of paintings_styles10 at file index 30 and 31 (the two
    sets LIME was tuned on, docs/experiments.md section 14), then one of each of the 10 styles at index
    32 and 33 (never used for tuning): 36 paths relative to ``data``."""
    from artlens.images import list_images

    root = data / "paintings_styles10"
    styles = sorted(p.name for p in root.iterdir() if p.is_dir())
    sets = [(styles[:8], 30), (styles[:8], 31), (styles, 32), (styles, 33)]
    return [str(list_images(root / s)[i].relative_to(data)) for names, i in sets for s in names]


def previous_lime(model, file: str, seed: int = 0) -> tuple[int, np.ndarray]:
    """(predicted class, rank map at the image's size) of the previous LIME for ``file``."""
    from lime import lime_image
    from skimage.segmentation import slic

    from artlens.data import data_config
    from artlens.explain.base import class_probs
    from artlens.explain.geometry import get_prep, to_image
    from artlens.images import open_image

    cfg = data_config(model)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def fn(batch):
        x = torch.from_numpy(np.array(batch, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255)
        with torch.inference_mode():
            return class_probs(model((x - mean) / std)).numpy()

    prep = get_prep(model)
    img = open_image(file)
    arr = np.asarray(prep.crop(img), dtype=np.uint8)
    target = int(np.argmax(fn(arr[None])[0]))
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        arr, fn, labels=(target,), top_labels=None, hide_color=None, num_samples=200, batch_size=16,
        segmentation_fn=lambda im: slic(im, n_segments=40, compactness=10.0, start_label=0), random_seed=seed)
    seg = np.asarray(exp.segments)
    w = np.zeros(seg.max() + 1, np.float32)
    for s, v in exp.local_exp[target]:
        w[s] = v
    signed = w[seg]
    rank = (signed - signed.min()) / (np.ptp(signed) or 1.0)
    return target, to_image(rank.astype(np.float32), prep.box(img.size), img.size)


def main() -> None:
    from artlens.explain import deletion_score
    from artlens.files import write_text
    from artlens.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder that holds paintings_styles10")
    p.add_argument("--model", default="style")
    args = p.parse_args()
    data = Path(args.data)
    model = load_model(args.model).eval()
    out = {"model": args.model, "steps": STEPS, "method": "lime_image on the crop, SLIC 40, 200 random samples, "
           "fp32 at 224 px, own-mean-colour fill (artlens before af62337)", "paintings": {}}
    for rel in paintings(data):
        t0 = time.time()
        target, rank = previous_lime(model, str(data / rel))
        auc = deletion_score(model, str(data / rel), rank, target=target, steps=STEPS)
        out["paintings"][rel] = {"target": target, "deletion": round(float(auc), 5), "seconds": round(time.time() - t0, 1)}
        print(rel, target, round(auc, 4), flush=True)
    write_text(OUT, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
