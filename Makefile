# Steadyshot: `make run` starts everything, `make test` runs the whole suite.
# Both create .venv with a suitable Python and install the project on first use.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format openapi browser clean drill-hosts drills

help:
	@echo "make run        set up (venv, install, migrate, demo account) and start web, workers, Redis, sandbox"
	@echo "make test       install and run the whole test suite (TEST_WORKERS=2 processes)"
	@echo "make test-fast  the unit tier only: in-process, in-memory SQLite, under a minute"
	@echo "make lint       ruff check and format check"
	@echo "make drill-hosts three hosts on one Postgres, Redis and bucket: kill one, restart the others"
	@echo "make drills     the failure drills and the load drill (DRILL=name for one; docs/reliability.md)"
	@echo "make format     apply ruff formatting and safe fixes"
	@echo "make openapi    write the API's OpenAPI document to docs/openapi.json"
	@echo "make browser    install Debian's chromium for the browser tests (needs root or sudo)"

$(PY):
	@python=$$(bin/find-python) || exit 1; \
	echo "Creating $(VENV) with $$python"; \
	"$$python" -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m config.up

# The whole suite in TEST_WORKERS pytest-xdist processes (most of its time is spent
# waiting on workers, servers and the sandbox); TEST_WORKERS=0 runs it in this process.
# Tests are handed out one at a time once the first batch is out, so that the long ones
# (run first, tests/conftest.py) do not pile up on one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 $(PYTEST_ARGS)

# The unit tier alone: no Redis, no subprocess, the test database in memory.
test-fast: install
	TEST_DB_IN_MEMORY=1 DATABASE_URL= $(PY) -m pytest tests/unit $(PYTEST_ARGS)

# docs/deploy.md: needs a Postgres where it may create steady_drill_hosts (DRILL_DATABASE_URL).
drill-hosts: install
	$(PY) -m drills.hosts

# docs/reliability.md: every failure drill against make run's processes, or DRILL=<name>.
# DRILL_DATABASE_URL=postgres://... runs them on Postgres (and adds the postgres-drop drill).
drills: install
	$(PY) -m drills.run $(DRILL)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The API's contract, checked in: tests/unit/generator/test_openapi.py fails when the
# document the server serves and this file differ.
openapi: install
	$(PY) manage.py export_openapi_schema --api generator.api.api --indent 2 --output docs/openapi.json
	@echo >> docs/openapi.json

browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

clean:
	rm -rf $(VENV) build *.egg-info
