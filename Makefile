# The two commands of the README's quick start, and the few a developer needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test test-long test-cluster test-unit docs worker beat flower stub chaos

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,docs,local,flower]"
	touch $@

# The demo keeps running after its summary, with the operator console on it (Ctrl+C stops everything).
demo: install
	$(BIN)/vetro demo --keep-running

# The default tier: lint, the layering contract, unit tests and the fast integration tests.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The long tier: the tests marked `long` (chaos, fault runs, upgrades), in one shuffled session.
test-long: install
	$(BIN)/python -m pytest -m long -n 0

# The ledger, guard, reconciler, breaker and rate-limit tests with the result store on a private three-master
# Redis Cluster (the broker stays a private Redis): docs/how-to/redis-cluster.md.
CLUSTER_TESTS = tests/unit/test_cluster_slots.py $(addprefix tests/integration/test_,$(addsuffix .py, \
	no_job_lost exactly_once redelivery due_times revoke dead_letters dlq_cli spool breakers provider_sync \
	payments canvas canvas_faults pipeline job_timeline))
test-cluster: install
	VETRO_TEST_RESULT_STORE=cluster $(BIN)/python -m pytest $(CLUSTER_TESTS)

test-unit: install
	$(BIN)/python -m pytest tests/unit

# The documentation site, into site/; a broken link or a missing page fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

worker: install
	$(BIN)/python -m vetro.supervise $(BIN)/celery -A pipeline worker --loglevel INFO

beat: install
	$(BIN)/celery -A pipeline beat --loglevel INFO

# The full chaos run (about 2 minutes): see RELIABILITY.md.
chaos: install
	$(BIN)/vetro chaos

flower: install
	$(BIN)/celery -A pipeline flower --basic-auth=$${FLOWER_USER:-admin}:$${FLOWER_PASSWORD:?set FLOWER_PASSWORD}

stub: install
	$(BIN)/vetro partner-stub
