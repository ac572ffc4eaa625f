# Everything a newcomer needs, installed on first use:
#   make up     run the sample three-step flow (attached; Ctrl-C stops it)
#   make test   run the whole test suite against a real Docker engine and broker
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLOW ?= sample_flows/orders.yaml

.PHONY: install engine images up down test unit lint bench bench-quick clean

$(BIN)/flowrun: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/flowrun

engine:
	scripts/ensure-engine

images: engine
	scripts/build-base-images

up: install images
	$(BIN)/flowrun up $(FLOW)

down: install
	$(BIN)/flowrun down --all

test: install images
	$(BIN)/python -m pytest -q -ra

unit: install
	$(BIN)/python -m pytest -q -m "not engine"

lint: install
	$(BIN)/ruff check flowrun tests bench
	$(BIN)/mypy flowrun

bench: install images
	$(BIN)/python bench/run.py

bench-quick: install images
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) *.egg-info
