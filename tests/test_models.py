import pytest
import torch
from skimage import data as skdata

from artlens.data import eval_transform
from artlens.images import open_image
from artlens.models import (ModelError, count_trainable, fold_head, freeze, label_names, load_model, resolve_ref,
                            set_head)
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
    with pytest.raises(ModelError, match="offline ImageNet backbones"):
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
