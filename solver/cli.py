"""The ``isolimb`` command: ``check``, ``mesh``, ``run``; ``report``, ``probe``, ``compare``; ``sweep``, ``collect``,
``calibrate``.

Errors in the user's input (case file, mesh file, existing results) end every rank with one line on
standard error and exit status 2, never a traceback and never a hang.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mpi4py import MPI

from solver import results
from solver.case import CaseError, load_case, resolved

RESULT_MARKERS = (results.RUN_LOG, results.SUMMARY, results.PROVENANCE)  # files only an isolimb results folder has
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped early with a checkpoint; run again with --resume


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
    case = load_case(Path(args.case), comm)  # every check of a run's start, the same as isolimb run makes
    _say(comm, f"# {args.case}: valid. Resolved to SI units:")
    _say(comm, "\n".join(resolved(case)))


def cmd_mesh(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import meshing
    from solver.storage import Storage, mesh_bytes

    case = load_case(Path(args.case), comm)
    out = Path(args.output) if args.output else Path(args.case) / "mesh"
    exists = comm.rank == 0 and (out / results.MESH).exists() and not args.force
    refuse_if(comm, f"{out}/mesh.xdmf exists; pass --force to overwrite it" if exists else None)
    refuse_if(comm, _folder_problem(out) if comm.rank == 0 else None)
    start = time.perf_counter()
    try:
        tm = meshing.generate(case, comm)
    except meshing.MeshError as err:
        raise _naming_the_case(args.case, err) from None
    seconds = time.perf_counter() - start
    stats = meshing.mesh_statistics(tm)
    storage = Storage(comm, out)  # HDF5 aborts on a full disk: room is checked first
    storage.check(mesh_bytes(int(stats["cells"]), int(stats["vertices"])), "mesh.xdmf")  # type: ignore[call-overload]
    meshing.write_mesh(tm, out)
    stats["meshing_seconds"] = round(seconds, 2)
    _say(comm, json.dumps(stats, indent=2))
    _say(comm, f"wrote {out / 'mesh.xdmf'} (regions {sorted(tm.regions)}, boundaries {sorted(tm.boundaries)})")


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written into (None when it can; made if missing); rank 0 only."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from solver.storage import describe

        err.filename = err.filename2 = None  # the folder is named already
        return f"cannot create folder {folder}: {describe(err)}"
    if not os.access(folder, os.W_OK):
        return f"cannot write in folder {folder}: not writable"
    return None


def _time_option(option: str, value: str | None) -> float | None:
    """A time given on the command line with its unit ("20 min"), in s."""
    from solver import units

    if value is None:
        return None
    try:
        seconds = units.TIME.to_si(value)
    except ValueError as err:
        raise UsageError(f"{option} {value!r}: {err}") from None
    if seconds <= 0:
        raise UsageError(f"{option} {value!r}: expected a positive time")
    return seconds


def _resume_problem(folder: Path, case) -> str | None:
    """Why ``folder`` cannot be resumed with ``case`` (None when it can); rank 0 only."""
    from solver import checkpoint

    if not any((folder / marker).exists() for marker in RESULT_MARKERS):
        return f"--resume {folder}: not an isolimb results folder (no run.log or summary.json)"
    path = checkpoint.find(folder)
    if path is None:
        finished = (folder / results.SUMMARY).exists()
        why = "the run finished (summary.json is there)" if finished else "the run wrote none"
        return f"--resume {folder}: no checkpoint to resume from ({why})"
    try:
        state = checkpoint.read_state(path)
    except (OSError, ValueError, checkpoint.CheckpointError) as err:
        return f"--resume {folder}: unreadable checkpoint: {err}"
    damaged = _damaged_arrays(path)
    if damaged:
        return f"--resume {folder}: unreadable checkpoint: {damaged}"
    differs = _first_difference(state["case"], json.loads(case.model_dump_json()), ("output", "folder"))
    if differs is not None:
        key, was, now = differs
        return f"--resume {folder}: the case differs from the one checkpointed at {key} (was {was!r}, now {now!r})"
    return None


def _damaged_arrays(path: Path) -> str | None:
    """The first array of a checkpoint that is missing, truncated or damaged (None when all open whole)."""
    for name in ("keys.npy", "x.npy", *sorted(p.name for p in path.glob("*.npy"))):
        try:  # a memory map checks the header and that the file holds every value it announces
            np.load(path / name, mmap_mode="r")
        except FileNotFoundError:
            return f"{path / name}: missing"
        except (OSError, ValueError, EOFError) as err:
            return f"{path / name}: truncated or damaged ({' '.join(str(err).split())})"
    return None


def _first_difference(a, b, ignore: tuple[str, ...], prefix: str = "") -> tuple[str, object, object] | None:
    """The first dotted key where two JSON trees differ, with both values (``ignore``: a key path to skip)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            path = f"{prefix}{key}"
            if tuple(path.split(".")) == ignore:
                continue
            found = _first_difference(a.get(key), b.get(key), ignore, f"{path}.")
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, ignore, f"{prefix}{i}.")
            if found is not None:
                return found
        return None
    return None if a == b else (prefix.rstrip(".") or "(case)", a, b)


@contextmanager
def owned(comm: MPI.Comm, folder: Path, command: str, create: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock (solver.lock) for the body: taken by rank 0, refusal raised on every rank."""
    from solver import lock

    problem, held = None, False
    if comm.rank == 0:
        try:
            held = lock.acquire(folder, command, create)
        except lock.LockError as err:
            problem = str(err)
    refuse_if(comm, problem)
    beat = lock.Heartbeat(folder) if held else None
    try:
        yield
    finally:
        if beat is not None:
            beat.stop()
        if comm.rank == 0 and held:
            lock.release(folder)


def cmd_run(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import checkpoint

    signals = checkpoint.StopFlag().install()  # from the start: a stop asked for while meshing or compiling is kept
    try:
        _run_command(args, comm, signals)
    finally:
        from solver import _early

        if not _early.IS_COMMAND:  # called in-process (tests): give the caller its handlers back; the program keeps
            signals.uninstall()  # them to its end, so that a late request is not the default action


def _run_command(args: argparse.Namespace, comm: MPI.Comm, signals) -> None:
    from solver.checkpoint import CheckpointError
    from solver.meshing import MeshError
    from solver.output import OutputError
    from solver.simulation import Stopping

    case = load_case(Path(args.case), comm)
    stopping = Stopping(
        checkpoint_interval=_time_option("--checkpoint-every", args.checkpoint_every),
        stop_at=_time_option("--stop-at", args.stop_at),
        signals=signals,
    )
    if args.resume is not None and (args.output is not None or args.force or args.continue_):
        raise UsageError("--resume continues its own folder: leave out -o/--output, --force and --continue")
    folder = Path(args.resume or args.output or case.output.folder)
    with owned(comm, folder, "isolimb run", create=args.resume is None):
        try:
            _run_in(args, comm, case, folder, stopping)
        except (MeshError, OutputError, CheckpointError) as err:  # the terminal's one line is run.log's last too
            err = _naming_the_case(args.case, err)
            if comm.rank == 0:
                _log_last_line(folder, f"isolimb: error: {err}")
            raise err from None


def _naming_the_case[E: Exception](case: str, err: E) -> E:
    """A mesh error found while meshing (gmsh, OpenCASCADE), prefixed with the case file it comes from."""
    from solver.meshing import MeshError

    source = Path(case) / "case.toml" if Path(case).is_dir() else Path(case)
    if isinstance(err, MeshError) and not str(err).startswith(str(source)):
        return type(err)(f"{source}: {err}")
    return err


def _log_last_line(folder: Path, line: str) -> None:
    """Append ``line`` to ``folder``'s run.log when the run made one (a full disk may refuse it: then the terminal
    alone says it)."""
    path = folder / results.RUN_LOG
    if not path.exists():
        return
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def _run_in(args: argparse.Namespace, comm: MPI.Comm, case, folder: Path, stopping) -> None:
    """``isolimb run`` into ``folder``, whose lock this command holds."""
    from solver import checkpoint, lock
    from solver.simulation import run_case

    source = Path(args.case) / "case.toml" if Path(args.case).is_dir() else Path(args.case)
    resume = args.resume is not None
    if args.continue_:  # a job that may run several times: finished -> nothing, stopped -> resume, else start
        state = None
        if comm.rank == 0:
            state = "finished" if (folder / results.SUMMARY).exists() else None
            state = state or ("stopped" if checkpoint.find(folder) is not None else None)
        state = comm.bcast(state, root=0)
        if state == "finished":
            _say(comm, f"isolimb: {folder} holds a finished run (--continue): nothing to do")
            return
        resume = state == "stopped"
        args.force = not resume  # a folder without checkpoint (killed before the first) is started again
    if resume:
        problem = _resume_problem(folder, case) if comm.rank == 0 else None
        refuse_if(comm, problem)
        restart = checkpoint.find(folder) if comm.rank == 0 else None
        restart = comm.bcast(restart, root=0)
        run_case(case, folder, comm, args.quiet, sys.argv, source, stopping, restart)
        return
    problem = None
    if comm.rank == 0 and any(p.name != lock.LOCK_NAME for p in folder.iterdir()):
        foreign = lock.foreign_entries(folder)
        if not args.force:
            problem = f"results folder {folder} exists and is not empty; pass --force to replace it"
        elif not any((folder / marker).exists() for marker in RESULT_MARKERS):
            problem = f"{folder} is not an isolimb results folder (no run.log or summary.json); not replacing it"
        elif foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            problem = f"{folder} holds files isolimb did not write ({shown}); not replacing it: move them away first"
        elif source.resolve().parent == folder.resolve():
            problem = (
                f"{source}: the case file is inside the results folder that --force would clear; copy it out first"
            )
        else:  # replace the old result whole: no stale fields or figures left beside the new ones
            lock.clear_results(folder)
    refuse_if(comm, problem)
    run_case(case, folder, comm, args.quiet, sys.argv, source, stopping)


def results_folder(comm: MPI.Comm, folder: str) -> Path:
    """A results folder written by ``isolimb run`` and not in use by another command (checked on rank 0, error on
    every rank)."""
    from solver import integrity, lock

    path = Path(folder)
    problem = None
    if comm.rank == 0:
        problem = integrity.results_problem(path) or lock.held_by_other(path)
    refuse_if(comm, problem)
    return path


def cmd_report(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import report

    folder = results_folder(comm, args.results)
    with owned(comm, folder, "isolimb report", create=False):  # writes report.html and figures/ into the folder
        problem = None
        if comm.rank == 0:  # serial post-processing of files
            try:
                path = report.build(folder)
                print(f"wrote {path}", flush=True)
            except (OSError, ValueError, KeyError) as err:  # damaged files the checks did not catch
                problem = f"{folder}: cannot write the report: {_one_line(err)}"
        refuse_if(comm, problem)


def cmd_compare(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import compare

    if len(args.results) < 2:
        raise UsageError(f"compare {' '.join(args.results)}: expected two or more results folders")
    folders = [results_folder(comm, f) for f in args.results]
    out = Path(args.output)
    exists = comm.rank == 0 and (out / results.COMPARE).exists() and not args.force
    refuse_if(comm, f"{out}/compare.html exists; pass --force to replace it" if exists else None)
    refuse_if(comm, _folder_problem(out) if comm.rank == 0 else None)
    problem = None
    if comm.rank == 0:  # serial post-processing of files
        try:
            text, path = compare.compare(folders, out)
            print(text)
            print(f"\nwrote {path}", flush=True)
        except (OSError, ValueError, KeyError) as err:  # damaged files the checks did not catch
            problem = f"compare: {_one_line(err)}"
    refuse_if(comm, problem)


def _one_line(err: BaseException) -> str:
    """An exception as one line: its text, or its kind when it has none."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if isinstance(err, KeyError) or not text else text


def cmd_sweep(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import sweep

    out = Path(args.output)
    problem = None
    if comm.rank == 0:
        try:
            if out.exists() and any(out.iterdir()):
                if not args.force:
                    raise sweep.SweepError(f"{out} exists and is not empty; pass --force to replace it")
                if not (out / results.RUNS).exists():
                    raise sweep.SweepError(f"{out} is not an isolimb sweep folder (no runs.csv); not replacing it")
                shutil.rmtree(out)
            runs = sweep.expand(Path(args.spec), out)
            print(f"wrote {len(runs)} cases into {out}/cases, {out}/runs.csv")
            print(f"submit: cd {out} && sbatch sweep.sbatch    (no SLURM: {out}/run_local.sh)")
            print(f"then:   isolimb collect {out}")
        except sweep.SweepError as err:
            problem = str(err)
        except OSError as err:  # a full disk, a read-only folder, a file where a folder should be
            from solver.storage import describe

            problem = f"sweep -o {out}: {describe(err)}"
    refuse_if(comm, problem)


def cmd_converge(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """Prepare the study's sweeps (rank 0), run what is unfinished at this rank count, tabulate and plot."""
    from solver import converge
    from solver.simulation import run_case

    out = Path(args.output) if args.output else Path("results") / f"converge-{Path(args.case).resolve().name}"
    factors = [float(f) for f in args.factors.split(",")] if args.factors else None
    problem = None
    if comm.rank == 0 and not args.collect:
        try:
            converge.prepare(
                Path(args.case),
                out,
                factors,
                args.levels,
                args.ratio,
                0 if args.no_time else 3,
                args.ranks,
                args.time,
                args.refine,
            )
        except (converge.ConvergeError, ValueError) as err:
            problem = str(err)
    refuse_if(comm, problem)
    if args.prepare:
        folders = ", ".join(str(out / name) for name in converge.SWEEPS if (out / name).is_dir())
        _say(comm, f"prepared {folders}: in each, sbatch sweep.sbatch (or ./run_local.sh);")
        _say(comm, f"then: isolimb converge {args.case} -o {out} --collect")
        return
    if not args.collect:
        todo = comm.bcast(converge.pending(out) if comm.rank == 0 else None, root=0)
        for i, case_dir in enumerate(todo):
            case = load_case(case_dir, comm)
            _say(comm, f"[{i + 1}/{len(todo)}] {case.title}")
            run_case(case, Path(case.output.folder), comm, quiet=True, argv=sys.argv, source=case_dir / "case.toml")
    text = None
    if comm.rank == 0:
        try:
            text, written = converge.report(out)
            text += "\nwrote " + ", ".join(str(p) for p in written)
        except converge.ConvergeError as err:
            problem = str(err)
    refuse_if(comm, problem)
    _say(comm, text or "")


def cmd_collect(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import sweep

    problem = None
    if comm.rank == 0:
        try:
            done = sweep.collect(Path(args.folder))
            print(f"wrote {done.csv} and {len(done.plots)} plot(s)")
            if done.sensitivity is not None:
                csv_md = " and ".join(done.sensitivity.with_suffix(x).name for x in (".csv", ".md"))
                print(f"wrote {done.sensitivity}, {csv_md}")
            for note in done.notes:
                print(f"isolimb: note: {note}", file=sys.stderr)
            missing = done.missing
            if missing:
                print(f"isolimb: warning: {len(missing)} run(s) not finished: {', '.join(missing)}", file=sys.stderr)
        except sweep.SweepError as err:
            problem = str(err)
        except OSError as err:
            from solver.storage import describe

            problem = f"collect {args.folder}: {describe(err)}"
    refuse_if(comm, problem)


def cmd_calibrate(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import calibrate

    problem = None
    if comm.rank == 0:
        try:
            out = Path(args.output) if args.output else None
            if out is not None:
                problem = _folder_problem(out)
            if problem is None:
                result, md = calibrate.calibrate(Path(args.spec), out)
                print(md.read_text())
                print(f"wrote {md} and {md.with_name('calibration.json')}", flush=True)
                if result["effective_samples"] < 200:
                    print(
                        f"isolimb: warning: only {result['effective_samples']:.0f} effective posterior samples: "
                        "raise samples",
                        file=sys.stderr,
                    )
        except calibrate.CalibrationError as err:
            problem = str(err)
    refuse_if(comm, problem)


def cmd_probe(args: argparse.Namespace, comm: MPI.Comm) -> None:
    from solver import probe, units

    folder = results_folder(comm, args.results)
    try:
        if (args.point is None) == (args.line is None):
            raise probe.ProbeError("give exactly one of --point X,Y,Z or --line X0,Y0,Z0:X1,Y1,Z1")
        points = probe.parse_point(args.point)[None, :] if args.point else probe.line_points(args.line, args.n)
        time_s = units.TIME.to_si(args.time) if args.time is not None else None
    except ValueError as err:  # ProbeError included
        raise UsageError(f"probe {args.results}: {err}") from None
    try:
        t, values = probe.probe(comm, folder, args.field, points, time_s)
    except probe.ProbeError as err:
        raise UsageError(str(err)) from None
    if comm.rank != 0:
        return
    columns = [args.field] if values.shape[1] == 1 else [f"{args.field}_{c}" for c in "xyz"[: values.shape[1]]]
    distance = np.linalg.norm(points - points[0], axis=1)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["time_min", "x_m", "y_m", "z_m", "s_m", *columns])
    for p, s, v in zip(points, distance, values, strict=True):
        out.writerow([f"{t / 60:.6g}", *(f"{c:.9g}" for c in p), f"{s:.9g}", *(f"{c:.9g}" for c in v)])
    outside = int(np.isnan(values[:, 0]).sum())
    if outside:
        print(f"isolimb: warning: {outside} of {len(points)} points lie outside the mesh (nan)", file=sys.stderr)


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
    r.add_argument("--force", action="store_true", help="replace an existing results folder (isolimb's own only)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    r.add_argument("--resume", metavar="RESULTS", help="continue a stopped run from RESULTS/checkpoint")
    r.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="for jobs that may run again: resume the results folder's checkpoint if it has one, do nothing if it "
        "holds a finished run, start (replacing an isolimb folder) otherwise",
    )
    r.add_argument(
        "--checkpoint-every", metavar="TIME", help='write a checkpoint every TIME of simulated time, e.g. "10 min"'
    )
    r.add_argument(
        "--stop-at", metavar="TIME", help='write a checkpoint and stop at simulated time TIME, e.g. "30 min"'
    )
    r.set_defaults(func=cmd_run)
    rp = sub.add_parser("report", help="write RESULTS/report.html: case, outcomes, plots, balance, provenance")
    rp.add_argument("results", help="a results folder written by isolimb run")
    rp.set_defaults(func=cmd_report)
    cp = sub.add_parser("compare", help="outcomes side by side and overlaid time series of several results")
    cp.add_argument("results", nargs="+", help="two or more results folders")
    cp.add_argument("-o", "--output", default="results/compare", help="folder for compare.html and its pictures")
    cp.add_argument("--force", action="store_true", help="replace an existing compare.html")
    cp.set_defaults(func=cmd_compare)
    sw = sub.add_parser(
        "sweep", help="expand a design (grid, lhs, sobol, saltelli, morris) into cases and a SLURM job array"
    )
    sw.add_argument("spec", help="sweep spec (TOML: base, ranks, time, launcher, [design], [parameters])")
    sw.add_argument("-o", "--output", required=True, help="folder for cases/, runs.csv, sweep.sbatch")
    sw.add_argument("--force", action="store_true", help="replace an existing sweep folder")
    sw.set_defaults(func=cmd_sweep)
    cv = sub.add_parser(
        "converge", help="discretisation-error study: the case at 3+ mesh levels and dt, dt/2, dt/4; Richardson table"
    )
    cv.add_argument("case")
    cv.add_argument("-o", "--output", help="study folder (default: results/converge-<case name>)")
    cv.add_argument("--factors", help="mesh size factors, e.g. 2.5,1.8,1.3 (default: the case's, then / ratio)")
    cv.add_argument("--levels", type=int, default=3, help="mesh levels without --factors (default 3)")
    cv.add_argument("--ratio", type=float, default=1.4, help="size ratio between mesh levels (default 1.4)")
    cv.add_argument(
        "--refine", type=int, default=0, help="finer levels by parallel uniform refinement of the finest (default 0)"
    )
    cv.add_argument("--no-time", action="store_true", help="no time-step study")
    cv.add_argument("--prepare", action="store_true", help="only write the sweeps (SLURM: sbatch each sweep.sbatch)")
    cv.add_argument("--collect", action="store_true", help="only tabulate finished runs")
    cv.add_argument("--ranks", type=int, default=1, help="MPI ranks per run in the SLURM array (default 1)")
    cv.add_argument("--time", default="01:00:00", help="SLURM wall time per run (default 01:00:00)")
    cv.set_defaults(func=cmd_converge)
    co = sub.add_parser(
        "collect",
        help="gather a sweep's summaries into collected.csv and plots; sensitivity indices of a sampled design",
    )
    co.add_argument("folder", help="a folder written by isolimb sweep")
    co.set_defaults(func=cmd_collect)
    ca = sub.add_parser(
        "calibrate", help="fit a sampled sweep's parameters to targets over an emulator; predict held-back targets"
    )
    ca.add_argument("spec", help="calibration spec (TOML: sweep, samples, seed, [[targets]])")
    ca.add_argument("-o", "--output", help="folder for calibration.json and calibration.md (default: the sweep's)")
    ca.set_defaults(func=cmd_calibrate)
    pr = sub.add_parser("probe", help="field values at a point or along a line, as CSV on standard output")
    pr.add_argument("results")
    pr.add_argument("--field", required=True, help="array name, e.g. T_degC or AUC_melphalan_mg_min_per_L")
    pr.add_argument("--point", help="x,y,z in metres (--point=-1,0,0 when it starts with a minus)")
    pr.add_argument("--line", help="x0,y0,z0:x1,y1,z1 in metres (write --line=-1,... when it starts with a minus)")
    pr.add_argument("--n", type=int, default=50, help="points along --line, ends included (default 50)")
    pr.add_argument("--time", help='output time with its unit, e.g. "30 min" (default: the last; nearest is used)')
    pr.set_defaults(func=cmd_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    from solver.checkpoint import CheckpointError, RunStopped
    from solver.meshing import MeshError
    from solver.output import OutputError
    from solver.physics.linear import SolveError

    comm = MPI.COMM_WORLD  # the only place the world communicator is taken
    args = parser().parse_args(argv)
    if args.func is not cmd_run:  # only a run stops with a checkpoint: the others end as a signal ends them
        from solver import _early

        _early.replay()
    try:
        args.func(args, comm)
    except RunStopped:  # on request, with a checkpoint; the log said where
        return EXIT_STOPPED
    except (CaseError, MeshError, UsageError, CheckpointError, OutputError) as err:
        # Input errors are raised on every rank (read on rank 0, broadcast); print once.
        if comm.rank == 0:
            print(f"isolimb: error: {err}", file=sys.stderr, flush=True)
        return 2
    except SolveError as err:  # every rank gives up at the same step: one line, the time, equation and reason
        if comm.rank == 0:
            print(f"isolimb: the solver gave up: {err}", file=sys.stderr, flush=True)
        return 1
    except OSError as err:  # an I/O error no writer caught (raised on this rank alone): one line, end every rank
        from solver.storage import describe

        print(f"isolimb: error: {describe(err)}", file=sys.stderr, flush=True)
        if comm.size > 1:
            comm.Abort(2)
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
