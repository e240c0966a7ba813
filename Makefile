# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project into it when missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-tfds test-torch bench venv clean

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audiotl demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

# Every test but those needing torch, which have their own venv (`make test-torch`).
test-all: $(STAMP)
	$(PY) -m pytest -q -m "not torch" $(ARGS)

# The TFDS reader needs tensorflow (the `tfds` extra, ~1.5 GB): its own venv, kept out of `test`.
TFDS_VENV := .venv-tfds
$(TFDS_VENV)/.installed: pyproject.toml setup.py
	@test -x $(TFDS_VENV)/bin/python || $(PYTHON) -m venv $(TFDS_VENV)
	$(TFDS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TFDS_VENV)/bin/python -m pip install --quiet -e '.[dev,tfds]'
	@touch $@

test-tfds: $(TFDS_VENV)/.installed
	$(TFDS_VENV)/bin/python -m pytest -q tests/test_tfds.py $(ARGS)

# Parity with the PyTorch reference code (PANNs, AST) needs torch: its own venv, kept out of
# `test`. The CPU wheel: the tests compare numbers, they need no GPU. `-m torch` selects the
# tests that need it; they fail, not skip, when torch is missing. (Their folder is not called
# tests/torch: pytest puts tests/ on sys.path, where such a folder would import as `torch`.)
TORCH_VENV := .venv-torch
$(TORCH_VENV)/.installed: pyproject.toml setup.py
	@test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet -e '.[dev]' 'torch==2.13.0'
	@touch $@

test-torch: $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/python -m pytest -q -m torch tests/torch_parity tests/test_importers.py $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/audiotl bench $(ARGS)

clean:
	rm -rf runs .pytest_cache
