"""What produced a result: software versions, the machine, the command, solver settings and costs.

Written as ``provenance.json`` in every results folder, next to ``case_resolved.json`` (the case in SI units).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_revision(root: Path = PACKAGE_ROOT) -> dict[str, object] | None:
    """Commit of the isolimb source tree and whether it had uncommitted changes (None outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, object]:
    """Versions of isolimb and the stack under it (dolfinx's git hash is empty in the wheel: use its version)."""
    from petsc4py import PETSc

    return {
        "isolimb": _version("isolimb"),
        "isolimb_git": git_revision(),
        "dolfinx-solver-real": _version("dolfinx-solver-real"),
        "fenics-dolfinx": __import__("dolfinx").__version__,
        "fenics-basix": _version("fenics-basix"),
        "fenics-ffcx": _version("fenics-ffcx"),
        "fenics-ufl": _version("fenics-ufl"),
        "petsc": ".".join(str(v) for v in PETSc.Sys.getVersion()),
        "petsc4py": __import__("petsc4py").__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi4py": _version("mpi4py"),
        "gmsh": _version("gmsh"),
        "python": sys.version.split()[0],
    }


def now() -> str:
    """UTC time stamp, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def provenance(comm: MPI.Comm, started: str, argv: list[str], solvers: dict[str, dict], run: dict) -> dict:
    """Everything needed to say later what produced a result (the caller adds mesh and timing facts in ``run``)."""
    return {
        "started_utc": started,
        "finished_utc": now(),
        "command": argv,
        "ranks": comm.size,
        "host": platform.node(),
        "platform": platform.platform(),
        "versions": versions(),
        "solvers": solvers,
        **run,
    }
