"""MPI-safe test fixtures: a temp folder shared by all ranks, garbage collection between tests."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mpi4py import MPI

import solver  # noqa: F401  (loads MPI before dolfinx)

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"
BIN = Path(sys.executable).parent


def isolimb_cli(*args: str, ranks: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    """``isolimb ARGS`` in a fresh process (under ``mpiexec -n ranks`` when ranks > 1), from the repository root,
    without the MPI environment of a test that itself runs under mpiexec."""
    command = [str(BIN / "isolimb"), *args]
    if ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(ranks), *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI", "HYDRA"))}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


@pytest.fixture
def shared_tmp(comm):
    """A temporary folder made on rank 0 and shared by every rank."""
    path = Path(tempfile.mkdtemp(prefix="isolimb-")) if comm.rank == 0 else None
    path = comm.bcast(path, root=0)
    yield path
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _collect(comm):
    yield
    gc.collect()
    comm.barrier()


def write_case(folder: Path, text: str) -> Path:
    """Write ``text`` as folder/case.toml (rank 0) and return the folder."""
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "case.toml").write_text(text)
    comm.barrier()
    return folder
