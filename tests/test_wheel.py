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


def _package_data() -> dict[str, list[str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return cfg["tool"]["setuptools"]["package-data"]


def test_every_package_data_pattern_matches_files():
    for package, patterns in _package_data().items():
        base = ROOT / package.replace(".", "/")
        for pattern in patterns:
            files = [f for f in base.glob(pattern) if f.is_file() and "__pycache__" not in f.parts]
            assert files, f"package-data pattern {package}: {pattern!r} matches no file under {base}"


def _package_files(src: Path) -> set[str]:
    return {f.relative_to(src).as_posix() for f in (src / "artlens").rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the checkout (pyproject.toml, README.md, artlens/): the shared working
    tree gets no build/ or egg-info from it. Returns (wheel path, files the copy's package holds)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "artlens", src / "artlens", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
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
    missing = sorted(files - names)
    assert not missing, f"files of the package left out of the wheel (pyproject package-data): {missing}"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "artlens = artlens.cli:main" in zipfile.ZipFile(whl).read(entry).decode()


@pytest.mark.slow
def test_space_runs_from_the_installed_wheel(wheel, tmp_path, monkeypatch):
    """``pip install --no-deps --target`` the wheel (torch, gradio, timm come from this environment), then
    ``artlens space`` from that install, outside the checkout, on the defaults the wheel embeds: its page
    answers 200 and the models it serves are the wheel's."""
    if not all((ROOT / "artlens" / "defaults" / t / "config.json").exists() for t in ("style", "artist", "origin")):
        pytest.skip("the embedded default models are not built (make defaults)")
    whl, _ = wheel
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(whl)], check=True, cwd=str(tmp_path), timeout=600)
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
