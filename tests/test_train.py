"""artlens.training (the trainer's flags and configs, the Accelerate loop on the real paintings, resume
after SIGKILL, the optimizer/scheduler factories, data loading and splitting) and its entry point
trainers/train.py (--help, exit codes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from artlens import training
from artlens.config import ConfigError, save_config, valid_keys
from artlens.data import DataError
from artlens.metrics import calibrated_threshold, choose_threshold

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


# the default_<name>.yaml files are the embedded models' recipes (build_defaults.read_recipe,
# artlens.detect.read_recipe in tests/test_detect.py), not train.py's
DEFAULT_RECIPES = ("default_style.yaml", "default_artist.yaml", "default_origin.yaml")
CONFIGS = sorted(p for p in (ROOT / "trainers" / "configs").glob("*.yaml") if p.name not in DEFAULT_RECIPES)


@pytest.mark.parametrize("name", ["style", "artist"])
def test_default_recipes_have_exactly_their_keys(name, tmp_path):
    from artlens.config import ConfigError
    from scripts import build_defaults

    keys = {"style": build_defaults.STYLE_RECIPE_KEYS, "artist": build_defaults.ARTIST_RECIPE_KEYS}[name]
    path = ROOT / "trainers" / "configs" / f"default_{name}.yaml"
    assert set(build_defaults.read_recipe(path, keys)) == set(keys)
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text() + "\nnot_a_key: 1\n")
    with pytest.raises(ConfigError, match="not_a_key"):
        build_defaults.read_recipe(bad, keys)


def test_train_views_name_each_copy_and_start_with_the_image():
    from artlens.config import ConfigError
    from scripts import build_defaults

    assert build_defaults.train_views({"train_views": [0, 1, {"retake": "tiny", "view": 1}]}) == [
        ("source", 0), ("source", 1), ("tiny", 1)]
    for bad in ([1], [0, {"retake": "huge", "view": 1}], [0, {"retake": "small", "view": 0}], [0, "1"]):
        with pytest.raises(ConfigError, match="train_views"):
            build_defaults.train_views({"train_views": bad})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(argv):
    return training.train(training.parse_args([str(a) for a in argv]))


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_parses_with_valid_keys(path):
    cfg = yaml.safe_load(path.read_text())
    keys = set(valid_keys(training.build_parser()))
    assert isinstance(cfg, dict) and cfg
    assert set(k.replace("-", "_") for k in cfg) <= keys, set(cfg) - keys
    args = training.parse_args(["--config", str(path), "--output-dir", "/tmp/unused"])
    ref = str(args.model)
    assert timm.is_model(ref) or ref in ("style", "artist", "origin") or "/" in ref, ref
    if args.label_map:
        labels = training.label_map_path(args.label_map)
        assert labels.exists()
    if args.freeze.startswith("prefixes:") and timm.is_model(ref):
        names = [n for n, _ in timm.create_model(ref, pretrained=False, num_classes=2).named_parameters()]
        for px in args.freeze.split(":", 1)[1].split(","):
            assert any(n.startswith(px) for n in names), px


def test_recipes_cover_the_published_setups():
    by_name = {p.stem: yaml.safe_load(p.read_text()) for p in CONFIGS}
    ab = by_name["ai_artbench_resnet18"]
    assert (ab["model"], ab["freeze"], ab["optimizer"], ab["lr"], ab["patience"], ab["aug"], ab["img_size"]) == (
        "resnet18", "prefixes:conv1,bn1,layer1,layer2", "sgd", 0.001, 3, "flip_rotate", 224)
    an = by_name["artnet_densenet121"]
    assert (an["model"], an["head"], an["optimizer"], an["lr"], an["schedule"], an["step_epochs"], an["step_gamma"],
            an["batch_size"], an["pad_square"], an["five_crop"], an["label_map"]) == (
        "densenet121", "artnet", "adam", 0.0001, "step", 2, 0.5, 32, True, True, "artnet5")
    assert by_name["best_artworks_resnet50"]["class_weights"] is True
    for k in ("painting91_styles_effnetb0", "painting91_artists_effnetb0"):
        assert (by_name[k]["label_smoothing"], by_name[k]["freeze"], by_name[k]["model"]) == (0.1, "top:0.3", "efficientnet_b0")
    assert {"monet_renoir_effnetb0_real", "monet_renoir_effnetb0_synthetic", "monet_renoir_effnetb0_real_synthetic"} <= set(by_name)
    assert by_name["styles10_offline"]["split"] == "group"
    assert by_name["origin_offline"]["data_labels"] == ["human", "ai"]


def test_unknown_config_key_names_the_key_and_the_valid_ones(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: x\nepochz: 3\n")
    with pytest.raises(ConfigError) as e:
        training.parse_args(["--config", str(cfg), "--output-dir", str(tmp_path / "o")])
    msg = str(e.value)
    assert "epochz" in msg and "epochs" in msg and "max_train_samples" in msg


def test_config_values_are_typed_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: [a, b]\ndata_labels: [human, ai]\nlr: 1e-4\nepochs: 7\ncache_features: 'true'\n"
                   "freeze: linear_probe\noutput_dir: somewhere\n")
    a = training.parse_args(["--config", str(cfg), "--epochs", "2", "--max-train-samples", "5"])
    assert a.lr == pytest.approx(1e-4) and isinstance(a.lr, float)
    assert (a.epochs, a.max_train_samples, a.cache_features, a.output_dir) == (2, 5, True, "somewhere")
    assert a.data == ["a", "b"] and a.data_labels == ["human", "ai"]
    b = training.parse_args(["--data", "x,y", "--data-labels", "human,ai", "--output-dir", "o"])
    assert b.data == ["x", "y"] and b.data_labels == ["human", "ai"]


@pytest.mark.parametrize("argv, words", [
    (["--data", "x"], ["--output-dir"]),
    (["--output-dir", "o"], ["--data"]),
    (["--data", "x", "--output-dir", "o", "--cache-features", "true"], ["linear_probe"]),
    (["--data", "a,b", "--data-labels", "one", "--output-dir", "o"], ["one label per folder"]),
    (["--data", "x", "--output-dir", "o", "--train-blocks", "1"], ["--cache-features", "prefixes"]),
    (["--data", "x", "--output-dir", "o", "--cache-features", "true", "--freeze", "linear_probe",
      "--train-blocks", "1", "--tta", "crops"], ["--view-rows true"]),
])
def test_config_errors_are_clear(argv, words):
    with pytest.raises(ConfigError) as e:
        training.parse_args(argv)
    for w in words:
        assert w in str(e.value)


def test_bad_choice_in_yaml_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optimizer: lbfgs\n")
    with pytest.raises(ConfigError, match="optimizer"):
        training.parse_args(["--config", str(cfg), "--data", "x", "--output-dir", "o"])


def test_entry_point_help_and_exit_code(tmp_path):
    """trainers/train.py: the package's flags under --help; a config error is exit code 2 with one error line."""
    script = str(ROOT / "trainers" / "train.py")
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: train.py") and "Fine-tune a timm image classifier" in r.stdout
    assert all(f"--{k.replace('_', '-')}" in r.stdout for k in valid_keys(training.build_parser()))
    r = subprocess.run([sys.executable, script, "--data", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: no output folder"), r.stderr


def test_unknown_label_map_name_lists_the_shipped_ones():
    from artlens.data import DataError

    with pytest.raises(DataError, match="artnet5"):
        training.label_map_path("no_such_map")
    assert training.label_map_path("artnet5").name == "artnet5.yaml"


# ---------------------------------------------------------------- pieces

def test_choose_threshold_maximises_balanced_accuracy():
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
    pos = np.array([False, False, False, True, True, True, True])
    t = choose_threshold(p, pos)
    assert 0.2 < t <= 0.3
    assert choose_threshold(p, np.ones(7, bool)) == 0.5


def test_calibrated_threshold_is_the_balanced_crossing_and_steadier_than_the_maximum():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    # 500 negatives and 100 positives, overlapping like the origin model's validation p(ai)
    z = np.concatenate([rng.normal(-2.0, 1.2, 500), rng.normal(1.5, 1.5, 100)])
    p, pos = 1 / (1 + np.exp(-z)), np.arange(600) >= 500
    t = calibrated_threshold(p, pos)
    # at t the balanced logistic fit of logit(p) says 0.5: balanced accuracy well above chance there
    fit = LogisticRegression(class_weight="balanced", C=1e4).fit(z[:, None], pos)
    assert fit.predict_proba([[np.log(t / (1 - t))]])[0, 1] == pytest.approx(0.5, abs=1e-3)
    pred = p >= t
    assert 0.5 * (pred[pos].mean() + (~pred[~pos]).mean()) > 0.85
    # resampling the validation images moves it less than the balanced-accuracy maximum
    draws = [rng.integers(0, 600, 600) for _ in range(40)]
    spread = lambda rule: np.std([rule(p[i], pos[i]) for i in draws])  # noqa: E731
    assert spread(calibrated_threshold) < spread(choose_threshold)
    # degenerate validation sets fall back to 0.5
    assert calibrated_threshold(p[:10], pos[:10]) == 0.5
    assert calibrated_threshold(1 - p, pos) == 0.5  # probabilities that rank the classes backwards


@pytest.mark.parametrize("value, ok", [("auto", True), ("calibrated", True), ("none", True), ("0.7", True),
                                       ("1.5", False), ("0", False), ("best", False)])
def test_threshold_values_are_checked(value, ok, tmp_path):
    argv = ["--data", "x", "--output-dir", str(tmp_path), "--threshold", value]
    if ok:
        assert training.parse_args(argv).threshold == value
    else:
        with pytest.raises(SystemExit):
            training.parse_args(argv)
    for text in (f"'{value}'", value):  # quoted and plain YAML (a plain number arrives as a float)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"threshold: {text}\n")
        if ok:
            assert training.parse_args(["--config", str(cfg), "--data", "x", "--output-dir", str(tmp_path)]).threshold == value
        else:
            with pytest.raises(ConfigError, match="calibrated"):
                training.parse_args(["--config", str(cfg), "--data", "x", "--output-dir", str(tmp_path)])


def test_frozen_batchnorm_stays_in_eval_mode():
    from artlens.models import freeze, load_model

    m = load_model("tf_efficientnet_lite0", num_classes=3, pretrained=False)
    freeze(m, "linear_probe")
    training.set_train_mode(m)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and not any(b.training for b in bns)
    assert m.get_classifier().training
    freeze(m, "none")
    training.set_train_mode(m)
    assert all(b.training for b in bns)


# ---------------------------------------------------------------- real runs

@pytest.mark.slow
def test_cached_linear_probe_origin_recipe(data_dir, tmp_path, cache):
    from artlens.models import load_model
    from artlens.predict import Predictor

    out = tmp_path / "origin"
    res = run(["--config", ROOT / "trainers/configs/origin_offline.yaml", "--output-dir", out,
               "--data", f"{data_dir / 'paintings_styles10'},{data_dir / 'ai_sd15_styles15'}",
               "--max-per-class", 60, "--img-size", 128, "--epochs", 12, "--feature-copies", 1, "--patience", 0])
    for f in ("config.json", "model.safetensors", "README.md", "test_confusion.png", "test_metrics.json",
              "train_config.yaml", "all_results.json", "split.json"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoints").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label_names"] == ["ai", "human"] and cfg["architecture"] == "tf_efficientnet_lite0"
    assert cfg["pretrained_cfg"]["input_size"] == [3, 128, 128]
    results = json.loads((out / "all_results.json").read_text())
    assert 0.0 < results["threshold"] < 1.0 and results["threshold"] == res["threshold"]
    # human vs AI from ImageNet features on held-out artists (22 test images): 0.77 measured, chance 0.5
    assert results["test_balanced_accuracy"] >= 0.65, results
    assert results["val_balanced_accuracy"] >= 0.75, results
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["epochs"] == 12 and saved["data_labels"] == ["human", "ai"]
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    # the export is a normal timm model folder that carries its threshold
    m = load_model(out)
    assert isinstance(m.get_classifier(), torch.nn.Linear)
    assert m.pretrained_cfg["artlens_threshold"] == pytest.approx(results["threshold"])
    ai = sorted((data_dir / "ai_sd15_styles15" / "Cubism").glob("*.jpg"))[:2]
    preds = Predictor(str(out)).predict([str(p) for p in ai])
    assert {p["label"] for p in preds} <= {"ai", "human"} and all("p_ai" in p for p in preds)


@pytest.mark.slow
def test_cached_and_plain_linear_probe_agree(data_dir, tmp_path, cache):
    common = ["--data", data_dir / "paintings_styles10", "--max-per-class", 5, "--img-size", 32, "--epochs", 3,
              "--freeze", "linear_probe", "--aug", "none", "--lr", 0.01, "--batch-size", 8, "--seed", 3]
    fast = run(common + ["--output-dir", tmp_path / "fast", "--cache-features", "true"])
    slow = run(common + ["--output-dir", tmp_path / "slow", "--cache-features", "false"])
    assert fast["label_names"] == slow["label_names"] and len(fast["label_names"]) == 10
    hf = json.loads((tmp_path / "fast" / "history.json").read_text())
    hs = json.loads((tmp_path / "slow" / "history.json").read_text())
    assert [h["epoch"] for h in hf] == [1, 2, 3]
    for a, b in zip(hf, hs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])
    assert fast["test_accuracy"] == pytest.approx(slow["test_accuracy"])


@pytest.mark.slow
def test_artnet_head_pad_square_five_crop_exports_plain_timm(data_dir, tmp_path, cache):
    from artlens.data import eval_transform
    from artlens.models import load_model

    out = tmp_path / "artnet"
    res = run(["--data", data_dir / "paintings_styles10", "--output-dir", out, "--max-per-class", 3,
               "--img-size", 64, "--epochs", 1, "--head", "artnet", "--pad-square", "true", "--five-crop", "true",
               "--freeze", "top:0.1", "--optimizer", "adam", "--lr", 1e-4, "--schedule", "step", "--batch-size", 10,
               "--label-map", ROOT / "artlens/label_maps/artnet5.yaml", "--val-size", 0.3, "--test-size", 0.3,
               "--gradient-accumulation-steps", 2, "--l1", 1e-6, "--log-with", "tensorboard"])
    assert res["label_names"] == ["Expressionism", "Impressionism"]  # the styles10 styles that artnet5 keeps
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pretrained_cfg"]["crop_mode"] == "border" and cfg["pretrained_cfg"]["crop_pct"] == 1.0
    m = timm.create_model(f"local-dir:{out}")  # plain timm: the ArtNet head was folded into a linear layer
    assert isinstance(m.get_classifier(), torch.nn.Linear) and m.num_classes == 2
    tf = eval_transform(load_model(out))
    assert "CenterCropOrPad" in repr(tf)
    assert list(out.rglob("events.out.tfevents.*")), "the tensorboard tracker wrote nothing"
    assert len(json.loads((out / "history.json").read_text())) == 1


@pytest.mark.slow
def test_artists50_offline_recipe_runs_short(data_dir, tmp_path, cache):
    out = tmp_path / "artists50"
    res = run(["--config", ROOT / "trainers/configs/artists50_offline.yaml", "--output-dir", out,
               "--data", data_dir / "paintings_artists50", "--max-per-class", 3, "--img-size", 48, "--epochs", 2])
    assert len(res["label_names"]) == 50 and "Claude_Monet" in res["label_names"]
    assert res["epochs_run"] == 2 and "threshold" not in res
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == 50 and cfg["label_names"] == res["label_names"]
    assert json.loads((out / "test_metrics.json").read_text())["n"] == res["num_test"] > 0


def _wait_for_epoch(state: Path, proc, epoch: int, timeout: float = 240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(data_dir, tmp_path):
    env = dict(os.environ, ARTLENS_CACHE=os.environ.get("ARTLENS_CACHE", str(tmp_path / "cache")),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "trainers" / "train.py"), "--config",
           str(ROOT / "trainers/configs/styles10_offline.yaml"), "--data", str(data_dir / "paintings_styles10"),
           "--max-per-class", "4", "--img-size", "32", "--epochs", "3", "--cache-features", "false",
           "--freeze", "top:0.1", "--aug", "flip", "--tta", "none", "--patience", "0", "--batch-size", "8"]
    ref = tmp_path / "uninterrupted"
    subprocess.run(cmd + ["--output-dir", str(ref)], env=env, check=True, capture_output=True, timeout=400)

    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--output-dir", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for_epoch(out / "checkpoints" / "trainer_state.json", proc, 1), "no checkpoint before the end"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((out / "checkpoints" / "trainer_state.json").read_text())
    assert 1 <= state["epoch"] < 3 and not (out / "model.safetensors").exists()

    r = subprocess.run(cmd + ["--output-dir", str(out), "--resume", "true"], env=env, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed after epoch" in r.stdout + r.stderr
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist == json.loads((ref / "history.json").read_text())
    assert json.loads((out / "test_metrics.json").read_text()) == json.loads((ref / "test_metrics.json").read_text())
    split = json.loads((out / "split.json").read_text())
    artists = lambda names: {n.rsplit("_", 1)[0] for n in names}  # noqa: E731
    assert not artists(split["train"]) & artists(split["test"])  # the recipe's artist-disjoint split


def test_saved_train_config_reproduces_the_run_config(tmp_path):
    a = training.parse_args(["--config", str(ROOT / "trainers/configs/styles10_offline.yaml"), "--output-dir", str(tmp_path),
                          "--epochs", "3"])
    saved = save_config(a, tmp_path / "train_config.yaml")
    b = training.parse_args(["--config", str(saved)])
    assert {k: v for k, v in vars(b).items() if k != "config"} == {k: v for k, v in vars(a).items() if k != "config"}


def test_step_schedule_halves_every_n_epochs_and_onecycle_runs():
    p = [torch.nn.Parameter(torch.zeros(2))]
    a = training.parse_args(["--data", "x", "--output-dir", "o", "--schedule", "step", "--step-epochs", "2",
                          "--lr", "0.1", "--epochs", "6"])
    opt = training.create_optimizer(a, p)
    sched = training.create_scheduler(a, opt, steps_per_epoch=3)
    lrs = []
    for _ in range(6 * 3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[6] == pytest.approx(0.05) and lrs[12] == pytest.approx(0.025)
    a.schedule, a.optimizer = "onecycle", "sgd"
    opt = training.create_optimizer(a, p)
    assert isinstance(opt, torch.optim.SGD)
    sched = training.create_scheduler(a, opt, steps_per_epoch=3)
    seen = []
    for _ in range(18):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(0.1, rel=0.05) and seen[-1] < 0.01


def test_training_factories_take_the_flags_a_dict_or_keywords():
    """artlens.training's factories (what trainers/train.py runs), like timm's create_optimizer_v2."""
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad = False
    args = training.parse_args(["--data", "x", "--output-dir", "o", "--optimizer", "sgd", "--lr", "0.05",
                             "--momentum", "0.8", "--weight-decay", "1e-4"])
    opt = training.create_optimizer(args, model)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups[0]["params"]) == 1  # the trainable weight only
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.05, 0.8, 1e-4)
    opt = training.create_optimizer({"optimizer": "adam", "lr": 0.01}, model.parameters(), lr=0.02)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 0.02
    opt = training.create_optimizer(None, [model.weight])  # the trainer's defaults: AdamW 1e-3
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(training.ConfigError, match="lbfgs"):
        training.create_optimizer(optimizer="lbfgs", params=[model.weight])
    sched = training.create_scheduler({"schedule": "step", "epochs": 4, "step_epochs": 1, "step_gamma": 0.1},
                                      opt, steps_per_epoch=2)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 2 and sched.gamma == 0.1
    assert isinstance(training.create_scheduler(args, opt, 5), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert training.create_scheduler(args, opt, 5).T_max == 5 * args.epochs


def test_threshold_rules_live_beside_the_metrics():
    import artlens.metrics as M

    assert "choose_threshold" not in training.__all__ and not hasattr(training, "make_optimizer")
    p = np.array([0.1, 0.2, 0.4, 0.45, 0.7, 0.8])
    pos = np.array([False, False, False, True, True, True])
    # the gap between 0.4 (highest negative) and 0.45 (lowest positive) separates the classes exactly
    assert M.choose_threshold(p, pos) == pytest.approx(0.425)
    assert M.choose_threshold(p, np.zeros(6, bool)) == 0.5 == M.calibrated_threshold(p, np.zeros(6, bool))
    # symmetric logits around 0 on both sides: the balanced logistic fit crosses 0.5 at p = 0.5
    z = np.array([-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0])
    lab = np.array([False, False, True, False, True, False, True, True])
    assert M.calibrated_threshold(1 / (1 + np.exp(-z)), lab) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.slow
def test_sources_test_data_train_extra_and_composed_labels(data_dir, tmp_path):
    styles, ai, tmp_path = str(data_dir / "paintings_styles10"), str(data_dir / "ai_sd15_styles15"), str(tmp_path)
    two = Path(tmp_path) / "two.yaml"
    two.write_text("Expressionism: [Expressionism]\nImpressionism: [Impressionism]\n")
    with pytest.raises(DataError, match="Abstract"):  # artnet5 leaves AI classes the training data lacks
        training.load_dataset(training.parse_args(["--data", styles, "--test-data", ai, "--label-map", "artnet5",
                                             "--output-dir", tmp_path, "--max-per-class", "2"]))
    a = training.parse_args(["--data", styles, "--test-data", ai, "--label-map", str(two), "--output-dir", tmp_path,
                          "--max-per-class", "6"])
    ds, labels, fixed = training.load_dataset(a)
    assert labels == ["Expressionism", "Impressionism"]
    split = training.make_split(a, ds, fixed, Path(tmp_path), True)
    paths = [im["path"] for im in ds["image"]]
    assert split["test"] and all("ai_sd15_styles15" in paths[i] for i in split["test"])
    assert not any("ai_sd15_styles15" in paths[i] for i in split["train"] + split["validation"])
    assert json.loads((Path(tmp_path) / "split.json").read_text())["test"]

    b = training.parse_args(["--data", styles, "--train-extra", ai, "--label-map", "artnet5", "--output-dir", tmp_path,
                          "--max-per-class", "6"])
    ds, labels, fixed = training.load_dataset(b)
    split = training.make_split(b, ds, fixed, Path(tmp_path), True)
    paths = [im["path"] for im in ds["image"]]
    assert all("paintings_styles10" in paths[i] for i in split["test"] + split["validation"])
    assert sum("ai_sd15_styles15" in paths[i] for i in split["train"]) == sum(r == "train" for r in fixed.values()) > 0

    c = training.parse_args(["--data", f"{styles},{ai}", "--compose-prefix", "human,AI", "--output-dir", tmp_path,
                          "--max-per-class", "2"])
    _, labels, _ = training.load_dataset(c)
    assert "human_baroque" in labels and "AI_cubism" in labels and "AI_baroque" in labels
    assert len(labels) == 25  # 10 human styles + 15 AI movements


@pytest.mark.slow
def test_early_stopping_with_patience(data_dir, tmp_path, cache):
    res = run(["--data", data_dir / "paintings_styles10", "--output-dir", tmp_path / "es", "--max-per-class", 3,
               "--img-size", 32, "--epochs", 6, "--freeze", "linear_probe", "--cache-features", "true", "--aug", "none",
               "--lr", 0.0, "--patience", 2, "--metric", "loss"])
    # lr 0: the validation loss never improves after epoch 1, so two more epochs end the run
    assert res["early_stopped"] and res["epochs_run"] == 3 and res["best_epoch"] == 1
    assert len(json.loads((tmp_path / "es" / "history.json").read_text())) == 3


@pytest.mark.parametrize("predict_tta", [None, "crops"])
def test_train_blocks_fine_tunes_the_top_on_cached_maps(data_dir, tmp_path, cache, predict_tta):
    """--train-blocks 1: blocks.6 + conv_head + classifier learn on cached blocks.0-5 maps, one row per
    view; the export is a plain timm model whose predictor reproduces the trainer's test numbers, also when
    --predict-tta gives the test and the stored default other views than the training rows."""
    from safetensors.torch import load_file

    from artlens.models import load_model
    from artlens.predict import Predictor

    out = tmp_path / "tail"
    res = run(["--data", data_dir / "paintings_styles10", "--output-dir", out, "--max-per-class", 8,
               "--img-size", 96, "--epochs", 3, "--freeze", "linear_probe", "--cache-features", "true",
               "--train-blocks", 1, "--tta", "flip", "--view-rows", "true", "--aug", "none", "--lr", 0.003,
               "--batch-size", 16, "--test-size", 0.25, "--val-size", 0, "--seed", 1]
              + (["--predict-tta", predict_tta] if predict_tta else []))
    base = load_model("tf_efficientnet_lite0").state_dict()
    tuned = load_file(str(out / "model.safetensors"))
    changed = {k for k in base if k in tuned and not k.startswith("classifier")
               and tuned[k].is_floating_point() and not torch.equal(base[k], tuned[k])}
    assert any(k.startswith("blocks.6.") for k in changed) and any(k.startswith("conv_head") for k in changed)
    assert not [k for k in changed if not k.startswith(("blocks.6.", "conv_head", "bn2."))], sorted(changed)[:5]
    assert not [k for k in changed if "running_" in k], "BatchNorm statistics must stay frozen"
    # the trainer's test accuracy (cached fp16 maps, probabilities averaged over image + mirror) is what
    # the exported folder gives through the predictor with its stored TTA mode
    pred = Predictor(str(out), task="style")
    assert pred.tta == (predict_tta or "flip")
    assert yaml.safe_load((out / "train_config.yaml").read_text())["predict_tta"] == (predict_tta or "flip")
    test = set(json.loads((out / "split.json").read_text())["test"])
    files = sorted(f for f in (data_dir / "paintings_styles10").glob("*/*.jpg") if f.name in test)
    assert len(files) == res["num_test"] == 20
    acc = np.mean([r["label"] == f.parent.name for r, f in zip(pred.predict([str(f) for f in files]), files)])
    assert acc == pytest.approx(res["test_accuracy"], abs=0.051)
    assert res["test_accuracy"] > 0.2  # 10 styles, chance 0.1
