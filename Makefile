# Set-up and the two README commands. `make demo` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: on this project's machines a CPU build of this release is on
	# disk, and asking for it by exact version keeps pip from pulling a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[model,dev,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wavar sample --model fashion-mnist --classes all --n 2 -o samples.png --gif samples.gif

test: $(STAMP)
	$(PY) -m pytest -q

# everything but the tests marked slow (pyproject.toml): for the edit-test loop
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check wavar tests benchmarks
