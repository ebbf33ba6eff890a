# Entry points for a fresh machine: `make demo`, `make test` and `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo` installs the demo's extra alone: a stamp of its own
DEMO_STAMP := $(VENV)/.installed-demo
PORT ?= 8080

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck pytest soak docs bench clean redis-server chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,test,docs,bench]'
	touch $(STAMP)

$(DEMO_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

# `make demo PORT=8081` serves on another port
demo: $(DEMO_STAMP)
	$(BIN)/python -m demo --host 127.0.0.1 --port $(PORT)

test: lint typecheck pytest docs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start their own redis-server processes; install it when missing.
redis-server:
	@command -v redis-server >/dev/null || { \
		echo "redis-server is missing: installing it with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	}

# The browser tests drive Debian's chromium with playwright (no browser
# download); install it when missing.
chromium:
	@command -v chromium >/dev/null || { \
		echo "chromium is missing: installing it with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	}

pytest: $(STAMP) redis-server chromium
	$(BIN)/pytest

# The long fault and soak runs (about a minute): many stalls and silent cuts.
soak: $(STAMP) redis-server
	$(BIN)/pytest -m soak --no-cov -s

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# The full benchmark suite (about 4 minutes); the tests run its smoke size.
bench: $(STAMP) redis-server
	$(BIN)/python -m pip install --quiet -e '.[bench-locks]'
	$(BIN)/python -m bench --out docs/benchmarks

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache .coverage
