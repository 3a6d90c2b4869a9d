# snoop-nb: `make demo` sets everything up and runs the demo; `make test` sets up and tests.
# Both work on a fresh machine with no GPU and no network but the package registries.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DATA   := data/demo
DEMO_COLLECTION := $(DATA)/collection

# torch/torchvision: the pinned builds of ../shared/INSTALL.md (pyproject.toml pins them too).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean help

help:
	@echo "make demo   set up, fetch the demo corpus, build its collection, show a search"
	@echo "make test   set up and run the linters and the whole test suite"
	@echo "make bench  run the benchmarks (slow; writes benchmarks/results/*.json)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

$(DATA)/stamps: scripts/fetch_demo.sh
	bash scripts/fetch_demo.sh $(DATA)

demo: setup $(DATA)/stamps
	$(PY) -m snoop_nb.demo --images $(DATA)/stamps --collection $(DEMO_COLLECTION)

lint: setup
	$(VENV)/bin/ruff check snoop_nb tests benchmarks
	$(VENV)/bin/ruff format --check snoop_nb tests benchmarks

test: setup lint
	$(PY) -m pytest

bench: setup $(DATA)/stamps
	$(PY) benchmarks/embed.py
	$(PY) benchmarks/index.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
