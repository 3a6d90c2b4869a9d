# snoop-nb: `make demo` sets everything up and runs the demo; `make test` sets up and tests.
# Both work on a fresh machine with no GPU and no network but the package registries.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DATA   := data/demo
DEMO_COLLECTION := $(DATA)/collection
# made-up videos from the same pictures, their sidecar and their collection (DEMO_VIDEOS/collection)
DEMO_VIDEOS := $(DATA)/videos

# torch/torchvision: the pinned builds of ../shared/INSTALL.md (pyproject.toml pins them too).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo demo-collection dashboard test lint bench wheel clean help

help:
	@echo "make demo   set up, fetch the demo corpus, build its collection, show a search,"
	@echo "            then serve the dashboard on it (Ctrl-C stops it)"
	@echo "make test   set up and run the linters and the whole test suite"
	@echo "make bench  run the benchmarks (slow; writes benchmarks/results/*.json)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser: $(CHROMIUM)

$(DATA)/stamps: scripts/fetch_demo.sh
	bash scripts/fetch_demo.sh $(DATA)

demo: setup $(DATA)/stamps
	$(PY) -m snoop_nb.demo --images $(DATA)/stamps --collection $(DEMO_COLLECTION) --videos $(DEMO_VIDEOS)
	$(VENV)/bin/snoop dashboard --collection $(DEMO_COLLECTION) --videos $(DEMO_VIDEOS)/collection --port $(or $(PORT),8866)

# Build (or bring up to date: adding is incremental) the demo collection, quietly.
demo-collection: setup $(DATA)/stamps
	$(PY) -m snoop_nb.demo --images $(DATA)/stamps --collection $(DEMO_COLLECTION) --videos $(DEMO_VIDEOS) --no-show

dashboard: setup
	$(VENV)/bin/snoop dashboard --collection $(DEMO_COLLECTION) --videos $(DEMO_VIDEOS)/collection --port $(or $(PORT),8866)

lint: setup
	$(VENV)/bin/ruff check setup.py snoop_nb tests benchmarks notebooks dashboards
	$(VENV)/bin/ruff format --check setup.py snoop_nb tests benchmarks notebooks dashboards

# The unit, integration and browser tests, then every notebook top to bottom (nbval).
test: setup lint browser demo-collection
	$(PY) -m pytest
	$(PY) -m pytest --nbval-lax notebooks -p no:cacheprovider

bench: setup browser demo-collection
	$(PY) benchmarks/embed.py
	$(PY) benchmarks/index.py
	$(PY) benchmarks/feedback.py
	$(PY) benchmarks/ui.py

# A wheel that carries the widget templates and the dashboard (tests/test_wheel.py installs one
# in a fresh environment and runs the CLI, the UI and the dashboard from it).
wheel: setup
	$(PIP) wheel --no-deps --no-build-isolation -q . -w dist

clean:
	rm -rf dist $(VENV) build *.egg-info .pytest_cache .ruff_cache
