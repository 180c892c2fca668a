# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,examples,azure,s3,ray,dashboard
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all test-slow check lint types bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	# --compile-bytecode: with PYTHONDONTWRITEBYTECODE=1 (CI images, containers) or a read-only
	# site-packages, every process would otherwise compile pandas & co. again (seconds per command).
	$(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode -e ".[$(EXTRAS)]"
	$(BIN)/python -m compileall -q src  # our own modules: an editable install is not compiled
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	cd examples/mnist && ../../$(BIN)/python make_data.py && ../../$(BIN)/parallelrun run job.yml && ../../$(BIN)/python check_accuracy.py

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)  # also the tests marked slow (exhaustive variants)
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP)  # only the tests marked slow (CI runs them after make test)
	$(BIN)/python -m pytest -q --durations=15 -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests

types: $(STAMP)
	$(BIN)/mypy src

check: lint types test

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.startup

clean:
	rm -rf $(VENV) .parallelrun examples/*/data examples/*/out examples/*/models
