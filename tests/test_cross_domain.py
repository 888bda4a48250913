"""scripts/cross_domain.py end to end on the real shared data (a small slice of it)."""
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.mark.slow
def test_cross_domain_table_maps_and_disjoint_splits(data_dir, tmp_path):
    from PIL import Image

    from artlens.data import group_from_filename

    cd = load_script("cross_domain")
    out = tmp_path / "cd"
    args = cd.parse_args([
        "--real", str(data_dir / "paintings_styles10"), "--synthetic", str(data_dir / "ai_sd15_styles15"),
        "--labels", "Baroque", "Impressionism", "--max-per-class", "12", "--epochs", "15",
        "--explain", "gradcam,lime", "--explain-per-class", "1", "--lime-samples", "8", "--map-size", "32",
        "--output-dir", str(out)])
    res = cd.main(args)

    table = res["table"]
    assert set(table) == {"real", "synthetic", "real+synthetic"}
    for tr in table:
        assert set(table[tr]) == {"real", "synthetic"}
        for t, m in table[tr].items():
            assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == res["test_counts"][t] > 0
    # two well-separated styles, held-out artists: the real model beats the majority class on real paintings
    assert table["real"]["real"]["accuracy"] > res["majority_baseline"]["real"]
    # the table's evaluation (artlens.predict on the model folder) agrees with the trainer's own test score
    assert table["real"]["real"]["accuracy"] == pytest.approx(res["trainer_test_accuracy"]["real"], abs=1e-6)
    assert table["synthetic"]["synthetic"]["accuracy"] == pytest.approx(res["trainer_test_accuracy"]["synthetic"], abs=1e-6)

    # artist-disjoint splits in both sets; the combined model trains on exactly the union
    splits = {tr: json.loads((out / "data" / f"split_{tr}.json").read_text()) for tr in ("real", "synthetic", "real_synthetic")}
    for tr in ("real", "synthetic"):
        train_artists = {group_from_filename(n) for n in splits[tr]["train"] + splits[tr]["validation"]}
        assert train_artists and not train_artists & {group_from_filename(n) for n in splits[tr]["test"]}
    assert sorted(splits["real_synthetic"]["train"]) == sorted(splits["real"]["train"] + splits["synthetic"]["train"])
    for tr in ("real", "synthetic", "real_synthetic"):
        assert json.loads((out / "models" / tr / "config.json").read_text())["label_names"] == ["Baroque", "Impressionism"]

    md = (out / "cross_domain.md").read_text()
    assert "| real+synthetic |" in md and f"{table['synthetic']['real']['accuracy']:.3f}" in md
    assert json.loads((out / "cross_domain.json").read_text())["labels"] == ["Baroque", "Impressionism"]
    import numpy as np
    arrays = np.load(out / "maps_real.npz")
    assert "synthetic|lime|Baroque" in arrays.files and arrays["real|gradcam|Impressionism"].shape == (32, 32)
    maps = Image.open(out / "maps_real.png")
    assert maps.width > 200 and maps.height > 400  # 6 rows (3 models x Grad-CAM, LIME) of 2 classes


def test_cross_domain_rejects_labels_not_in_both_sets(data_dir, tmp_path):
    cd = load_script("cross_domain")
    args = cd.parse_args(["--real", str(data_dir / "paintings_styles10"), "--synthetic", str(data_dir / "ai_sd15_styles15"),
                          "--labels", "Baroque", "Ukiyo-e", "--output-dir", str(tmp_path)])
    with pytest.raises(cd.DataError, match=r"not in both sets; the sets share \['Baroque', 'Expressionism'"):
        cd.main(args)
