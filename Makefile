# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP_HOST ?= 127.0.0.1
APP_PORT ?= 8000
DEMO_UPSTREAM_PORT ?= 8001
# Load .env when there is one (see .env.example).
ENV := set -a; [ -f .env ] && . ./.env; set +a;
# daphne, through chatsite/server.py: it drops a websocket that stops reading (WS_SEND_BUFFER_BYTES).
SERVE = $(BIN)/python -m chatsite.server -b $(APP_HOST) -p $(APP_PORT) chatsite.asgi:application

.PHONY: run demo test lint install install-dev migrate bench bench-browser screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(ENV) DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput

## Install and start the app on http://127.0.0.1:8000 (SQLite and one process unless .env says otherwise).
run: migrate
	$(ENV) DEBUG=$${DEBUG:-true} $(BIN)/python manage.py ensure_member --if-no-users
	$(ENV) DEBUG=$${DEBUG:-true} $(SERVE)

## Run the app against the fake model server: no API key needed (it echoes, so titles are the first
## words rather than the model's: MODEL_TITLES=false). Sign in as demo / demo-password
## (a member), or as reviewer / reviewer-password (a superuser) for the admin's review pages.
demo: install-dev
	DEBUG=true $(BIN)/python manage.py migrate --noinput
	DEBUG=true $(BIN)/python manage.py ensure_member --username demo --password demo-password --role member
	DEBUG=true $(BIN)/python manage.py ensure_member --username reviewer --password reviewer-password
	$(BIN)/python -m tests.fake_upstream --port $(DEMO_UPSTREAM_PORT) --tokens 60 --delay 0.03 & \
	trap "kill $$!" EXIT; \
	DEBUG=true OPENAI_BASE_URL=http://127.0.0.1:$(DEMO_UPSTREAM_PORT)/v1 OPENAI_API_KEY=demo DEFAULT_MODEL=fake-model \
	MODEL_TITLES=false $(SERVE)

## Install and run the whole test suite (starts Postgres and Redis if needed).
test: install-dev
	./scripts/ensure-services.sh
	$(BIN)/python -m pytest

## Lint the project: ruff, and the layering of conversations/ (pyproject.toml, docs/architecture.md).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## Benchmark the relay on this machine (Postgres and Redis must run; ~8 minutes, py-spy profiles included):
## prints the tables side by side (the app, the bare relay, the direct baseline).
## `$(BIN)/python -m bench.relay --quick` is a one-minute smoke run; see bench/README.md.
bench: install-dev
	$(BIN)/python -m bench.relay

## What a 20,000-character streaming reply costs Chromium's main thread (busy share, longest task); ~1 minute.
## Postgres must run; it uses the database chat_bench_browser. See bench/README.md.
bench-browser: install-dev
	$(BIN)/python -m bench.browser

## Screenshots of the main screens into docs/screenshots/ (starts the app against the fake model server
## itself, with the database chat_screenshots). Chinese text needs a CJK font: apt-get install fonts-noto-cjk.
screenshots: install-dev
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) staticfiles db.sqlite3
