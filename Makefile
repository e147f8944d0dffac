# Clientflow: `make run` runs the whole system on the embedded broker and SQLite;
# `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

ASYNCAPI_SPECS := 6.11.1
ASYNCAPI_SCHEMA := $(VENV)/share/asyncapi-specs-$(ASYNCAPI_SPECS)/package/schemas/3.0.0-without-$$id.json
COMPOSE := docker compose -f deploy/compose.yaml --env-file deploy/.env

.PHONY: secrets install tools lint format run test test-unit test-integration test-e2e reliability bench docs up down clean help demo demo-stop

help:
	@echo "make run     - install if needed, then run the whole system (embedded broker, SQLite)"
	@echo "make test    - install if needed, lint and type-check, then run every test (unit, integration, end to end)"
	@echo "make lint    - ruff (lint and format check) and mypy, as configured in pyproject.toml"
	@echo "make format  - ruff format and ruff's safe fixes"
	@echo "make reliability - failure scenarios at full scale; writes reports/reliability.md"
	@echo "make bench   - benchmark against the raw broker and database limits; writes reports/bench/"
	@echo "make docs    - regenerate docs/ (event catalogue, AsyncAPI, OpenAPI) and validate the AsyncAPI"
	@echo "make secrets - write deploy/.env with fresh random secrets (once, before make up)"
	@echo "make up/down - the compose stack in deploy/ (Kafka, PostgreSQL, Prometheus, Grafana, mail)"
	@echo "make demo    - run the system on the simulated clock in the background, simulate a year of an agency, leave it running"
	@echo "make clean   - remove the virtualenv and local data (.clientflow)"

# pyvenv.cfg, not bin/python: the latter is a symlink whose time is the system Python's.
$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Checkers the tests use: promtool and prometheus (Debian's package), the official AsyncAPI
# JSON schema (the @asyncapi/specs npm package), and Debian's chromium for the console's
# browser tests (Playwright drives it; no browser is downloaded).
tools: install $(ASYNCAPI_SCHEMA)
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package (promtool)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium (the console's browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

$(ASYNCAPI_SCHEMA):
	mkdir -p $(VENV)/share/asyncapi-specs-$(ASYNCAPI_SPECS)
	cd $(VENV)/share/asyncapi-specs-$(ASYNCAPI_SPECS) && npm pack --silent @asyncapi/specs@$(ASYNCAPI_SPECS) >/dev/null && tar xzf asyncapi-specs-$(ASYNCAPI_SPECS).tgz

run: install
	$(BIN)/clientflow run

# A year of an agency (clientflow simulate) on a system left running for a look afterwards.
DEMO_DIR ?= .clientflow
DEMO_ARGS ?= --months 12 --seed 42 --leads-per-month 30
demo: install
	@mkdir -p $(DEMO_DIR)
	@if [ -f $(DEMO_DIR)/demo.pid ] && kill -0 $$(cat $(DEMO_DIR)/demo.pid) 2>/dev/null; then \
	  echo "the demo system is already running (pid $$(cat $(DEMO_DIR)/demo.pid))"; \
	else \
	  CLIENTFLOW_CLOCK=simulated CLIENTFLOW_DATA_DIR=$(DEMO_DIR) nohup $(BIN)/clientflow run >$(DEMO_DIR)/demo.log 2>&1 & \
	  echo $$! >$(DEMO_DIR)/demo.pid; echo "starting the system (log $(DEMO_DIR)/demo.log)"; \
	fi
	@for i in $$(seq 1 360); do grep -q "Clientflow is up" $(DEMO_DIR)/demo.log && break; \
	  kill -0 $$(cat $(DEMO_DIR)/demo.pid) 2>/dev/null || { tail -20 $(DEMO_DIR)/demo.log; exit 1; }; sleep 0.5; done
	@grep -q "Clientflow is up" $(DEMO_DIR)/demo.log || { echo "not up after 3 minutes; see $(DEMO_DIR)/demo.log"; exit 1; }
	CLIENTFLOW_DATA_DIR=$(DEMO_DIR) $(BIN)/clientflow simulate $(DEMO_ARGS) --bootstrap $$(sed -n 's/^broker: //p' $(DEMO_DIR)/demo.log | tail -1)
	@echo; echo "The system keeps running (pid $$(cat $(DEMO_DIR)/demo.pid), log $(DEMO_DIR)/demo.log):"
	@grep -E "^  (leads|nurture|billing|retention) " $(DEMO_DIR)/demo.log
	@echo "  try: curl -s http://127.0.0.1:8004/economics; curl -s http://127.0.0.1:8001/funnel; curl -s 'http://127.0.0.1:8004/clients?tier=fire'"
	@echo "  metrics for dashboards at /metrics on each; stop it with: make demo-stop (or kill $$(cat $(DEMO_DIR)/demo.pid))"

demo-stop:
	@if [ -f $(DEMO_DIR)/demo.pid ] && kill -0 $$(cat $(DEMO_DIR)/demo.pid) 2>/dev/null; then \
	  kill $$(cat $(DEMO_DIR)/demo.pid); \
	  for i in $$(seq 1 60); do kill -0 $$(cat $(DEMO_DIR)/demo.pid) 2>/dev/null || break; sleep 0.5; done; \
	  echo "demo stopped"; \
	else echo "no demo running"; fi
	@rm -f $(DEMO_DIR)/demo.pid

# Lint and types first: a style or type error fails the build before the tests start.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: tools lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not full_only" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests/integration $(PYTEST_ARGS)

test-e2e: tools
	$(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

# Failure scenarios at full scale on real processes; the figures go to reports/reliability.md.
reliability: tools
	@mkdir -p reports && rm -f reports/poison-property.md
	POISON_EXAMPLES=100 POISON_EVIDENCE=reports/poison-property.md $(BIN)/python -m pytest -q -p no:xdist tests/integration/test_poison_property.py
	RELIABILITY_SCALE=full $(BIN)/python -m pytest -q -p no:xdist tests/reliability $(PYTEST_ARGS)
	@cat reports/reliability.md reports/poison-property.md

# Throughput, latency, memory and growth against the raw broker and database limits, measured
# in one run (about ten minutes); reports/bench/bench.{json,md,png}. `--quick` for a short run.
bench: install
	BENCH_POSTGRES_URL="$${BENCH_POSTGRES_URL-postgresql+asyncpg://postgres@127.0.0.1:5432/test}" \
	  $(BIN)/python -m bench --out reports/bench
	@echo "publish: cp reports/bench/bench.json reports/bench/bench.md reports/bench/bench.png reports/bench/flame-*.svg docs/bench/"

docs: tools
	$(BIN)/clientflow docs
	$(BIN)/check-jsonschema --schemafile '$(ASYNCAPI_SCHEMA)' docs/asyncapi.json
	$(BIN)/python deploy/grafana/dashboards.py

# Fresh random secrets for the compose stack, from the documented example (kept if present).
secrets: deploy/.env
deploy/.env: deploy/.env.example
	@if [ -f $@ ]; then echo "$@ exists; remove it to make new secrets"; else \
	  $(PYTHON) -c "import secrets,sys; print(''.join(l.replace('change-me', secrets.token_urlsafe(32)) for l in open(sys.argv[1])), end='')" $< > $@ \
	  && chmod 600 $@ && echo "wrote $@ (keep it out of git)"; fi

up: deploy/.env
	$(COMPOSE) up -d --build --wait

down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .clientflow *.egg-info
