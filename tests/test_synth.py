"""Synthetic generation, offline: a tiny randomly initialised Stable Diffusion pipeline is built from
config here, saved with save_pretrained and loaded by scripts/generate_synthetic.py like any model."""
import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from artlens.synth import SynthError, build_jobs, load_recipe, stable_seed  # noqa: E402
from tests.conftest import load_script  # noqa: E402

RECIPES = ROOT / "scripts" / "recipes"


def _bytes_to_unicode():
    # GPT-2 / CLIP byte-level alphabet: every byte maps to a printable character
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    chars = _bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=32)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1, hidden_size=16,
        intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, vocab_size=len(vocab),
        max_position_embeddings=32, projection_dim=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_shipped_recipes_and_motifs():
    motifs = yaml.safe_load((RECIPES / "motifs.yaml").read_text())["motifs"]
    assert len(motifs) >= 100 and len(set(motifs)) == len(motifs)
    for path in sorted(RECIPES.glob("*.yaml")):
        if path.name == "motifs.yaml":
            continue
        r = load_recipe(path)
        jobs = build_jobs(r, seed=0)
        assert len(jobs) == len(r["motifs"]) * len(r["templates"]) * r["images_per_prompt"] * len(r["subjects"])
        assert len({j["file_name"] for j in jobs}) == len(jobs)
    r = load_recipe(RECIPES / "monet_renoir.yaml")
    jobs = build_jobs(r, seed=0, limit=4)
    # motif by motif: any prefix is balanced over the labels
    assert [j["label"] for j in jobs] == ["Claude_Monet", "Pierre-Auguste_Renoir"] * 2
    assert jobs[0]["prompt"] == f"a painting of {r['motifs'][0]} in the style of Claude Monet"
    assert jobs[0]["file_name"].startswith("Claude_Monet/") and jobs[0]["file_name"].endswith(".png")


def test_seeds_are_stable_and_independent_of_recipe_order(tmp_path):
    r = load_recipe(RECIPES / "monet_renoir.yaml")
    a = {j["file_name"]: j["seed"] for j in build_jobs(r, seed=3)}
    r["motifs"] = list(reversed(r["motifs"]))[:10] + ["a new motif"]
    b = {j["file_name"]: j["seed"] for j in build_jobs(r, seed=3)}
    same_prompt = [j for j in build_jobs(r, seed=3) if j["motif"] == r["motifs"][0]]
    assert all(j["seed"] in a.values() for j in same_prompt)
    assert stable_seed(3, "x", 0) == stable_seed(3, "x", 0) != stable_seed(4, "x", 0)
    assert len(set(a.values())) == len(a)  # one seed per image
    assert b  # file names follow motif positions; seeds follow prompts


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("motifs: [a cat]\nstyles: [Baroque]\ntemplates: ['{motif} by {artist}']\n")
    with pytest.raises(SynthError, match="uses {artist} but the recipe lists only styles"):
        load_recipe(bad)
    bad.write_text("motifs: [a cat]\nartists: [Monet]\ncolour: blue\n")
    with pytest.raises(SynthError, match="unknown keys"):
        load_recipe(bad)
    with pytest.raises(SynthError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_generate_resume_and_regenerate(tiny_pipeline, tmp_path):
    from PIL import Image

    gen = load_script("generate_synthetic")
    out = tmp_path / "synthetic"
    argv = ["--recipe", str(RECIPES / "monet_renoir.yaml"), "--model", str(tiny_pipeline), "--output-dir", str(out),
            "--limit", "6", "--steps", "2", "--width", "32", "--height", "32", "--batch-size", "2", "--seed", "7",
            "--license", "openrail++"]
    res = gen.main(gen.parse_args(argv))
    assert res["generated"] == 6 and res["missing"] == 0
    files = sorted(out.rglob("*.png"))
    assert len(files) == 6
    assert {f.parent.name for f in files} == {"Claude_Monet", "Pierre-Auguste_Renoir"}
    assert Image.open(files[0]).size == (32, 32)
    assert not list(out.rglob("*.tmp"))

    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    row = rows[0]
    assert row["model_id"] == str(tiny_pipeline) and row["scheduler"] == "DDIMScheduler"
    assert row["steps"] == "2" and row["width"] == "32" and row["negative_prompt"].startswith("photograph")
    assert row["prompt"].endswith("in the style of Claude Monet") and row["label"] == "Claude_Monet"
    assert len({r["seed"] for r in rows}) == 6

    card = (out / "README.md").read_text()
    assert "task_categories:" in card and "image-classification" in card and "- synthetic" in card
    assert "license: openrail++" in card and "DDIMScheduler" in card and "monet-renoir-synthetic" in card
    assert yaml.safe_load((out / "generation_config.yaml").read_text())["limit"] == 6

    # the folder loads as an imagefolder with labels from folders and the metadata columns
    from artlens.data import load_data
    ds = load_data(str(out), group_column="artist")
    assert sorted(set(ds["label"])) == ["Claude_Monet", "Pierre-Auguste_Renoir"]
    assert set(ds["group"]) == {"Claude Monet", "Pierre-Auguste Renoir"}

    before = {f: f.read_bytes() for f in files}
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    res = gen.main(gen.parse_args(argv))
    assert res["generated"] == 0 and res["skipped"] == 6
    assert all(f.stat().st_mtime_ns == mtimes[f] for f in files)

    victim = files[3]
    victim.unlink()
    res = gen.main(gen.parse_args(argv))
    assert res["generated"] == 1
    assert victim.read_bytes() == before[victim]  # regenerated identically from its seed
    assert all(f.read_bytes() == before[f] for f in files)
    assert len(list(csv.DictReader(open(out / "metadata.csv")))) == 6

    # a bigger --limit extends the set without touching what exists
    res = gen.main(gen.parse_args([*argv[:-2], "--limit", "8"]))
    assert res["generated"] == 2 and all(f.read_bytes() == before[f] for f in files)

    # resuming with other settings would mix images: refused with a clear message
    with pytest.raises(SynthError, match="other settings"):
        gen.main(gen.parse_args(argv + ["--steps", "3"]))


def test_seed_changes_image(tiny_pipeline, tmp_path):
    from artlens.synth import generate, load_pipeline

    pipe = load_pipeline(str(tiny_pipeline), scheduler="EulerDiscreteScheduler")
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    jobs = [{"file_name": f"a/{i}.png", "prompt": "a cat", "negative_prompt": "", "seed": s}
            for i, s in enumerate((1, 1, 2))]
    assert generate(pipe, jobs, tmp_path, steps=1, width=32, height=32, batch_size=1) == 3
    a, b, c = ((tmp_path / "a" / f"{i}.png").read_bytes() for i in range(3))
    assert a == b and a != c
    with pytest.raises(SynthError, match="unknown scheduler"):
        load_pipeline(str(tiny_pipeline), scheduler="NoSuchScheduler")
    with pytest.raises(SynthError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_two_processes_split_the_jobs(tiny_pipeline, tmp_path):
    """The accelerate path: two processes (torchrun, CPU) share the batches; the main one writes the metadata."""
    import os
    import subprocess

    out = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "scripts" / "generate_synthetic.py"), "--recipe", str(RECIPES / "styles_only.yaml"),
           "--model", str(tiny_pipeline), "--output-dir", str(out), "--limit", "8", "--steps", "1",
           "--width", "32", "--height", "32", "--batch-size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.rglob("*.png"))) == 8
    rows = list(csv.DictReader(open(out / "metadata.csv")))
    assert len(rows) == 8 and len({r["file_name"] for r in rows}) == 8
    # each process printed its progress bar over its own half of the 4 batches
    assert "2/2" in proc.stderr and "4/4" not in proc.stderr
    assert proc.stdout.count("8 images in") == 1  # only the main process reports and writes the card
