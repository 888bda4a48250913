"""The Space (artlens.space, which spaces/artlens/app.py runs): handlers called directly, and the app
started as a user starts it (``python spaces/artlens/app.py``) and used through gradio_client on real
paintings."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from artlens import space as app
from scripts.benchmarks.space_helpers import APP, ROOT, label_sets

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def predictors(space_models):
    return app.load_predictors(space_models["style"], space_models["artist"], space_models["origin"])


@pytest.fixture(scope="module")
def paintings(data_dir) -> list[Path]:
    return [sorted((data_dir / "paintings_styles10" / s).glob("*.jpg"))[0] for s in ("Baroque", "Surrealism")]


def _check_probs(probs: dict, labels: list[str]):
    assert list(probs) == labels  # every class, in the model's order
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
    assert all(0.0 <= v <= 1.0 for v in probs.values())


def test_classify_and_detect_handlers_on_real_paintings(predictors, paintings, data_dir):
    sets = label_sets(data_dir)
    for p in paintings:
        style, artist, both = app.classify(predictors, str(p))
        _check_probs(style, sets["style"])
        _check_probs(artist, sets["artist"])
        assert both == {"style": style, "artist": artist}
        probs, text = app.detect(predictors, str(p))
        _check_probs(probs, ["human", "ai"])
        verdict = "AI-generated" if probs["ai"] >= 0.5 else "human-made"
        assert f"Verdict: {verdict}" in text and f"{probs['ai']:.1%}" in text and "threshold 50%" in text
    assert app.classify(predictors, None) == (None, None, None)  # a cleared upload clears the answers


def test_detect_verdict_uses_the_stored_threshold_not_the_larger_probability(predictors, paintings):
    origin = predictors["origin"]
    saved = origin.threshold
    try:
        for threshold, verdict in ((0.0, "AI-generated"), (1.0 + 1e-6, "human-made")):
            origin.threshold = threshold
            probs, text = app.detect(predictors, str(paintings[0]))
            assert f"Verdict: {verdict}" in text and 0.0 < probs["ai"] < 1.0
    finally:
        origin.threshold = saved


def test_verdict_text_follows_the_threshold():
    ai = app.verdict_text({"p_ai": 0.93, "threshold": 0.4, "verdict": "ai"})
    assert "Verdict: AI-generated" in ai and "93.0%" in ai and "Undecided" not in ai
    close = app.verdict_text({"p_ai": 0.35, "threshold": 0.4, "verdict": "human"})
    assert "Verdict: human-made" in close and "Undecided" in close


def test_explain_handler_gradcam_overlay_and_target(predictors, paintings):
    models = app.explain_models(predictors)
    assert all(models[t] is not predictors[t].model for t in models)  # hooks never touch the serving models
    img = Image.open(paintings[0])
    ov, info = app.explain_image(models, str(paintings[0]), "artist", "gradcam", "Rembrandt")
    assert isinstance(ov, Image.Image) and ov.size == img.size
    assert "Rembrandt" in info and "Grad-CAM" in info
    assert np.abs(np.asarray(ov, float) - np.asarray(img.convert("RGB"), float)).mean() > 1  # heat drawn on it
    with pytest.raises(gr.Error, match="not one of the model's labels"):
        app.explain_image(models, str(paintings[0]), "style", "gradcam", "Rembrandt")
    ov2, info2 = app.explain_image(models, str(paintings[0]), "style", "eigencam", app.TOP_CLASS)
    assert ov2.size == img.size and "not class-specific" in info2
    with pytest.raises(gr.Error, match="Upload a painting"):
        app.explain_image(models, None, "style", "gradcam", None)


def test_about_renders_each_model_card(predictors):
    text = app.about_text(predictors)
    for task in ("style", "artist", "origin"):
        assert f"## The {task} model" in text and f"test-{task}" in text
    assert "\n---\nlibrary_name" not in text and "pipeline_tag:" not in text  # YAML front matter stripped
    assert "Stable Diffusion 1.5" in text  # the data behind the models


def test_example_files_from_flag_or_env(tmp_path, monkeypatch, paintings):
    monkeypatch.delenv("ARTLENS_EXAMPLES", raising=False)
    assert app.example_files(None) == []
    for p in paintings:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "notes.txt").write_text("not a painting")
    assert [Path(f).name for f in app.example_files(tmp_path)] == sorted(p.name for p in paintings)
    monkeypatch.setenv("ARTLENS_EXAMPLES", str(tmp_path))
    assert len(app.example_files(None)) == 2
    with pytest.raises(app.ImageError, match="does not exist"):
        app.example_files(tmp_path / "missing")


def test_build_app_wires_named_endpoints_and_queues(predictors):
    demo = app.build_app(predictors=predictors)
    cfg = demo.get_config_file()
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name in ("classify", "detect", "explain")}
    assert set(fns) == {"classify", "detect", "explain"}
    # explanations queue separately, one at a time, so a slow LIME never holds up classification
    assert fns["explain"].concurrency_id != fns["classify"].concurrency_id == fns["detect"].concurrency_id
    assert fns["explain"].concurrency_limit == 1 and fns["classify"].concurrency_limit == 2
    tabs = [c["props"].get("label") for c in cfg["components"] if c["type"] == "tabitem"]
    assert tabs == ["Style & artist", "Human or AI?", "Explain", "About"]


def test_space_cli_calls_the_package_app(monkeypatch):
    """``artlens space`` parses the flags of artlens.space.add_arguments and calls artlens.space.run (no file
    path: it works from a wheel); ``import artlens.space`` does not import gradio."""
    from artlens.cli import build_parser, main

    argv = ["space", "--style", "a", "--origin", "b", "--examples", "ex", "--port", "7000", "--share"]
    args = build_parser().parse_args(argv)
    assert (args.style, args.artist, args.origin, args.examples, args.port, args.share) == ("a", None, "b", "ex", 7000, True)
    calls = []
    monkeypatch.setattr(app, "run", lambda **kw: calls.append(kw))
    assert main(argv) == 0
    assert calls == [dict(style="a", artist=None, origin="b", examples="ex", host=None, port=7000, share=True)]
    assert Path(sys.modules["artlens"].__file__).resolve().parents[1] == ROOT  # the checkout's artlens
    code = "import sys, artlens.space; assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def _load_app_file():
    """spaces/artlens/app.py imported as a module (what ``gradio app.py`` does): it builds ``demo``."""
    spec = importlib.util.spec_from_file_location("artlens_space_app_test", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_app_on_the_embedded_defaults(monkeypatch):
    """The thin spaces/artlens/app.py builds artlens.space's app on the embedded default models."""
    for t in app.MODEL_ENV.values():
        monkeypatch.delenv(t, raising=False)
    monkeypatch.delenv(app.EXAMPLES_ENV, raising=False)
    if all((ROOT / "artlens" / "defaults" / t / "config.json").exists() for t in ("style", "artist", "origin")):
        mod = _load_app_file()
        assert mod.build_app is app.build_app and isinstance(mod.demo, gr.Blocks)
        preds = app.load_predictors()
        assert len(preds["style"].labels) >= 2 and preds["origin"].threshold is not None
        assert "## The origin model" in app.about_text(preds)
        tabs = [c["props"].get("label") for c in mod.demo.get_config_file()["components"] if c["type"] == "tabitem"]
        assert tabs == ["Style & artist", "Human or AI?", "Explain", "About"]
        assert {"classify", "detect", "explain"} <= {f.api_name for f in mod.demo.fns.values()}
    else:  # not built yet: the Space must say how to fix that, not crash obscurely
        from artlens.models import ModelError

        with pytest.raises(ModelError, match="make defaults"):
            app.load_predictors()


# ---------------------------------------------------------------- through gradio_client

@pytest.mark.slow
def test_client_endpoints_on_real_paintings(space_url, paintings, data_dir):
    from gradio_client import Client, handle_file

    sets = label_sets(data_dir)
    client = Client(space_url, verbose=False)
    assert {"/classify", "/detect", "/explain"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    for p in paintings:
        style, artist, probs = client.predict(handle_file(str(p)), api_name="/classify")
        assert len(style["confidences"]) == 5 and len(artist["confidences"]) == 5
        assert {c["label"] for c in style["confidences"]} <= set(sets["style"])
        assert {c["label"] for c in artist["confidences"]} <= set(sets["artist"])
        assert style["label"] == max(probs["style"], key=probs["style"].get)
        _check_probs(probs["style"], sets["style"])
        _check_probs(probs["artist"], sets["artist"])
        origin, verdict = client.predict(handle_file(str(p)), api_name="/detect")
        conf = {c["label"]: c["confidence"] for c in origin["confidences"]}
        assert set(conf) == {"human", "ai"} and math.isclose(sum(conf.values()), 1.0, abs_tol=1e-4)
        assert ("AI-generated" if conf["ai"] >= 0.5 else "human-made") in verdict
    overlay, info = client.predict(handle_file(str(paintings[0])), "artist", "gradcam++", "Claude_Monet",
                                   api_name="/explain")
    assert Image.open(overlay).size == Image.open(paintings[0]).size and "Claude_Monet" in info


@pytest.mark.slow
def test_client_lime_does_not_block_classification(space_url, paintings):
    from gradio_client import Client, handle_file

    slow, fast = Client(space_url, verbose=False), Client(space_url, verbose=False)
    job = slow.submit(handle_file(str(paintings[1])), "style", "lime", app.TOP_CLASS, api_name="/explain")
    t0 = time.perf_counter()
    while job.status().code.name not in ("PROCESSING", "PROGRESS", "FINISHED") and time.perf_counter() - t0 < 60:
        time.sleep(0.1)
    assert not job.done(), "LIME finished before the classification was sent: the test cannot check the overlap"
    answers = []
    worker = threading.Thread(target=lambda: answers.append(fast.predict(handle_file(str(paintings[0])),
                                                                         api_name="/classify")))
    worker.start()
    worker.join(120)
    assert answers and answers[0][0]["label"], "classification got no answer while LIME was running"
    assert not job.done(), "LIME finished before classification: the test did not overlap them"
    progress = []
    while not job.done():
        st = job.status()
        progress += [(u.progress, u.desc) for u in (st.progress_data or []) if u.progress is not None]
        time.sleep(0.2)
    overlay, info = job.result(timeout=300)
    assert Image.open(overlay).size == Image.open(paintings[1]).size and "LIME" in info
    # gr.Progress reached the client: growing fractions with the LIME description
    fractions = [f for f, _ in progress]
    assert fractions and fractions == sorted(fractions) and all("LIME" in (d or "") for _, d in progress)


def test_detect_with_the_shipped_detector_says_three_verdicts_and_refuses_flat_images(data_dir, tmp_path):
    """The embedded origin model through the /detect handler: the verdict in words with the band and the
    generator, and an untestable upload (one flat colour) refused with the reason."""
    from artlens.predict import Predictor

    preds = {"origin": Predictor("origin", task="origin")}
    ai = sorted((data_dir / "ai_flux1dev").glob("*/*.jpg"))[3]
    probs, text = app.detect(preds, str(ai))
    assert set(probs) == {"human", "ai"} and "### Verdict: AI-generated" in text and "Generator:" in text
    painting = sorted((data_dir / "wikiart_styles11" / "Rococo").glob("*.jpg"))[0]
    _, text = app.detect(preds, str(painting))
    assert "### Verdict: human-made" in text or "### Verdict: undecided" in text
    flat = tmp_path / "flat.png"
    Image.new("RGB", (400, 300), (90, 90, 200)).save(flat)
    with pytest.raises(gr.Error, match="flat colour"):
        app.detect(preds, str(flat))
    band = {"p_ai": 0.3, "threshold": 0.2, "band": [0.1, 0.6], "verdict": "undecided", "generator": "unknown",
            "generator_scores": {"dalle2": 0.6, "flux1_dev": 0.4}}
    text = app.verdict_text(band)
    assert "Verdict: undecided" in text and "10%" in text and "60%" in text and "unknown" in text and "DALL-E 2" in text
