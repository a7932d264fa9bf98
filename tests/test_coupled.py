"""Coupled runs: drug balance, TNF pressure collapse and uptake, time step halving, 1 vs 2 ranks."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mpi4py import MPI

from solver import meshing, results
from solver.case import parse_case
from solver.coupling import CoupledModel
from solver.simulation import Simulation

from .conftest import CASES, ROOT, write_case


def _run(case, comm):
    model = CoupledModel(case, meshing.generate(case, comm))
    sim = Simulation(model)
    return sim, sim.run()


def _with(case, **changes):
    section, values = next(iter(changes.items()))
    return case.model_copy(update={section: getattr(case, section).model_copy(update=values)})


@pytest.fixture(scope="module")
def student(request):
    from mpi4py import MPI

    case = parse_case(CASES / "student-small")
    return case, _run(case, MPI.COMM_WORLD)


def test_drug_balance_closes(student):
    _, (sim, result) = student
    assert result.summary["drug_balance_relative_error"] < 1e-6
    for row in result.series:
        assert row["melphalan_balance_relative_error"] < 1e-6
    parts = result.summary["agents"]["melphalan"]["balance_kg"]
    assert parts["dosed"] > 0 and parts["tissue_bound"] > 0 and parts["hydrolysed_perfusate"] > 0


def test_summary_keys(student):
    _, (sim, result) = student
    s = result.summary
    assert {"drug_balance_relative_error", "systemic_leak_fraction", "regions"} <= set(s)
    for entry in s["regions"].values():
        assert {
            "volume_m3",
            "pressure_mean_Pa",
            "temperature_max_degC",
            "auc_free_mean",
            "auc_cell_mean",
            "adducts_mean",
        } <= set(entry)
    # the leaked drug is below the tracer leak (the perfusate concentration falls, the tracer's does not), which
    # follows 1 - exp(-lambda t) with lambda = Q_leak (1/V_p + 1/V_s) over the isolation (closed form)
    p = sim.model.case.protocol
    V_p, V_s = sim.model.circulating_volume, p.systemic_volume
    tracer = 1 - math.exp(-p.leak_rate * V_p * (1 / V_p + 1 / V_s) * sim.schedule.release_time)
    assert s["tracer_leak_fraction"] == pytest.approx(tracer, rel=1e-3)
    assert 0 < s["systemic_leak_fraction"] < s["tracer_leak_fraction"]
    assert 36.0 < s["regions"]["tumour"]["temperature_max_degC"] < 40.0 + 1e-9
    # the peak over space and time: at least the highest tumour mean of the time series (the limb cools after
    # release, so the temperature at the end of the run is lower)
    hottest_mean = max(row["T_tumour_mean_degC"] for row in result.series)
    assert s["regions"]["tumour"]["temperature_max_degC"] >= hottest_mean - 1e-9


def test_tnf_leaves_ifp_by_default_collapses_it_as_an_option_and_raises_uptake(student, comm):
    """TNF v2 (MODEL.md section 6): by default tumour IFP is unchanged (rat ILP, Hoving 2006) and tumour uptake
    rises; with the IFP-collapse option the Baxter-Jain plateau falls by ifp_reduction E, E = s(t) e(dose)."""
    case, (sim, result) = student
    tnf = case.protocol.tnf
    end = case.protocol.perfusion_duration  # compared while isolated: release lowers the capillary pressure
    history = dict(sim.pressure_history)
    assert history[end] == pytest.approx(history[0.0], rel=1e-9)
    no_tnf = _with(case, protocol={"tnf": None})
    plain_sim, plain = _run(no_tnf, comm)
    assert dict(plain_sim.pressure_history)[end] == pytest.approx(history[0.0], rel=1e-9)
    auc_tnf = result.summary["regions"]["tumour"]["auc_free_mean"]
    auc_plain = plain.summary["regions"]["tumour"]["auc_free_mean"]
    assert auc_tnf > 1.05 * auc_plain  # how much is a model outcome (docs/plausibility.md), not a target
    collapse = _with(case, protocol={"tnf": tnf.model_copy(update={"ifp_reduction": 0.8})})
    collapse_sim, _ = _run(collapse, comm)
    before, after = dict(collapse_sim.pressure_history)[0.0], dict(collapse_sim.pressure_history)[end]
    concentration = tnf.dose / collapse_sim.model.circulating_volume  # kg/m^3 of perfusate
    e = (concentration - tnf.threshold) / (concentration - tnf.threshold + tnf.half_effect)  # by hand
    s_end = 1 - math.exp(-(end - tnf.time) / tnf.tau)
    # the plateau falls by ifp_reduction * E; the mean tumour pressure (rim included) follows within 10 %
    assert after / before == pytest.approx(1 - 0.8 * s_end * e, rel=0.10)


@pytest.mark.slow
def test_halving_time_step_changes_tumour_auc_by_less_than_one_percent(student, comm):
    case, (_, result) = student
    half = _with(case, numerics={"dt": case.numerics.dt / 2})
    _, fine = _run(half, comm)
    coarse_auc = result.summary["regions"]["tumour"]["auc_free_mean"]
    fine_auc = fine.summary["regions"]["tumour"]["auc_free_mean"]
    assert abs(coarse_auc - fine_auc) / fine_auc < 0.01


def _run_at(ranks: int, case: str | Path, out) -> dict:
    """summary.json of ``isolimb run`` on ``ranks`` MPI ranks (``case``: a name in cases/ or a folder)."""
    command = [str(ROOT / ".venv/bin/mpiexec"), "-n", str(ranks), sys.executable, "-m", "solver", "run"]
    folder = case if isinstance(case, Path) else CASES / case
    subprocess.run([*command, str(folder), "-o", str(out), "-q"], check=True, timeout=600)
    return json.loads((out / results.SUMMARY).read_text())


def _assert_same_functionals(parallel: dict, serial: dict, ranks: int) -> None:
    assert parallel["ranks"] == ranks
    memory = parallel["peak_memory_GB"]  # every rank holds Python, dolfinx and PETSc: 0.1 GB at least
    assert 0.1 * ranks < memory["all_ranks"] < 24 and memory["largest_rank"] <= memory["all_ranks"]
    assert parallel["drug_balance_relative_error"] < 1e-6
    assert parallel["systemic_leak_fraction"] == pytest.approx(serial["systemic_leak_fraction"], rel=1e-6)
    for region, entry in serial["regions"].items():
        for key in ("volume_m3", "pressure_mean_Pa", "auc_free_mean", "auc_cell_mean", "adducts_mean"):
            assert parallel["regions"][region][key] == pytest.approx(entry[key], rel=1e-6), (region, key)
        for key in ("temperature_max_degC", "cem43_max_min", "peak_free_max"):
            assert parallel["regions"][region][key] == pytest.approx(entry[key], rel=1e-6), (region, key)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_functionals_at_one_two_and_three_ranks(student, tmp_path, ranks):
    _, (_, serial) = student
    _assert_same_functionals(_run_at(ranks, "student-small", tmp_path / "r"), serial.summary, ranks)


@pytest.mark.serial
def test_existing_results_are_refused(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = subprocess.run(
        [sys.executable, "-m", "solver", "run", str(CASES / "student-small"), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "exists" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "precious"
    # --force replaces only a folder that isolimb wrote
    proc = subprocess.run(
        [sys.executable, "-m", "solver", "run", str(CASES / "student-small"), "-o", str(out), "--force"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not an isolimb results folder" in proc.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_failed_step_is_rolled_back_and_retried(comm, shared_tmp):
    """A solve failing midway through a step (after the first agent's circuit accepted it) is undone
    completely and retried with half the step: one extra step, and both balances still close."""
    from solver.physics.linear import SolveError

    text = (CASES / "student-small" / "case.toml").read_text()
    text = text.replace("[agents.melphalan]", "[agents.melphalan]\n[agents.actinomycin_d]")
    text = text.replace('dt = "1 min"', 'dt = "5 min"')
    text += '\n[[protocol.doses]]\nagent = "actinomycin_d"\ntime = "5 min"\nper_limb_volume = "0.5 mg/L"\n'
    case = parse_case(write_case(shared_tmp / "two", text))
    _, plain = _run(case, comm)

    model = CoupledModel(case, meshing.generate(case, comm))
    second = model.agents[1].transport.system
    original, calls = second.solve, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # third step, after the doses: agent 1 has already accepted this step
            raise SolveError("injected failure")
        return original(*args, **kwargs)

    second.solve = flaky
    sim = Simulation(model)
    result = sim.run()
    assert result.summary["steps"] == plain.summary["steps"] + 1
    for name in ("melphalan", "actinomycin_d"):
        assert result.summary["agents"][name]["drug_balance_relative_error"] < 1e-6
        dose = plain.summary["agents"][name]["dose_kg"]
        assert result.summary["agents"][name]["dose_kg"] == pytest.approx(dose, rel=1e-12)


# The default case runs at its own mesh in `make run`; the tests take it at size_factor 2.5 (about 15k vertices,
# 5x fewer than its own) to keep the suite's time: what they check (balance, leak, TNF, ranks) is mesh-independent.
TEST_SIZE_FACTOR = 2.5


def _coarse_default(folder) -> Path:
    """A copy of the default case folder at TEST_SIZE_FACTOR (written by the caller's rank 0 or alone)."""
    text = (CASES / "ilp-tm-sarcoma-leg" / "case.toml").read_text()
    text = re.sub(r"(?m)^size_factor = .*$", f"size_factor = {TEST_SIZE_FACTOR}", text)
    return write_case(folder, text)


@pytest.fixture(scope="module")
def default_case(tmp_path_factory):
    folder = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("default")) if MPI.COMM_WORLD.rank == 0 else None)
    case = parse_case(_coarse_default(Path(folder)))  # write_case: rank 0 writes, every rank returns the path
    assert case.mesh.size_factor == TEST_SIZE_FACTOR
    return case, _run(case, MPI.COMM_WORLD)


@pytest.mark.slow
def test_default_case_end_to_end(default_case, comm):
    """The default case (TM-ILP leg, seed 003): balance within 1e-10, IFP unchanged by TNF, tracer leak."""
    case, (sim, result) = default_case
    s = result.summary
    assert s["drug_balance_relative_error"] < 1e-10
    # the clinic's tracer leak at 0.045 %/min over 70 min of isolation: 1 - exp(-lambda t), lambda = Q_leak
    # (1/V_p + 1/V_s) (a closed form of the tracer's two compartments); the median patient has 2.7 % [V]
    p = case.protocol
    V_p, V_s = sim.model.circulating_volume, p.systemic_volume
    expected = 1 - math.exp(-p.leak_rate * V_p * (1 / V_p + 1 / V_s) * sim.schedule.release_time)
    assert s["tracer_leak_fraction"] == pytest.approx(expected, rel=1e-3)  # backward Euler, 1 min steps
    assert 0.005 < s["tracer_leak_fraction"] < 0.05
    history = dict(sim.pressure_history)
    assert history[p.perfusion_duration] == pytest.approx(history[0.0], rel=1e-9)  # TNF v2: IFP unchanged
    assert s["regions"]["tumour"]["auc_free_mean"] > s["regions"]["necrosis"]["auc_free_mean"]  # no vessels
    # heated by the controlled inflow, never above the hottest inflow (maximum principle; metabolic heat is 0.9 W/kg)
    hottest_inflow = max(row["inflow_temperature_degC"] for row in sim.rows)
    assert 37.5 < s["regions"]["muscle"]["temperature_max_degC"] <= hottest_inflow + 0.05 <= 42.05
    # Drug diffusing into the vessel-free necrotic core (h^2/D >> dt) undershot to -2 mg/L with a consistent
    # mass matrix; the lumped P1 system keeps every concentration and the AUC non-negative.
    agent = sim.model.agents[0]
    for values in (agent.field(0), agent.field(1), agent.field(2), agent.auc_free):
        assert comm.allreduce(float(values.min()), op=MPI.MIN) >= 0.0


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.parametrize("ranks", [2, 3])
def test_default_case_same_functionals_at_two_and_three_ranks(default_case, tmp_path, ranks):
    """Issue 5: the default case gives the summary functionals of the serial run at 2 and 3 ranks."""
    _, (_, serial) = default_case
    coarse = _coarse_default(tmp_path / "case")
    _assert_same_functionals(_run_at(ranks, coarse, tmp_path / "r"), serial.summary, ranks)


@pytest.mark.slow
def test_ili_case_blanket_metabolism_two_agents(comm):
    """ILI leg (seeds 000/001): two agents balance, the trapped blood runs out of oxygen and acidifies,
    and the blanket heats the limb from outside (skin warmer than muscle)."""
    case = parse_case(CASES / "ili-melanoma-leg")
    _, result = _run(case, comm)
    s = result.summary
    for agent in ("melphalan", "actinomycin_d"):
        assert s["agents"][agent]["drug_balance_relative_error"] < 1e-6
    mb = s["metabolism"]
    assert mb["oxygen_used_mL"] == pytest.approx(60.0, rel=1e-9)  # the whole store
    assert mb["pH"] < 7.4 - 0.2 and mb["base_excess_mmol_per_L"] < 0
    rows = result.series
    assert all(b["limb_pH"] <= a["limb_pH"] for a, b in zip(rows, rows[1:], strict=False))
    final = rows[-1]
    assert final["T_skin_mean_degC"] > final["T_muscle_mean_degC"] > 37.0
