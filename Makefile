# Two commands do everything on a fresh machine with Python 3.11:
#   make repro   set up .venv and run the whole DVC pipeline on the embedded dataset
#   make test    set up .venv and run the test suite
# Also: make lint (ruff), make bench (benchmarks/, writing reports/bench/), make clean-venv.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# OMP_WAIT_POLICY is left at OpenMP's default (spin briefly, then sleep): with PASSIVE every torch op wakes a
# sleeping thread and a CPU training step is 1.27x slower (reports/bench/step_profile*.json, docs/performance.md).

.PHONY: repro test lint bench clean-venv

$(BIN)/rrm: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[pipeline,dev]'
	touch $@

repro: $(BIN)/rrm
	PATH="$(abspath $(BIN)):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro

test: $(BIN)/rrm
	PATH="$(abspath $(BIN)):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/pytest -q

lint: $(BIN)/rrm
	$(BIN)/ruff check rrm stages tests benchmarks

bench: $(BIN)/rrm
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
