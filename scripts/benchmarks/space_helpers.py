"""Shared by the Space tests (test_space*.py, test_browser.py, test_wheel.py) and scripts/benchmarks/space.py:
tiny untrained model folders with the real label sets, and the app started as a user starts it
(``python spaces/artlens/app.py``, the thin file a Hugging Face Space runs; the app is artlens.space)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "spaces" / "artlens" / "app.py"


def label_sets(data_dir) -> dict[str, list[str]]:
    data_dir = Path(data_dir)
    folders = lambda d: sorted(p.name for p in (data_dir / d).iterdir() if p.is_dir())  # noqa: E731
    return {"style": folders("paintings_styles10"), "artist": folders("paintings_artists50"), "origin": ["human", "ai"]}


def make_space_models(out_dir, data_dir, threshold: float = 0.5) -> dict[str, str]:
    """Untrained tf_efficientnet_lite0 folders (offline ImageNet backbone) for style, artist and origin."""
    import torch

    from artlens.export import save_model_folder
    from artlens.models import load_model

    torch.manual_seed(0)
    out = {}
    for task, labels in label_sets(data_dir).items():
        model = load_model("tf_efficientnet_lite0", num_classes=len(labels), label_names=labels)
        if task == "origin":
            model.pretrained_cfg = dict(model.pretrained_cfg, artlens_threshold=threshold, artlens_positive="ai")
        out[task] = str(save_model_folder(model, Path(out_dir) / task, card_fields={"model_name": f"test-{task}"}))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_space(models: dict | None = None, examples=None, log_path=None, timeout: float = 180.0,
                extra_env: dict | None = None, command: list | None = None, cwd=ROOT):
    """``python spaces/artlens/app.py`` (or ``command``, which takes the same flags, e.g. ``artlens space``)
    on 127.0.0.1 and a free port. Returns (process, url, seconds to ready)."""
    port = free_port()
    cmd = list(command or [sys.executable, str(APP)]) + ["--host", "127.0.0.1", "--port", str(port)]
    for task, path in (models or {}).items():
        cmd += [f"--{task}", str(path)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2",
               PYTHONUNBUFFERED="1", **(extra_env or {}))
    env.pop("ARTLENS_EXAMPLES", None)
    if examples:
        env["ARTLENS_EXAMPLES"] = str(examples)
    log = open(log_path or os.devnull, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            log.close()
            tail = Path(log_path).read_text()[-3000:] if log_path else ""
            raise RuntimeError(f"the Space exited with code {proc.returncode} before serving:\n{tail}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            stop_space(proc)
            raise RuntimeError(f"the Space did not answer on {url} within {timeout:.0f}s")
        time.sleep(0.25)
    return proc, url, time.perf_counter() - t0


def stop_space(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
