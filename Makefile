# CarePath CDP: `make run` (install, migrate, seed, serve) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
PYTEST_ARGS ?=

.PHONY: run test test-fast bench lint format clean install

run: $(RUNTIME_STAMP)
	$(BIN)/cdp db upgrade
	$(BIN)/cdp seed-demo --if-empty
	$(BIN)/cdp loyalty seed-demo --if-empty
	$(BIN)/cdp hcp seed-demo --if-empty
	$(BIN)/cdp journeys seed-demo --if-empty
	$(BIN)/cdp serve

test: $(DEV_STAMP)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

test-fast: $(DEV_STAMP)
	$(BIN)/pytest -n auto -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	@for script in bench/*_bench.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

install: $(RUNTIME_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

clean:
	rm -rf $(VENV) instance .pytest_cache
