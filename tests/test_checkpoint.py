"""Checkpoint and restart (issue 5): a run stopped midway and resumed ends with the same functionals and files
as an uninterrupted run, at the same and at another rank count; SIGUSR1 stops a run with a checkpoint; wrong
resumes are refused in one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from dolfinx import fem, mesh
from mpi4py import MPI

from solver import checkpoint, cli, results
from solver.case import parse_case, parse_case_tree
from solver.checkpoint import CheckpointError, NodalSpace, RunStopped
from solver.simulation import Stopping, run_case
from solver.vtkhdf import VTKHDFSeries
from tests.conftest import CASES, ROOT

BIN = Path(sys.executable).parent
SMALL = CASES / "student-small" / "case.toml"


def _functionals(summary: dict, prefix: str = "") -> dict[str, float]:
    """Every number of summary.json that is a result (not a timing, count or rank number), by dotted key."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_functionals(value, f"{path}."))
        elif isinstance(value, float) and not any(s in path for s in ("seconds", "krylov", "relative_error")):
            out[path] = value
    return out


def _assert_same_results(a: Path, b: Path, rel: float) -> None:
    sa, sb = (json.loads((f / results.SUMMARY).read_text()) for f in (a, b))
    fa, fb = _functionals(sa), _functionals(sb)
    assert set(fa) == set(fb)
    assert len(fa) > 30
    for key, value in fa.items():
        assert fb[key] == pytest.approx(value, rel=rel, abs=1e-30), key
    assert sa["steps"] == sb["steps"]
    assert sb["drug_balance_relative_error"] < 1e-10
    rows_a, rows_b = (list(csv.DictReader((f / results.SERIES).open())) for f in (a, b))
    assert [r["time_min"] for r in rows_a] == [r["time_min"] for r in rows_b]  # nothing lost, nothing twice
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ra:
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=rel, abs=1e-9), (ra["time_min"], key)
    va, vb = VTKHDFSeries(a / results.FIELDS_VTKHDF), VTKHDFSeries(b / results.FIELDS_VTKHDF)
    assert np.array_equal(va.times, vb.times)
    assert np.array_equal(va.points(), vb.points())  # input order: the same file layout at any rank count
    for name in va.point_names:
        x, y = va.point_data(name, -1), vb.point_data(name, -1)
        assert np.abs(x - y).max() <= rel * max(1.0, np.abs(x).max()), name


def _small_ili():
    """The ILI case (two agents, metabolism, flush), shortened to keep the test quick."""
    raw = tomllib.loads((CASES / "ili-melanoma-leg" / "case.toml").read_text())
    p = raw["protocol"]
    p["perfusion_duration"], p["end_time"] = "20 min", "25 min"
    return parse_case_tree(raw, CASES / "ili-melanoma-leg" / "case.toml")


@pytest.mark.parametrize("which", ["student-small", "ili"])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(comm, shared_tmp, which):
    case = parse_case(SMALL) if which == "student-small" else _small_ili()
    whole, pieces = shared_tmp / "whole", shared_tmp / "pieces"
    run_case(case, whole, comm, quiet=True)
    stop = Stopping(checkpoint_interval=10 * 60.0, stop_at=17 * 60.0)
    with pytest.raises(RunStopped) as stopped:
        run_case(case, pieces, comm, quiet=True, stopping=stop)
    assert stopped.value.t == pytest.approx(17 * 60.0)
    assert not (pieces / results.SUMMARY).exists()
    state = checkpoint.read_state(pieces / "checkpoint")
    assert state["time"] == pytest.approx(17 * 60.0) and state["ranks"] == comm.size
    run_case(case, pieces, comm, quiet=True, restart=pieces / "checkpoint")
    _assert_same_results(whole, pieces, rel=1e-6)
    summary = json.loads((pieces / results.SUMMARY).read_text())
    assert [s["to_min"] for s in summary["segments"]] == pytest.approx([17.0, case.protocol.end_time / 60])
    assert not (pieces / "checkpoint").exists()  # a finished run has nothing to resume
    assert "resumed at t = 17.0 min" in (pieces / results.RUN_LOG).read_text()


def _cli(args: list[str], ranks: int = 1, **kwargs) -> subprocess.CompletedProcess:
    command = [str(BIN / "isolimb"), *args]
    if ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, **kwargs)


@pytest.mark.serial
def test_sigusr1_stops_a_two_rank_run_which_resumes_on_one_rank(tmp_path):
    """SIGUSR1 to mpiexec (as SLURM's --signal sends it) stops both ranks at the same step with a checkpoint and
    exit status 75; the run continues on one rank and ends as an uninterrupted run does."""
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert _cli(["run", str(SMALL), "-o", str(whole), "-q"]).returncode == 0
    log = pieces / results.RUN_LOG
    command = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "isolimb"), "run", str(SMALL), "-o", str(pieces), "-q"]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and "t =   10.0 min" in log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, "the run ended before it could be signalled"
        time.sleep(0.1)
    job.send_signal(signal.SIGUSR1)
    output, _ = job.communicate(timeout=120)
    assert job.returncode == cli.EXIT_STOPPED, output
    assert "checkpoint written (signal SIGUSR1)" in log.read_text()
    state = checkpoint.read_state(pieces / "checkpoint")
    assert state["ranks"] == 2 and 10 * 60 <= state["time"] < 40 * 60  # stopped midway (a fast step: at 10 min)
    done = _cli(["run", str(SMALL), "--resume", str(pieces), "-q"])
    assert done.returncode == 0, done.stderr
    _assert_same_results(whole, pieces, rel=1e-6)
    ranks = [s["ranks"] for s in json.loads((pieces / results.SUMMARY).read_text())["segments"]]
    assert ranks == [2, 1]
    assert list(pieces.glob("fields_P1.part2.bp"))  # VTX cannot be appended to: the rest is in part 2


@pytest.mark.serial
def test_resume_refuses_what_it_cannot_continue(tmp_path):
    folder = tmp_path / "r"
    stopped = _cli(["run", str(SMALL), "-o", str(folder), "-q", "--stop-at", "3 min"])
    assert stopped.returncode == cli.EXIT_STOPPED, stopped.stderr
    other = tmp_path / "other.toml"
    other.write_text(SMALL.read_text().replace('flow = "', 'flow = "1', 1))
    cases = [
        (["run", str(other), "--resume", str(folder)], "the case differs from the one checkpointed at protocol.flow"),
        (["run", str(SMALL), "--resume", str(folder), "-o", "x"], "leave out -o/--output, --force and --continue"),
        (["run", str(SMALL), "--resume", str(tmp_path)], "not an isolimb results folder"),
        (["run", str(SMALL), "-o", str(tmp_path / "s"), "--stop-at", "3"], "--stop-at '3': expected a time"),
    ]
    for args, message in cases:
        done = _cli(args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
    assert _cli(["run", str(SMALL), "--resume", str(folder), "-q"]).returncode == 0
    again = _cli(["run", str(SMALL), "--resume", str(folder)])
    assert again.returncode == 2 and "no checkpoint to resume from (the run finished" in again.stderr


@pytest.mark.parametrize("degree", [1, 2])
def test_checkpoint_round_trip_and_mesh_check(comm, shared_tmp, degree):
    """Fields written and read back by dof key (P1 and P2); a checkpoint of another mesh is refused."""
    msh = mesh.create_unit_cube(comm, 4, 3, 3, ghost_mode=mesh.GhostMode.shared_facet)
    V = fem.functionspace(msh, ("Lagrange", degree))
    f = fem.Function(V)
    f.interpolate(lambda x: 1.0 + x[0] ** 2 + 2 * x[1] * x[2])
    f.x.scatter_forward()  # interpolation leaves ghost values stale
    space = NodalSpace(V)
    checkpoint.write(shared_tmp, comm, {"time": 0.0}, {"f": (space, f.x.array)})
    restored = checkpoint.Reader(shared_tmp / "checkpoint", comm, [space]).values("f", space)
    assert np.array_equal(restored, f.x.array)  # ghosts included: no scatter needed
    keys = comm.allreduce(np.unique(space.keys[: space.owned]).size, op=MPI.SUM)
    assert keys == V.dofmap.index_map.size_global  # one key per dof
    finer = fem.functionspace(mesh.create_unit_cube(comm, 4, 3, 4), ("Lagrange", degree))
    with pytest.raises(CheckpointError, match="written for another mesh"):
        checkpoint.Reader(shared_tmp / "checkpoint", comm, [NodalSpace(finer)])


def test_interval_checkpoints_replace_each_other(comm, shared_tmp):
    """Checkpoints at an interval: the latest one is kept, the swap leaves no temporary folder behind."""
    case = parse_case(SMALL)
    with pytest.raises(RunStopped):
        run_case(case, shared_tmp, comm, quiet=True, stopping=Stopping(checkpoint_interval=4 * 60.0, stop_at=11 * 60))
    log = (shared_tmp / results.RUN_LOG).read_text()
    assert [line.split()[2] for line in log.splitlines() if "checkpoint written" in line] == ["4.0", "8.0", "11.0"]
    assert sorted(p.name for p in shared_tmp.iterdir() if "checkpoint" in p.name) == ["checkpoint"]
    assert os.path.exists(shared_tmp / "checkpoint" / "keys.npy")


def _early_stop(out: Path, command: list[str], signals: tuple[int, int]) -> subprocess.CompletedProcess:
    """Start ``command``, send the two signals 0.2 s apart as soon as its run.log exists, wait for the end."""
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (out / results.RUN_LOG).exists():  # the run has started: its handlers are in place
        assert job.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.02)
    job.send_signal(signals[0])
    time.sleep(0.2)
    job.send_signal(signals[1])  # a second request changes nothing
    output, _ = job.communicate(timeout=120)
    return subprocess.CompletedProcess(command, job.returncode, output)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_stop_asked_for_while_meshing_is_honoured(tmp_path, ranks):
    """Issue 16: two stop requests in the first moments of a run, while it meshes or compiles, stop it with
    status 75 and a checkpoint instead of being lost or killing it; it then resumes. One rank gets SIGUSR1 then
    SIGTERM itself; two ranks get SIGUSR1 twice through MPICH's mpiexec (which forwards one SIGTERM but aborts
    the job on a second, whatever the program does)."""
    out = tmp_path / "early"
    command = [str(BIN / "isolimb"), "run", str(SMALL), "-o", str(out), "-q"]
    if ranks == 1:
        done = _early_stop(out, command, (signal.SIGUSR1, signal.SIGTERM))
    else:
        done = _early_stop(out, [str(BIN / "mpiexec"), "-n", "2", *command], (signal.SIGUSR1, signal.SIGUSR1))
    assert done.returncode == cli.EXIT_STOPPED, done.stdout
    assert "Traceback" not in done.stdout and "Caught signal" not in done.stdout
    state = checkpoint.read_state(out / "checkpoint")
    assert state["time"] < 40 * 60 and not (out / results.SUMMARY).exists()
    assert _cli(["run", str(SMALL), "--resume", str(out), "-q"]).returncode == 0
    assert json.loads((out / results.SUMMARY).read_text())["drug_balance_relative_error"] < 1e-10


@pytest.mark.serial
def test_a_solver_that_gives_up_is_one_line_in_the_terminal_and_the_log(tmp_path):
    """Issue 16: a transport solver that fails after every cut-back ends the run with one line naming the time,
    the equation and the PETSc reason (no traceback), also as the last line of run.log."""
    text = SMALL.read_text() + "\n[numerics.petsc.transport]\nksp_max_it = 1\nksp_rtol = 1e-14\n"
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    (case_dir / "case.toml").write_text(text.replace("[numerics]\n", "[numerics]\n", 1))
    done = _cli(["run", str(case_dir), "-o", str(tmp_path / "r"), "-q"])
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the solver gave up" in lines[0] and "transport_melphalan" in lines[0] and "PETSc reason" in lines[0]
    log = (tmp_path / "r" / results.RUN_LOG).read_text().strip().splitlines()
    assert "the solver gave up" in log[-1]
