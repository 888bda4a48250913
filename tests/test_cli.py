import json
import subprocess
import sys

import pytest

from artlens.cli import main
from artlens.images import list_images


def test_predict_imagenet_offline(capsys, tmp_path):
    from PIL import Image
    from skimage import data as skdata

    Image.fromarray(skdata.chelsea()).save(tmp_path / "cat.jpg")
    Image.fromarray(skdata.coffee()).save(tmp_path / "coffee.png")
    (tmp_path / "broken.jpg").write_text("not an image")
    rc = main(["predict", "--model", "tf_efficientnet_lite0", "--json", "--top-k", "3", str(tmp_path)])
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    by = {row["file"].rsplit("/", 1)[-1]: row for row in lines}
    assert by["cat.jpg"]["label"] == "Egyptian cat" and len(by["cat.jpg"]["top_k"]) == 3
    assert by["coffee.png"]["label"] == "espresso"
    assert "not an image" in by["broken.jpg"]["error"]
    assert rc == 1


def test_user_errors_are_one_line(capsys, tmp_path):
    assert main(["predict", "--model", "no_such_arch", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_predict_and_evaluate_on_real_paintings(capsys, data_dir, tmp_path):
    files = list_images(data_dir / "paintings_styles10" / "Baroque")[:2]
    rc = main(["predict", "--model", "tf_efficientnet_lite0", "--json", *map(str, files)])
    out = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert rc == 0 and len(out) == 2 and all(0 < r["score"] <= 1 for r in out)


@pytest.mark.slow
def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "artlens.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "predict" in r.stdout and "explain" in r.stdout
