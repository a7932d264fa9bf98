"""``isolimb converge``: Richardson extrapolation by hand, and a study of the Baxter-Jain sphere whose
extrapolated values must land on the closed form (MODEL.md section 2) closer than the finest mesh does."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
from mpi4py import MPI

from solver import converge
from solver.case import parse_case

from .conftest import CASES, isolimb_cli

MMHG = 133.322387415


@pytest.mark.parametrize("order", [1.0, 1.5, 2.0])
def test_richardson_recovers_a_known_order_with_unequal_ratios(order):
    h = [0.4, 0.25, 0.17, 0.3]  # any order, unequal ratios; the three finest are used
    f = [2.0 + 3.0 * x**order for x in h]
    r = converge.richardson(h, f)
    assert r.order == pytest.approx(order, rel=1e-6)
    assert r.extrapolated == pytest.approx(2.0, rel=1e-9)
    assert r.errors[0] == pytest.approx(3.0 * 0.4**order / 2.0, rel=1e-6)


def test_richardson_caps_the_order_at_the_formal_one():
    h = [0.4, 0.25, 0.17]
    f = [2.0 + 3.0 * x**4 for x in h]
    free, capped = converge.richardson(h, f), converge.richardson(h, f, max_order=2.0)
    assert free.order == pytest.approx(4.0, rel=1e-6) and capped.order == pytest.approx(4.0, rel=1e-6)
    assert free.extrapolated == pytest.approx(2.0, rel=1e-9)
    assert capped.errors[-1] > free.errors[-1] and "formal order 2" in capped.note  # the cautious estimate


def test_richardson_oscillating_and_flat():
    r = converge.richardson([3, 2, 1], [1.0, 1.2, 1.1])
    assert math.isnan(r.order) and "oscillating" in r.note
    assert r.errors == [pytest.approx(0.2 / 1.1)] * 3  # the spread of the levels
    flat = converge.richardson([3, 2, 1], [5.0, 5.0, 5.0])
    assert flat.errors == [0.0, 0.0, 0.0]


def test_richardson_growing_differences_have_no_order():
    """Differences that grow as the levels refine solve Celik's equation only with its absolute value (a spurious
    order): no order; the two finest are extrapolated with the formal order, or the spread bounds the error."""
    h, f = [4.0, 2.0, 1.0], [1.0, 1.01, 1.03]  # coarse to fine: +0.01, then +0.02
    r = converge.richardson(h, f, max_order=1.0)
    assert math.isnan(r.order) and "differences grow" in r.note
    assert r.extrapolated == pytest.approx(1.05)  # 1.03 + (1.03 - 1.01) / (2^1 - 1)
    assert converge.richardson(h, f).errors == [pytest.approx(0.03 / 1.03)] * 3


def test_richardson_skips_levels_too_close_to_a_finer_one():
    """A level within MIN_RATIO of a finer chosen one gets its error against the extrapolation, but is not used:
    the same extrapolation as without it, even when its value is off the curve."""
    h, f = [0.4, 0.25, 0.17], [2.0 + 3.0 * x**2 for x in [0.4, 0.25, 0.17]]
    with_close = converge.richardson([*h, 0.18], [*f, 2.0 + 3.0 * 0.18**2 + 0.01], max_order=2.0)
    assert with_close.order == pytest.approx(2.0, rel=1e-6)
    assert with_close.extrapolated == pytest.approx(2.0, rel=1e-9)
    assert with_close.errors[-1] == pytest.approx((3.0 * 0.18**2 + 0.01) / 2.0, rel=1e-9)


def _cli(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    return isolimb_cli(*args, ranks=ranks, timeout=600)


def _baxter_jain_exact(case_dir) -> dict[str, float]:
    """Volume-mean IFP (mmHg) and rim velocity (um/s) of the Baxter-Jain sphere in closed form (MODEL.md section 2)."""
    case = parse_case(case_dir)
    t, R = case.tissue["tumour"], case.mesh.radius
    pe = t.p_v - t.sigma_p * (t.pi_v - t.pi_i)
    alpha = R * math.sqrt(t.Lp * t.S_V / t.K)
    return {
        "tumour_ifp": pe * (1 - 3 * (alpha / math.tanh(alpha) - 1) / alpha**2) / MMHG,
        "tumour_rim_outflow": t.K * pe / R * (alpha / math.tanh(alpha) - 1) * 1e6,
    }


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_converge_baxter_jain_against_the_closed_form(ranks, tmp_path):
    """Three mesh levels of the raised-K sphere (P2): the printed table, the files, and extrapolated mean IFP and
    rim outflow nearer the closed form than the finest level, whose true error its estimate bounds (x2)."""
    if MPI.COMM_WORLD.size > 1:
        pytest.skip("launches its own ranks")
    case_dir = CASES / "benchmark-baxter-jain-raised-k"
    out = tmp_path / "study"
    done = _cli("converge", str(case_dir), "-o", str(out), "--factors", "3,2.2,1.6", "--no-time", ranks=ranks)
    assert done.returncode == 0, done.stderr
    assert "observed order" in done.stdout and "tumour mean IFP (mmHg)" in done.stdout
    for name in ("convergence.md", "convergence_mesh.csv", "convergence.png"):
        assert (out / name).exists(), name
    exact = _baxter_jain_exact(case_dir)  # volume mean of the Baxter-Jain profile, and the rim velocity
    study = converge.read_study(out, "mesh")
    assert study is not None and len(study.sizes) == 3 and study.cells[0] < study.cells[-1]
    for key, value in exact.items():
        levels = study.outcomes[key]
        r = converge.richardson(study.sizes, levels)
        finest = abs(levels[-1] / value - 1)
        assert abs(r.extrapolated / value - 1) < 0.5 * finest, key
        assert finest < 2 * r.errors[-1] + 1e-4, key
    summary = json.loads((out / "mesh" / "results" / "run-0002" / "summary.json").read_text())
    assert summary["ranks"] == ranks


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_converge_refined_level_runs_and_approaches_the_closed_form(ranks, tmp_path):
    """--refine 1 runs the finest level split in parallel (8x its cells) as the study's finest level; its mean IFP
    lies nearer the closed form than its parent's (wrong region tags after the split would move it away)."""
    if MPI.COMM_WORLD.size > 1:
        pytest.skip("launches its own ranks")
    case_dir = CASES / "benchmark-baxter-jain-raised-k"
    out = tmp_path / "study"
    done = _cli("converge", str(case_dir), "-o", str(out), "--factors", "3,2.2", "--refine", "1", "--no-time",
                ranks=ranks)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "size_factor 2.2, refined 1x" in done.stdout
    study = converge.read_study(out, "mesh")
    assert study is not None and study.cells[-1] == 8 * study.cells[-2]
    ifp, exact = study.outcomes["tumour_ifp"], _baxter_jain_exact(case_dir)["tumour_ifp"]
    assert abs(ifp[-1] - exact) < abs(ifp[-2] - exact) < abs(ifp[-3] - exact)


@pytest.mark.serial
def test_converge_prepare_writes_mesh_and_time_sweeps(tmp_path):
    """--prepare: the SLURM arrays of the mesh levels and of dt, dt/2, dt/4, nothing run."""
    if MPI.COMM_WORLD.size > 1:
        pytest.skip("launches its own process")
    out = tmp_path / "study"
    done = _cli("converge", str(CASES / "student-small"), "-o", str(out), "--prepare", "--levels", "4")
    assert done.returncode == 0, done.stderr
    for name, n in (("mesh", 4), ("time", 3)):
        assert (out / name / "sweep.sbatch").exists()
        assert len(list((out / name / "cases").glob("run-*"))) == n
    dts = [parse_case(out / "time" / "cases" / f"run-{i:04d}").numerics.dt for i in range(3)]
    assert dts == pytest.approx([60.0, 30.0, 15.0])
    factors = [parse_case(out / "mesh" / "cases" / f"run-{i:04d}").mesh.size_factor for i in range(4)]
    assert factors == pytest.approx([1.0, 1 / 1.4, 1 / 1.4**2, 1 / 1.4**3], rel=1e-3)
    assert converge.pending(out) and not (out / "convergence.md").exists()


@pytest.mark.serial
def test_converge_prepare_refined_levels(tmp_path):
    """--refine: finer levels as a third sweep, the finest generated mesh split in parallel 1x, 2x; a file mesh is
    studied by refinement alone and needs two refinements."""
    if MPI.COMM_WORLD.size > 1:
        pytest.skip("launches its own process")
    out = tmp_path / "study"
    done = _cli("converge", str(CASES / "student-small"), "-o", str(out), "--prepare", "--factors", "2,1.4",
                "--refine", "2", "--no-time")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "refined" in done.stdout and not (out / "time").exists()
    refined = [parse_case(out / "refined" / "cases" / f"run-{i:04d}").mesh for i in range(2)]
    assert [(m.size_factor, m.refine) for m in refined] == [(1.4, 1), (1.4, 2)]
    assert [parse_case(out / "mesh" / "cases" / f"run-{i:04d}").mesh.refine for i in range(2)] == [0, 0]
    few = _cli("converge", str(CASES / "student-small"), "-o", str(tmp_path / "few"), "--prepare", "--factors", "2,1.4")
    assert few.returncode != 0 and "at least three mesh levels" in few.stderr
    read = tmp_path / "read" / "case.toml"  # a file mesh: refinement is its only route to finer levels
    read.parent.mkdir()
    read.write_text('title = "x"\n[mesh]\ngenerator = "file"\npath = "box.msh"\nregions = { muscle = 7 }\n')
    bad = _cli("converge", str(read.parent), "-o", str(tmp_path / "file"), "--prepare", "--refine", "1")
    assert bad.returncode != 0 and "--refine 2 or more" in bad.stderr


def test_read_study_orders_generated_and_refined_levels(tmp_path):
    """The refined levels join the mesh study as finer sizes h = cells^(-1/3), named by their parent and count."""
    rows = {"mesh": [("run-0000", 2.0, 0, 1000), ("run-0001", 1.4, 0, 2900)], "refined": [("run-0000", 1.4, 1, 23200)]}
    for name, runs in rows.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "runs.csv").write_text("id,x\n" + "".join(f"{run_id},0\n" for run_id, *_ in runs))
        for run_id, factor, refine, cells in runs:
            run = folder / "results" / run_id
            run.mkdir(parents=True)
            ifp = 4.0 + 100.0 * cells ** (-2.0 / 3.0)  # second order in h
            summary = {"mesh": {"cells": cells}, "regions": {"tumour": {"pressure_mean_Pa": ifp * MMHG}}, "agents": {}}
            (run / "summary.json").write_text(json.dumps(summary))
            case = {"mesh": {"size_factor": factor, "refine": refine}, "numerics": {"dt": 60.0, "degree": 1}}
            (run / "case_resolved.json").write_text(json.dumps(case))
    study = converge.read_study(tmp_path, "mesh")
    assert study is not None and study.cells == [1000, 2900, 23200]
    assert study.parameter == ["size_factor 2", "size_factor 1.4", "size_factor 1.4, refined 1x"]
    r = converge.richardson(study.sizes, study.outcomes["tumour_ifp"], study.formal_order)
    assert r.order == pytest.approx(2.0, rel=1e-6) and r.extrapolated == pytest.approx(4.0, rel=1e-9)
