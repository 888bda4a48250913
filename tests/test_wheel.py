"""artlens as a wheel: every pattern of pyproject's package-data matches files, the wheel holds the package
data (the embedded default model folders above all), and the Space runs from that install (``artlens space``
from the wheel's console script, outside the checkout), since the Space is part of the package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from scripts.benchmarks.space_helpers import ROOT, start_space, stop_space

tomllib = pytest.importorskip("tomllib")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_data() -> dict[str, list[str]]:
    return _setuptools()["package-data"]


def _package_dir(package: str) -> Path:
    return ROOT / _setuptools().get("package-dir", {}).get(package, package.replace(".", "/"))


def test_every_package_data_pattern_matches_files():
    for package, patterns in _package_data().items():
        base = _package_dir(package)
        for pattern in patterns:
            files = [f for f in base.glob(pattern) if f.is_file() and "__pycache__" not in f.parts]
            assert files, f"package-data pattern {package}: {pattern!r} matches no file under {base}"


def _package_files(src: Path) -> set[str]:
    return {f.relative_to(src).as_posix() for f in (src / "artlens").rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the checkout (pyproject.toml, README.md, artlens/, model_cards/, dataset_cards/): the shared working
    tree gets no build/ or egg-info from it. Returns (wheel path, files the copy's package holds)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("artlens", "model_cards", "dataset_cards"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, cwd=str(tmp), timeout=600)
    (whl,) = (tmp / "dist").glob("artlens-*.whl")
    return whl, _package_files(src)


@pytest.mark.slow
def test_wheel_holds_the_package_and_its_data(wheel):
    whl, files = wheel
    names = set(zipfile.ZipFile(whl).namelist())
    assert "artlens/space.py" in names and "artlens/cli.py" in names
    for task in ("style", "artist", "origin"):
        assert f"artlens/defaults/{task}/config.json" in names and f"artlens/defaults/{task}/model.safetensors" in names
    assert "artlens/model_cards/model_card.md" in names
    for t in ("synthetic_template", "prepared_template", "imagefolder_template"):
        assert f"artlens/dataset_cards/{t}.md" in names
    missing = sorted(files - names)
    assert not missing, f"files of the package left out of the wheel (pyproject package-data): {missing}"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "artlens = artlens.cli:main" in zipfile.ZipFile(whl).read(entry).decode()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """``pip install --no-deps --target`` the wheel (torch, gradio, timm come from this environment)."""
    whl, _ = wheel
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(whl)], check=True, cwd=str(site.parent), timeout=600)
    return site


@pytest.mark.slow
def test_cards_render_from_the_installed_wheel(installed, tmp_path):
    """A model card and a synthetic dataset card, rendered by the installed package from its own templates."""
    code = (
        "import sys; from pathlib import Path; from artlens import cards, metrics, synth\n"
        "assert cards.MODEL_CARD_TEMPLATE.is_relative_to(Path(sys.argv[1]).resolve()), cards.MODEL_CARD_TEMPLATE\n"
        "cards.render_model_card('model/README.md', model_name='m', architecture='resnet18', label_names=['a', 'b'],\n"
        "    pretrained_cfg={'input_size': (3, 224, 224)}, metrics=metrics.compute_metrics([0, 1], [0, 0], ['a', 'b']))\n"
        "synth.write_synthetic_card('data', {'name': 'r', 'label_by': 'style', 'templates': ['{motif}'],\n"
        "    'negative_prompt': '', 'images_per_prompt': 1, 'subjects': ['Baroque'], 'motifs': ['a cat']},\n"
        "    {'model': 'tiny/sd', 'steps': 2}, [{'label': 'Baroque'}])\n")
    out = subprocess.run([sys.executable, "-c", code, str(installed)], env=dict(os.environ, PYTHONPATH=str(installed)),
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    card = (tmp_path / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and "`a`, `b`" in card
    assert "synthetic" in (tmp_path / "data" / "README.md").read_text()


@pytest.mark.slow
def test_space_runs_from_the_installed_wheel(installed, tmp_path, monkeypatch):
    """``artlens space`` from the installed wheel, outside the checkout, on the defaults the wheel embeds: its
    page answers 200 and the models it serves are the wheel's."""
    if not all((ROOT / "artlens" / "defaults" / t / "config.json").exists() for t in ("style", "artist", "origin")):
        pytest.skip("the embedded default models are not built (make defaults)")
    site = installed
    env = dict(os.environ, PYTHONPATH=str(site))
    code = ("import sys, artlens, artlens.space; print(artlens.__file__); "
            "assert 'gradio' not in sys.modules, 'import artlens.space imported gradio'")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert Path(out.stdout.strip()).resolve().is_relative_to(site.resolve()), out.stdout  # not the checkout's

    for var in ("ARTLENS_STYLE_MODEL", "ARTLENS_ARTIST_MODEL", "ARTLENS_ORIGIN_MODEL"):
        monkeypatch.delenv(var, raising=False)
    script = site / "bin" / "artlens"  # the console script pip wrote; run with this interpreter
    log = tmp_path / "space.log"
    proc, url, _ = start_space(None, log_path=log, command=[sys.executable, str(script), "space"], cwd=tmp_path,
                               extra_env={"PYTHONPATH": str(site)}, timeout=300)
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        with urllib.request.urlopen(url + "config", timeout=30) as r:
            config = r.read().decode()
        for task in ("style", "artist", "origin"):  # the About tab names the folders it runs
            assert f"local-dir:{site / 'artlens' / 'defaults' / task}" in config
    finally:
        stop_space(proc)
    assert "models loaded" in log.read_text()
