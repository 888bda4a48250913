import json

import pytest

from artlens.metrics import compute_metrics, save_metrics


def test_metrics_values(tmp_path):
    names = ["a", "b", "c"]
    m = compute_metrics(["a", "a", "b", "c"], ["a", "b", "b", "c"], names)
    assert m["accuracy"] == 0.75
    assert abs(m["balanced_accuracy"] - (0.5 + 1 + 1) / 3) < 1e-9
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["a"]["recall"] == 0.5
    assert compute_metrics([0, 1], [0, 1], names)["accuracy"] == 1.0
    paths = save_metrics(m, tmp_path)
    assert json.loads(paths["json"].read_text())["accuracy"] == 0.75
    assert paths["png"].stat().st_size > 1000
    with pytest.raises(ValueError):
        compute_metrics(["a"], [], names)
