# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project into it when missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-tfds bench venv clean

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

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

# The TFDS reader needs tensorflow (the `tfds` extra, ~1.5 GB): its own venv, kept out of `test`.
TFDS_VENV := .venv-tfds
$(TFDS_VENV)/.installed: pyproject.toml setup.py
	@test -x $(TFDS_VENV)/bin/python || $(PYTHON) -m venv $(TFDS_VENV)
	$(TFDS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TFDS_VENV)/bin/python -m pip install --quiet -e '.[dev,tfds]'
	@touch $@

test-tfds: $(TFDS_VENV)/.installed
	$(TFDS_VENV)/bin/python -m pytest -q tests/test_tfds.py $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/audiotl bench $(ARGS)

clean:
	rm -rf runs .pytest_cache
