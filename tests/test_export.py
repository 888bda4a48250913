import json

import numpy as np
import pytest
import torch

from artlens.data import eval_transform
from artlens.export import push_to_hub, save_model_folder
from artlens.features import fit_probe
from artlens.images import list_images, open_image
from artlens.models import load_model, set_head
from artlens.predict import Predictor

STYLES = ["Baroque", "Impressionism", "Surrealism"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data_dir):
    """A 3-style head fitted on offline Lite0 features of real paintings, written as a model folder."""
    torch.manual_seed(0)
    m = fit_probe({s: list_images(data_dir / "paintings_styles10" / s)[:12] for s in STYLES})
    out = tmp_path_factory.mktemp("export") / "styles3"
    return save_model_folder(m, out, train_config={"model": "tf_efficientnet_lite0", "epochs": 0},
                             datasets=[str(data_dir / "paintings_styles10")])


def test_folder_contents(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "all_results.json", "train_config.yaml"} <= names
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["label_names"] == STYLES and cfg["num_classes"] == 3
    assert "num_classes" not in cfg.get("model_args", {})
    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and "pipeline_tag: image-classification" in card
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt*"))


def test_loads_everywhere_with_identical_top1(folder, data_dir):
    import timm
    from transformers import AutoModelForImageClassification, pipeline

    files = [str(f) for s in STYLES for f in list_images(data_dir / "paintings_styles10" / s)[30:34]]
    ours = [r["label"] for r in Predictor(folder).predict(files)]

    tm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    t = eval_transform(tm)
    with torch.no_grad():
        logits = tm(torch.stack([t(open_image(f)) for f in files]))
    via_timm = [STYLES[i] for i in logits.argmax(-1).tolist()]

    hf = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        hl = hf(pixel_values=torch.stack([t(open_image(f)) for f in files])).logits
    via_hf = [hf.config.id2label[i] for i in hl.argmax(-1).tolist()]

    pipe = pipeline("image-classification", model=str(folder))
    via_pipe = [pipe(open_image(f))[0]["label"] for f in files]

    assert ours == via_timm == via_hf == via_pipe
    acc = np.mean([o == s for o, s in zip(ours, [s for s in STYLES for _ in range(4)])])
    assert acc > 0.5  # held-out paintings (rows 30-33 of each class), chance is 1/3


def test_artnet_head_export_loads_in_timm(tmp_path):
    import timm

    m = load_model("resnet18", pretrained=False, num_classes=2, label_names=["human", "ai"])
    set_head(m, "artnet")
    m.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        y = m(x)
    save_model_folder(m, tmp_path / "a")
    with torch.no_grad():
        y2 = timm.create_model(f"local-dir:{tmp_path / 'a'}", pretrained=True).eval()(x)
    assert torch.allclose(y, y2, atol=1e-5)


def test_push_calls_hub(folder, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw.get("private")))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload", folder_path, repo_id))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_to_hub(folder, "me/styles3", private=True, token="t")
    assert url.endswith("me/styles3/commit/1")
    assert calls == [("init", "t"), ("create", "me/styles3", True), ("upload", str(folder), "me/styles3")]
    with pytest.raises(FileNotFoundError):
        push_to_hub(folder.parent / "nothing", "me/x")


def test_head_only_folder_round_trip(folder, data_dir, tmp_path):
    """A linear probe saved with its pretrained backbone named: the classifier alone on disk, the same
    predictions as the whole model, and `artlens export` turns it back into a folder plain timm loads."""
    import timm
    from safetensors import safe_open

    from artlens.cli import main as cli_main

    m = load_model(folder)
    small = save_model_folder(m, tmp_path / "head", dtype=torch.float16, backbone="tf_efficientnet_lite0")
    with safe_open(str(small / "model.safetensors"), "pt") as sf:
        assert set(sf.keys()) == {"classifier.weight", "classifier.bias"}
    assert (small / "model.safetensors").stat().st_size < 20_000
    cfg = json.loads((small / "config.json").read_text())
    assert cfg["artlens"]["artlens_backbone"] == "tf_efficientnet_lite0" and cfg["label_names"] == STYLES
    assert "holds only the classifier" in (small / "README.md").read_text()

    files = [str(f) for s in STYLES for f in list_images(data_dir / "paintings_styles10" / s)[30:33]]
    full, head = Predictor(folder).predict(files), Predictor(small).predict(files)
    assert [r["label"] for r in head] == [r["label"] for r in full]
    assert max(abs(a["probs"][s] - b["probs"][s]) for a, b in zip(full, head) for s in STYLES) < 2e-3

    with pytest.raises(ValueError, match="holds only a classifier"):
        push_to_hub(small, "me/styles3")
    assert cli_main(["export", str(small), str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert "artlens_backbone" not in (whole.get("artlens") or {})
    x = torch.stack([eval_transform(m)(open_image(f)) for f in files])
    with torch.no_grad():
        a = timm.create_model(f"local-dir:{tmp_path / 'whole'}", pretrained=True).eval()(x)
        b = load_model(small).eval()(x)
    assert torch.allclose(a, b, atol=1e-4)

    with torch.no_grad():
        m.conv_stem.weight.add_(0.01)  # a fine-tuned backbone is not "the pretrained one"
    with pytest.raises(ValueError, match="conv_stem.weight"):
        save_model_folder(m, tmp_path / "bad", backbone="tf_efficientnet_lite0")
