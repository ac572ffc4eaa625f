# Everything a newcomer needs, installed on first use:
#   make up     run the sample three-step flow (attached; Ctrl-C stops it)
#   make test   run the whole test suite against a real Docker engine and broker
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLOW ?= sample_flows/orders.yaml

.PHONY: install npm chromium engine images swarm-images up down test unit lint bench bench-quick clean

$(BIN)/flowrun: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/flowrun

# Node.js components' dependencies are installed on the host with npm.
npm:
	@command -v npm >/dev/null 2>&1 || scripts/ensure-npm

# The live page's test drives Debian's chromium.
chromium:
	@scripts/ensure-chromium

engine:
	scripts/ensure-engine

images: engine
	scripts/build-base-images

# The swarm tests' Docker-in-Docker nodes and registry (tests/swarm).
swarm-images: engine
	scripts/build-swarm-node-image

up: install npm images
	$(BIN)/flowrun up $(FLOW)

down: install
	$(BIN)/flowrun down --all

test: install npm chromium images swarm-images
	$(BIN)/python -m pytest -q -ra --durations=25

unit: install
	$(BIN)/python -m pytest -q -m "not engine"

lint: install
	$(BIN)/ruff check flowrun tests bench
	$(BIN)/mypy flowrun

bench: install npm images swarm-images
	$(BIN)/python bench/run.py

bench-quick: install npm images
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) *.egg-info
