# The two commands of the README's quick start, and the few a developer needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test test-unit lint worker beat flower stub chaos

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/vetro demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

worker: install
	$(BIN)/python -m pipeline.supervise $(BIN)/celery -A pipeline worker --loglevel INFO

beat: install
	$(BIN)/celery -A pipeline beat --loglevel INFO

# The full chaos run (about 2 minutes): see RELIABILITY.md.
chaos: install
	$(BIN)/vetro chaos

flower: install
	$(BIN)/celery -A pipeline flower --basic-auth=$${FLOWER_USER:-admin}:$${FLOWER_PASSWORD:?set FLOWER_PASSWORD}

stub: install
	$(BIN)/vetro partner-stub
