# vitcube: `make demo` runs the whole mission, `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on a CPU box; on a GPU box use the CUDA build of the same release, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-dev browser demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the dashboard's browser tests (Playwright drives /usr/bin/chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

demo: install
	$(BIN)/vitcube demo

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite on TEST_PROCESSES processes (pytest-xdist), one test file per process at a time so a
# file's module fixtures (servers, databases) are built once (tests/conftest.py hands the slowest
# files out first and splits three by backend); TEST_PROCESSES=0 runs it in one. The 25 slowest
# tests are listed at the end.
# The schemathesis fuzz runs in its own pass, without -n: its cases (one per operation) share
# one node id, and xdist, which schedules by id, ran one of them and silently dropped the rest.
TEST_PROCESSES ?= 2
FUZZ_TESTS := tests/service/test_fuzz.py
test: install-dev browser lint
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --durations 25 --ignore $(FUZZ_TESTS)
	$(BIN)/pytest $(FUZZ_TESTS)

# Quick runs of every benchmark (see benchmarks/README.md for the full ones).
bench: install-dev
	$(BIN)/python benchmarks/bench_macs.py
	$(BIN)/python benchmarks/bench_search_latency.py --quick
	$(BIN)/python benchmarks/bench_search_quality.py --quick
	$(BIN)/python benchmarks/bench_train_throughput.py --tiny
	$(BIN)/python benchmarks/bench_service_throughput.py --seconds 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache test-output
