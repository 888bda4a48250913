import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA_DIR.is_dir(), f"the real data is expected at {DATA_DIR} (../shared/data beside the repo)"
    return DATA_DIR


# ---- the Space (test_space.py, test_space_inputs.py, test_browser.py): tiny models, one running app
@pytest.fixture(scope="session")
def space_models(tmp_path_factory, data_dir) -> dict:
    from scripts.benchmarks.space_helpers import make_space_models

    return make_space_models(tmp_path_factory.mktemp("space_models"), data_dir)


@pytest.fixture(scope="session")
def space_url(space_models, data_dir, tmp_path_factory):
    """``python spaces/artlens/app.py`` serving the tiny models, with two example paintings; closed at the end."""
    import shutil

    from scripts.benchmarks.space_helpers import start_space, stop_space

    examples = tmp_path_factory.mktemp("space_examples")
    for f in sorted((data_dir / "paintings_styles10" / "Impressionism").glob("*.jpg"))[:2]:
        shutil.copy(f, examples / f.name)
    proc, url, _ = start_space(space_models, examples=examples, log_path=examples.parent / "space.log")
    yield url
    stop_space(proc)


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def one_thread():
    """Small batches of small images: one torch thread is as fast, and never oversubscribes a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
