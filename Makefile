# Two set-up commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
OBP_CACHE ?= .cache/wheels
# The Open Bandit Dataset sample ships inside the obp wheel (obp itself does not install on Python >= 3.11).
OBP_WHEEL  = $(OBP_CACHE)/obp-0.4.1-py3-none-any.whl

.PHONY: install demo test test-all bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first: pinning it here takes the local CPU build instead of several GB of CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

$(OBP_WHEEL): $(BIN)/python
	$(BIN)/pip download --quiet obp==0.4.1 --no-deps -d $(OBP_CACHE)

demo: $(STAMP)
	$(BIN)/campaign demo

test: $(STAMP) $(OBP_WHEEL)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Everything, including the slow scale runs excluded from `make test`.
test-all: $(STAMP) $(OBP_WHEEL)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP) $(OBP_WHEEL)
	$(BIN)/pip install --quiet -e ".[dev,bench]" || echo "bench extra: some peer libraries failed to install"
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis mlflow.db mlartifacts demo-output
