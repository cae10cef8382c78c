# Two entry points on a fresh machine: `make demo` and `make test`.
# Each creates .venv with the project and its dependencies if it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark clean migration

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/acr serve --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Test files run in parallel, one worker per core (pytest-xdist); a file's tests share a worker.
test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) demo .mypy_cache .ruff_cache .pytest_cache

# While the service's schema is unreleased, its one migration is regenerated from the models.
migration: $(STAMP)
	rm -f acr/db/migrations/versions/0001_initial_schema.py /tmp/acr-migration.db
	$(BIN)/python -c "from alembic import command; from acr.db.session import alembic_config; command.revision(alembic_config('sqlite:////tmp/acr-migration.db'), message='initial schema', autogenerate=True, rev_id='0001')"
	rm -f /tmp/acr-migration.db
	$(BIN)/ruff format -q acr/db/migrations
