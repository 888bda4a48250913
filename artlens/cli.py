"""The ``artlens`` command: parses arguments, calls the library, prints results. Nothing else.

Each subcommand has ``add_<name>_parser(sub)`` for its arguments and ``cmd_<name>(args)`` for its body.
Errors a user can cause are printed as one line (no traceback) with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import space
from .config import save_config
from .data import parse_perturbations
from .errors import ArtlensError
from .explain import METHODS, ExplainError, explain_batch, faithfulness, layer_names, overlay, save_png
from .export import push_to_hub, save_model_folder
from .files import write_json
from .images import ImageError, list_images
from .models import load_model
from .predict import Predictor, evaluate

# every error a user can cause derives from ArtlensError; its message names the problem and the fix
USER_ERRORS = (ArtlensError, FileNotFoundError)


# ---------------------------------------------------------------- predict

def add_predict_parser(sub):
    p = sub.add_parser("predict", help="classify images (files or folders)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--model", default=None, help="style (default), artist, origin, a model folder, a Hub id or a timm name")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--tta", default=None, choices=["none", "flip", "crops"], help="test-time augmentation (default: the model's)")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument("--batch-size", type=int, default=16)


def cmd_predict(args) -> int:
    files = list_images(args.images)
    if not files:
        raise ImageError(f"no images found in {' '.join(args.images)}")
    pred = Predictor(args.model, tta=args.tta, batch_size=args.batch_size)
    status = 0
    for start in range(0, len(files), args.batch_size):
        chunk = files[start:start + args.batch_size]
        try:
            results = pred.predict([str(f) for f in chunk], top_k=args.top_k)
        except ImageError:
            # one bad file must not hide the results of the others: redo this batch one by one
            results = []
            for f in chunk:
                try:
                    results += pred.predict([str(f)], top_k=args.top_k)
                except ImageError as e:
                    results.append({"error": str(e)})
                    status = 1
        for f, r in zip(chunk, results):
            r = {"file": str(f), **{k: v for k, v in r.items() if k != "probs"}}
            if args.json:
                print(json.dumps(r), flush=True)
            elif "error" in r:
                print(f"{f}\tERROR\t{r['error']}", flush=True)
            else:
                extra = f"\tp_ai={r['p_ai']:.3f} (threshold {r['threshold']:.3f})" if "p_ai" in r else ""
                if "band" in r:
                    extra += f"\tverdict={r['verdict']} (undecided in {r['band'][0]:.2g}-{r['band'][1]:.3f})"
                if r.get("generator"):
                    extra += f"\tgenerator={r['generator']}"
                if r.get("known_style") is False:
                    extra += "\tknown_style=false (none of the styles it knows)"
                tops = ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top_k"])
                print(f"{f}\t{r['label']}\t{r['score']:.3f}{extra}\t[{tops}]", flush=True)
    return status


# ---------------------------------------------------------------- evaluate

def add_evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="metrics of one model on one imagefolder (trainers/evaluate.py for many x many)")
    p.add_argument("--model", default=None, help="model reference (default: style)")
    p.add_argument("--data", required=True, help="imagefolder (<label>/<image>) or Hub dataset id")
    p.add_argument("--split", default=None)
    p.add_argument("--max-per-class", type=int, default=None)
    p.add_argument("--tta", default=None, choices=["none", "flip", "crops"])
    p.add_argument("--perturb", default=None, help="one perturbation, e.g. jpeg:50 or scale:0.5")
    p.add_argument("--json", action="store_true")


def cmd_evaluate(args) -> int:
    pert = parse_perturbations([args.perturb])[0] if args.perturb else None
    m = evaluate(Predictor(args.model, tta=args.tta), args.data, max_per_class=args.max_per_class,
                 perturbation=pert, split=args.split)
    if args.json:
        print(json.dumps(m))
    else:
        for k in ("n", "accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro"):
            print(f"{k:>18}: {m[k]:.4f}" if isinstance(m[k], float) else f"{k:>18}: {m[k]}")
    return 0


# ---------------------------------------------------------------- export / push

def add_export_parser(sub):
    p = sub.add_parser("export", help="write a model folder (timm + transformers + pipeline) from any model reference")
    p.add_argument("model", help="model reference (folder, Hub id, timm name, style/artist/origin)")
    p.add_argument("out", help="output folder")
    p.add_argument("--fp16", action="store_true", help="store weights in float16")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID")


def cmd_export(args) -> int:
    import torch

    out = save_model_folder(load_model(args.model), args.out, dtype=torch.float16 if args.fp16 else None)
    print(out)
    if args.push_to_hub:
        print(push_to_hub(out, args.push_to_hub))
    return 0


def add_push_parser(sub):
    p = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="default: HF_TOKEN or the cached login")


def cmd_push(args) -> int:
    print(push_to_hub(args.folder, args.repo_id, private=args.private, token=args.token))
    return 0


# ---------------------------------------------------------------- explain

def add_explain_parser(sub):
    p = sub.add_parser("explain", help="heat maps: what the model looked at (Grad-CAM family, LIME)",
                       description="Writes one overlay PNG per image (and layer) and explanations.json with the "
                                   "numbers: prediction, target, score, where the heat is, and optionally the "
                                   "deletion/insertion faithfulness scores.")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--model", default=None, help="style (default), artist, origin, a model folder, a Hub id or a timm name")
    p.add_argument("--method", default="gradcam", help=f"{', '.join(METHODS[:-1])} or {METHODS[-1]} "
                                                        "(comma-separated for several)")
    p.add_argument("--target", default=None, help="label to explain (default: the predicted one)")
    p.add_argument("--layer", default=None, help="CAM target layer, e.g. blocks.5 (default: found automatically); "
                                                 "comma-separated for several, 'all' for every feature stage")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map over the painting")
    p.add_argument("--colormap", default="jet", help="matplotlib colour map")
    p.add_argument("--batch-size", type=int, default=8, help="images per CAM batch")
    p.add_argument("--num-samples", type=int, default=40, help="LIME: perturbed copies (rows of a Hadamard design)")
    p.add_argument("--refine", type=int, default=11,
                   help="LIME: superpixels measured again at full resolution and ranked by that (0: none)")
    p.add_argument("--segmentation", default="slic", choices=["slic", "quickshift"], help="LIME: superpixels")
    p.add_argument("--n-segments", type=int, default=40, help="LIME (slic): about this many superpixels")
    p.add_argument("--seed", type=int, default=0, help="LIME: sampling seed (same seed, same map)")
    p.add_argument("--faithfulness", action="store_true",
                   help="also compute deletion/insertion AUC per image (21 extra forward passes each)")


def cmd_explain(args) -> int:
    from pathlib import Path

    import torch

    try:
        methods = [m.strip().lower() for m in args.method.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ExplainError(f"unknown method {bad}; choose from {', '.join(METHODS)}")
        files = list_images(args.images)
        if not files:
            raise ImageError(f"no images found in {' '.join(args.images)}")
        model = load_model(args.model)
        layers = [None]
        if args.layer:
            layers = layer_names(model) if args.layer == "all" else [s.strip() for s in args.layer.split(",")]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        lime_kw = {"num_samples": args.num_samples, "refine": args.refine, "segmentation": args.segmentation,
                   "n_segments": args.n_segments, "seed": args.seed}
        records, status = [], 0
        torch.set_grad_enabled(True)
        for method in methods:
            for layer in ([None] if method == "lime" else layers):
                for start in range(0, len(files), args.batch_size):
                    chunk = files[start:start + args.batch_size]
                    kw = lime_kw if method == "lime" else {"layer": layer, "batch_size": args.batch_size}
                    try:
                        exps = explain_batch(model, [str(f) for f in chunk], method, target=args.target, **kw)
                    except ImageError:
                        exps = []  # one bad file must not hide the others: redo this chunk one by one
                        for f in chunk:
                            try:
                                exps += explain_batch(model, [str(f)], method, target=args.target, **kw)
                            except ImageError as e:
                                exps.append(e)
                    for f, e in zip(chunk, exps):
                        if isinstance(e, ImageError):
                            records.append({"file": str(f), "method": method, "error": str(e)})
                            print(f"{f}\tERROR\t{e}", file=sys.stderr)
                            status = 1
                            continue
                        tag = method.replace("+", "p") + (f"_{layer}" if layer else "")
                        png = save_png(overlay(str(f), e, alpha=args.alpha, colormap=args.colormap),
                                       out / f"{Path(f).stem}_{tag}.png")
                        rec = {"file": str(f), "overlay": png.name, **e.to_dict()}
                        if args.faithfulness:
                            rec.update({k: round(v, 6) for k, v in faithfulness(model, str(f), e).items()})
                        records.append(rec)
                        print(f"{f}\t{method}{' ' + layer if layer else ''}\t{e.label}\t{e.score:.3f}\t-> {png}", flush=True)
        write_json(out / "explanations.json", records, indent=1)
        save_config(args, out / "explain_config.yaml")
        return status
    except ExplainError as e:
        print(f"artlens explain: error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- space

def add_space_parser(sub):
    space.add_arguments(sub.add_parser("space", help="run the Gradio Space locally (artlens.space; = python spaces/artlens/app.py)"))


def cmd_space(args) -> int:
    space.run(style=args.style, artist=args.artist, origin=args.origin, examples=args.examples,
              host=args.host, port=args.port, share=args.share)
    return 0


# ---------------------------------------------------------------- main

COMMANDS = ("predict", "evaluate", "export", "push", "explain", "space")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artlens", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        globals()[f"add_{name}_parser"](sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return globals()[f"cmd_{args.command}"](args) or 0
    except USER_ERRORS as e:
        print(f"artlens {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
