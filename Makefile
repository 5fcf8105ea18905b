# Two commands from a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH ?=
PYTEST_ARGS ?=

.PHONY: setup sysdeps demo up test test-fast bench faults soak lint schemas clean

# setup.py compiles models/fraud/_treeval.pyx and fuelcard/features.py (see there): rebuild when they change
$(STAMP): pyproject.toml setup.py models/fraud/_treeval.pyx fuelcard/features.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,flink]'
	bash infra/scripts/fetch-flink-jars.sh $(BIN)/python
	touch $(STAMP)

## setup: virtualenv with every Python dependency, plus the Debian packages the tests need
setup: $(STAMP) sysdeps

sysdeps:
	bash infra/scripts/install-system-deps.sh

## demo: the whole system on embedded defaults, bounded, exits 0
demo: setup
	$(BIN)/fuelcard demo

## up: the same system kept running until Ctrl-C
up: setup
	$(BIN)/fuelcard up

## test: the whole suite, integration tests included (they start their own services)
test: setup
	$(BIN)/python -m tests.run_suite $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m tests.run_suite -m "not integration and not slow" $(PYTEST_ARGS)

## bench: every benchmark, or one with BENCH=name
bench: setup
	$(BIN)/python -m benchmarks $(BENCH)

faults: setup
	$(BIN)/python -m benchmarks faults

soak: setup
	BENCH_SECONDS=$${BENCH_SECONDS:-1800} $(BIN)/python -m benchmarks soak

lint: $(STAMP)
	$(BIN)/ruff check .

schemas: $(STAMP)
	$(BIN)/fuelcard schemas --out schemas

clean:
	rm -rf var .pytest_cache
