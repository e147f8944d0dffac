# Clientflow: `make run` runs the whole system on the embedded broker and SQLite;
# `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-integration test-e2e clean help

help:
	@echo "make run     - install if needed, then run the whole system (embedded broker, SQLite)"
	@echo "make test    - install if needed, then run every test (unit, integration, end to end)"
	@echo "make clean   - remove the virtualenv and local data (.clientflow)"

# pyvenv.cfg, not bin/python: the latter is a symlink whose time is the system Python's.
$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/clientflow run

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests/integration $(PYTEST_ARGS)

test-e2e: install
	$(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .clientflow *.egg-info
