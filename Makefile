# jaxsys: install, lint, test, demo. Everything runs from the venv in $(VENV).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Reinstalled when setup.py or pyproject.toml change; otherwise `make install` does nothing.
STAMP := $(VENV)/.jaxsys-installed

.PHONY: install test lint format demo clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q -n 2 tests

demo: install
	$(PY) -m jaxsys.launch.reproduce --workdir=workdir/demo

clean:
	rm -rf workdir build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
