# isolimb: two commands on a fresh machine.
#   make run   builds .venv if missing, then meshes and simulates the default case
#   make test  builds .venv if missing, then lint, serial tests and 2-rank MPI tests
PYTHON ?= $(shell command -v python3.12 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
CASE ?= cases/ilp-tm-sarcoma-leg
NP ?= 2
export OMP_NUM_THREADS := 1

.PHONY: run test lint test-serial test-mpi clean

$(BIN)/isolimb: pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

run: $(BIN)/isolimb
	$(BIN)/isolimb check $(CASE) > /dev/null
	$(BIN)/mpiexec -n $(NP) $(BIN)/isolimb run $(CASE) --force

lint: $(BIN)/isolimb
	$(BIN)/ruff check solver tests
	$(BIN)/ruff format --check solver tests
	$(BIN)/mypy

# A hang (ranks disagreeing about a collective) must fail the run, not eat CI's time: bound each phase.
test-serial: $(BIN)/isolimb
	timeout 1500 $(BIN)/python -m pytest -q

test-mpi: $(BIN)/isolimb
	timeout 1500 $(BIN)/mpiexec -n 2 $(BIN)/python -m pytest -q -m "not serial" -p no:cacheprovider tests

test: lint test-serial test-mpi

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
