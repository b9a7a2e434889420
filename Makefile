# One command each on a fresh clone: the first target that needs the virtualenv creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Runtime + dev dependencies, every version and file hash pinned (make lock regenerates it).
DEV_LOCK := requirements-dev.lock

.PHONY: venv test lint demo bench clean chart-test lock

# Re-installs when the lock or pyproject.toml changes: the locked set with its hashes checked,
# then the project itself without dependencies (it brings none of its own), then pip check
# (fails if pyproject.toml asks for something the lock does not provide: run make lock).
$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests
	$(BIN)/ruff format --check reconciler tests
	$(BIN)/mypy

chart-test: $(STAMP)
	VENV=$(VENV) scripts/chart-test.sh

# Regenerates requirements.lock and requirements-dev.lock from pyproject.toml (needs the
# network); KEEP=1 keeps the current pins where pyproject.toml still allows them. Needs only
# uv from the current dev lock, not the full install: that one fails pip check while
# pyproject.toml asks for something the lock does not have yet.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	VENV=$(VENV) KEEP=$(KEEP) scripts/lock.sh

demo: $(STAMP)
	$(BIN)/reconciler demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
