# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make run    set up, migrate, bootstrap a demo project, start web + Celery worker + beat
#   make test   set up and run the whole test suite (embedded SQLite + diskcache by default)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: install run test lint format bench-ingest clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

.env:
	$(BIN)/python scripts/local_env.py > .env

run: install .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py bootstrap_demo
	$(BIN)/honcho start -f Procfile

# Tests need no .env: they set what they need here and in tests/conftest.py.
test: install
	SECRET_KEY=test-only-secret SECURE_SSL_REDIRECT=0 $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-ingest: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) data
