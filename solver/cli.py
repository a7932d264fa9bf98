"""The ``isolimb`` command: ``check``, ``mesh`` and ``run`` a case.

Errors in the user's input (case file, mesh file, existing results) end every rank with one line on
standard error and exit status 2, never a traceback and never a hang.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mpi4py import MPI

from solver.case import CaseError, LimbMesh, load_case, resolved


class UsageError(RuntimeError):
    """A problem with the command line or the file system, reported in one line."""


def _say(comm: MPI.Comm, text: str) -> None:
    if comm.rank == 0:
        print(text, flush=True)


def refuse_if(comm: MPI.Comm, problem: str | None) -> None:
    """Raise :class:`UsageError` on every rank when rank 0 found ``problem``."""
    problem = comm.bcast(problem, root=0)
    if problem:
        raise UsageError(problem)


def cmd_check(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import meshing

    case = load_case(Path(args.case), comm)
    if isinstance(case.mesh, LimbMesh):
        error = None
        try:
            meshing.check_limb(case.mesh)
        except meshing.MeshError as err:
            error = f"{args.case}: {err}"
        if error:
            raise CaseError(error)
    _say(comm, f"# {args.case}: valid. Resolved to SI units:")
    _say(comm, "\n".join(resolved(case)))


def cmd_mesh(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import meshing

    case = load_case(Path(args.case), comm)
    out = Path(args.output) if args.output else Path(args.case) / "mesh"
    exists = comm.rank == 0 and (out / "mesh.xdmf").exists() and not args.force
    refuse_if(comm, f"{out}/mesh.xdmf exists; pass --force to overwrite it" if exists else None)
    start = time.perf_counter()
    tm = meshing.generate(case, comm)
    seconds = time.perf_counter() - start
    meshing.write_mesh(tm, out)
    stats = meshing.mesh_statistics(tm)
    stats["meshing_seconds"] = round(seconds, 2)
    _say(comm, json.dumps(stats, indent=2))
    _say(comm, f"wrote {out / 'mesh.xdmf'} (regions {sorted(tm.regions)}, boundaries {sorted(tm.boundaries)})")


def cmd_run(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver.simulation import run_case

    case = load_case(Path(args.case), comm)
    folder = Path(args.output) if args.output else Path(case.output.folder)
    occupied = comm.rank == 0 and folder.exists() and any(folder.iterdir()) and not args.force
    refuse_if(
        comm, f"results folder {folder} exists and is not empty; pass --force to overwrite it" if occupied else None
    )
    run_case(case, folder, comm, quiet=args.quiet, argv=sys.argv)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isolimb", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a case and print it resolved to SI units")
    c.add_argument("case", help="case folder (cases/<name>) or its case.toml")
    c.set_defaults(func=cmd_check)
    m = sub.add_parser("mesh", help="generate or import the case's mesh and write it as XDMF with tags")
    m.add_argument("case")
    m.add_argument("-o", "--output", help="folder for mesh.xdmf (default: CASE/mesh)")
    m.add_argument("--force", action="store_true", help="overwrite an existing mesh")
    m.set_defaults(func=cmd_mesh)
    r = sub.add_parser("run", help="simulate a case (run under mpiexec -n N for N ranks)")
    r.add_argument("case")
    r.add_argument("-o", "--output", help="results folder (default: the case's output.folder)")
    r.add_argument("--force", action="store_true", help="overwrite an existing results folder")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    from solver.meshing import MeshError

    comm = MPI.COMM_WORLD  # the only place the world communicator is taken
    args = parser().parse_args(argv)
    try:
        args.func(args, comm)
    except (CaseError, MeshError, UsageError) as err:
        # Input errors are raised on every rank (read on rank 0, broadcast); print once.
        if comm.rank == 0:
            print(f"isolimb: error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:
        # Unexpected failure on one rank: report and end all ranks rather than hang.
        print(f"isolimb: internal error on rank {comm.rank}: {type(err).__name__}: {err}", file=sys.stderr)
        if comm.size > 1:
            comm.Abort(3)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
