# isolimb: two commands on a fresh machine.
#   make run   builds .venv if missing, then meshes and simulates the default case
#   make test  builds .venv if missing, then lint, serial tests and 2-rank MPI tests
PYTHON ?= $(shell command -v python3.12 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
CASE ?= cases/ilp-tm-sarcoma-leg
NP ?= 2
export OMP_NUM_THREADS := 1

.PHONY: run test lint test-serial test-mpi clean synthetic-leg example paraview-trixie

# A download cut off mid-wheel (seen once on CI: vtk, 140 MB, stuck at 24 MB through pip's own resumes) must not fail
# the build: pip resumes a cut download up to 20 times, and the whole install is tried PIP_TRIES times, waiting
# 30 s, 60 s, ... between tries; the wheels it finished downloading stay in pip's cache.
PIP_TRIES ?= 4
PIP := $(BIN)/python -m pip install --quiet --retries 10
define retry
for try in $$(seq 1 $(PIP_TRIES)); do \
  $(1) && exit 0; \
  [ $$try -lt $(PIP_TRIES) ] && { echo "pip failed (try $$try of $(PIP_TRIES)); trying again in $$((30 * try)) s" >&2; sleep $$((30 * try)); }; \
done; echo "pip failed $(PIP_TRIES) times: is PyPI reachable?" >&2; exit 1
endef

$(BIN)/isolimb: pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@$(call retry,$(PIP) --upgrade pip)
	@$(call retry,$(PIP) --resume-retries 20 -e ".[dev]")
	@touch $@

run: $(BIN)/isolimb
	$(BIN)/isolimb check $(CASE) > /dev/null
	$(BIN)/mpiexec -n $(NP) $(BIN)/isolimb run $(CASE) --force

# The example of a mesh from a labelled image (cases/ilp-synthetic-leg-image/README.md): make the image, then run.
meshes/synthetic-leg.nii.gz: meshes/synthetic_leg.py $(BIN)/isolimb
	$(BIN)/python meshes/synthetic_leg.py -o $@

synthetic-leg: meshes/synthetic-leg.nii.gz

example: meshes/synthetic-leg.nii.gz
	$(BIN)/isolimb check cases/ilp-synthetic-leg-image > /dev/null
	$(BIN)/mpiexec -n $(NP) $(BIN)/isolimb run cases/ilp-synthetic-leg-image --force

# ParaView 5.13 (Debian trixie, with ADIOS2) in a chroot under .cache/ for the tests that open VTX and VTKHDF:
# root, about 3 min and 2.3 GB once; then the tests find it (tests/paraview/trixie.sh).
paraview-trixie:
	tests/paraview/trixie.sh build

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
