# Set-up and the two README commands. `make demo` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint chromium

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: on this project's machines a CPU build of this release is on
	# disk, and asking for it by exact version keeps pip from pulling a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[model,dev,bench,serve]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wavar sample --model fashion-mnist-small --classes all --n 2 -o samples.png --gif samples.gif

test: $(STAMP) chromium
	$(PY) -m pytest -q

# the browser test of `wavar serve` drives Debian's chromium (through Playwright, no browser
# download); installed here when missing and we are root, else the test fails saying so
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "make: chromium is missing and cannot be installed here (not root, or no apt-get);" \
	         "the browser test of wavar serve will fail: install Debian's chromium package" >&2; \
	  fi; }

# everything but the tests marked slow (pyproject.toml): for the edit-test loop
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check wavar tests benchmarks
