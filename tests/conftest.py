"""MPI-safe test fixtures: a temp folder shared by all ranks, garbage collection between tests."""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path

import pytest
from mpi4py import MPI

import solver  # noqa: F401  (loads MPI before dolfinx)

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"


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
