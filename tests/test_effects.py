"""Effects (MODEL.md section 8, issue 13): thermal enhancement, tumour kill, coverage, time above 40 C and the
marrow surrogate, against numbers computed by hand from the engine's own time series."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from mpi4py import MPI

from solver import meshing
from solver.case import parse_case_tree
from solver.coupling import CoupledModel
from solver.physics.effects import thermal_enhancement
from solver.simulation import Simulation

from .conftest import ROOT
from .test_delivery import _uniform_case

K_BY_HAND = 1e-6 / (1e-9 * 3600.0)  # 1 mL/(ug h) in m^3/(kg s)
K_CASE = "30 mL/(ug h)"  # the well-mixed limb's exposure is small: a sensitive tumour line gives some logs of kill


def test_thermal_enhancement_ratio_by_hand():
    """TER(42 C) = exp(0.13 x 5); 1 at and below 37 C; the case defaults are MODEL.md's."""
    assert thermal_enhancement(np.array([315.15]), 0.13)[0] == pytest.approx(math.exp(0.13 * 5.0), rel=1e-12)
    assert list(thermal_enhancement(np.array([310.15, 305.0]), 0.13)) == [1.0, 1.0]
    case = parse_case_tree(_uniform_case("1 min"), ROOT / "cases" / "well-mixed.toml")
    melphalan = case.agents["melphalan"]
    assert melphalan.ter_beta == pytest.approx(0.13, rel=1e-12)
    assert melphalan.kill_constant == pytest.approx(K_BY_HAND, rel=1e-12)  # 0.2778 m^3/(kg s)
    assert melphalan.marrow_kill_constant == pytest.approx(K_BY_HAND, rel=1e-12)


def test_each_rate_has_its_own_activation_energy(comm):
    """Heat that enhances (MODEL.md sections 4 and 8): at 42 C hydrolysis and alkylation follow 60.7 kJ/mol and
    uptake 50 kJ/mol, typed here from MODEL.md, not read from the engine's defaults; Stokes-Einstein for D."""
    from dolfinx import fem
    from dolfinx import mesh as dmesh

    from solver.physics.transport import ThermalRates

    V = fem.functionspace(dmesh.create_unit_cube(comm, 1, 1, 1), ("Lagrange", 1))
    case = parse_case_tree(_uniform_case("1 min"), ROOT / "cases" / "well-mixed.toml")
    mel = case.agents["melphalan"]
    rates = ThermalRates(
        V, mel.half_life, mel.alkylation_half_life, mel.D, mel.k_up, Ea=(mel.Ea, mel.Ea_alkylation, mel.Ea_uptake)
    )
    rates.update(np.full(len(rates.k_h.x.array), 315.15), uptake_factor=1.5)

    def by_hand(Ea_kJ: float) -> float:
        return math.exp(-Ea_kJ * 1e3 / 8.314462618 * (1 / 315.15 - 1 / 310.15))

    assert rates.k_h.x.array[0] == pytest.approx(math.log(2) / (66 * 60) * by_hand(60.7), rel=1e-12)
    assert rates.k_alk.x.array[0] == pytest.approx(math.log(2) / (120 * 60) * by_hand(60.7), rel=1e-12)
    assert rates.k_up.x.array[0] == pytest.approx(1.5e-3 * by_hand(50.0), rel=1e-12)
    assert by_hand(50.0) > 1.3  # uptake speeds up by a third from 37 to 42 C
    mu = [2.414e-5 * 10 ** (247.8 / (T - 140.0)) for T in (310.15, 315.15)]
    assert rates.D.x.array[0] == pytest.approx(2.4e-10 * 315.15 / 310.15 * mu[0] / mu[1], rel=1e-12)


def _run(inflow: str):
    raw = copy.deepcopy(_uniform_case("1 min"))
    raw["protocol"]["inflow_temperature"] = [{"time": "0 min", "value": inflow}]
    raw["agents"]["melphalan"] = {"kill_constant": K_CASE}
    case = parse_case_tree(raw, ROOT / "cases" / "well-mixed.toml")
    model = CoupledModel(case, meshing.generate(case, MPI.COMM_WORLD))
    result = Simulation(model).run()
    return case, model, result


@pytest.fixture(scope="module")
def runs():
    """The well-mixed limb (uniform in space; 35 C at the start) perfused at 42 C and at 38 C."""
    return {"hot": _run("42 degC"), "mild": _run("38 degC")}


def _by_hand(rows: list[dict]) -> tuple[float, float]:
    """AUC_eff (kg s/m^3) and time above 40 C (min) from the recorded muscle means, summed as the engine steps
    (backward Euler: the value at the end of each step times its length)."""
    auc_eff, above = 0.0, 0.0
    for before, row in zip(rows, rows[1:], strict=False):
        dt = 60.0 * (row["time_min"] - before["time_min"])
        T = row["T_muscle_mean_degC"]
        ter = math.exp(0.13 * (T - 37.0)) if T > 37.0 else 1.0
        auc_eff += dt * ter * row["melphalan_C_muscle_mean_mg_per_L"] * 1e-3
        above += dt / 60.0 if T > 40.0 else 0.0
    return auc_eff, above


@pytest.mark.parametrize("name", ["hot", "mild"])
def test_kill_of_a_uniform_exposure_equals_exp_minus_k_auc_eff(runs, name):
    """log10 kill = k AUC_eff / ln 10 with AUC_eff summed by hand from the time series of C and T."""
    case, model, result = runs[name]
    auc_eff, _ = _by_hand(result.series)
    expected = 30.0 * K_BY_HAND * auc_eff / math.log(10.0)
    muscle = result.summary["regions"]["muscle"]
    assert expected > 1.0  # a real exposure: more than one log of kill
    assert muscle["log10_kill_mean"] == pytest.approx(expected, rel=1e-6)
    kill = model.log10_kill(model.agents[0])
    lo = model.comm.allreduce(float(kill.min()), op=MPI.MIN)
    hi = model.comm.allreduce(float(kill.max()), op=MPI.MAX)
    assert lo == pytest.approx(hi, rel=1e-6) and hi == pytest.approx(expected, rel=1e-6)  # uniform (solver rtol)
    assert muscle["kill_coverage"] == (1.0 if expected > 2.0 else 0.0)
    histogram = muscle["kill_volume_histogram"]
    assert histogram["volume_fraction"][0] == 1.0
    assert np.all(np.diff(histogram["volume_fraction"]) <= 0)


def test_more_heat_gives_more_kill_at_equal_exposure(runs):
    """Per unit of free-drug exposure the 42 C perfusion kills more than the 38 C one (TER, used once)."""
    ratio = {}
    for name, (_, _, result) in runs.items():
        muscle = result.summary["regions"]["muscle"]
        ratio[name] = muscle["log10_kill_mean"] / muscle["auc_free_mean"]
    assert ratio["hot"] > 1.2 * ratio["mild"]


def test_time_above_40C_by_hand(runs):
    """Minutes above 40 C from the time series of T: some at 42 C inflow, none at 38 C."""
    for name, (_, _, result) in runs.items():
        _, above = _by_hand(result.series)
        got = result.summary["regions"]["muscle"]["time_above_40C_max_min"]
        assert got == pytest.approx(above, rel=1e-12, abs=1e-12), name
    assert runs["hot"][2].summary["regions"]["muscle"]["time_above_40C_max_min"] > 10.0
    assert runs["mild"][2].summary["regions"]["muscle"]["time_above_40C_max_min"] == 0.0


def test_marrow_surviving_fraction_by_hand(runs):
    """exp(-k f_u AUC) with the systemic AUC to infinity (mg min/L = ug min/mL) and k in mL/(ug h)."""
    case, _, result = runs["hot"]
    s = result.summary
    auc_ug_h_per_mL = s["agents"]["melphalan"]["systemic_auc_inf_mg_min_per_L"] / 60.0
    expected = math.exp(-1.0 * case.agents["melphalan"].f_u * auc_ug_h_per_mL)
    assert 0.0 < expected < 1.0
    assert s["marrow_surviving_fraction"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.serial
def test_coverage_equals_the_fraction_computed_from_nodal_values(runs):
    """A kill field linear along the limb (0 to 4 logs): coverage (SF < 0.01), the mean and the histogram of
    the summary against cell volumes and cell means computed here from the mesh geometry."""
    _, model, _ = runs["mild"]
    msh = model.tm.mesh
    agent = model.agents[0]
    x = agent.space.tabulate_dof_coordinates()
    length = 0.06
    kill = 4.0 * x[:, 2] / length
    saved = agent.auc_effective.copy()
    agent.auc_effective[:] = kill * math.log(10.0) / agent.params.kill_constant
    try:
        got = Simulation(model)._kill("muscle", model.log10_kill(agent))
    finally:
        agent.auc_effective[:] = saved
    vertices = msh.geometry.x[msh.geometry.dofmaps[0]]  # (cells, 4, 3), P1 geometry
    edges = vertices[:, 1:, :] - vertices[:, :1, :]
    volume = np.abs(np.linalg.det(edges)) / 6.0
    mean_kill = 4.0 * vertices[:, :, 2].mean(axis=1) / length  # the cell mean of a linear field
    coverage = volume[mean_kill > 2.0].sum() / volume.sum()
    assert 0.0 < got["kill_coverage"] < 1.0
    assert got["kill_coverage"] == pytest.approx(coverage, rel=1e-12)
    assert got["log10_kill_mean"] == pytest.approx((volume * mean_kill).sum() / volume.sum(), rel=1e-9)
    h = got["kill_volume_histogram"]
    for level, fraction in zip(h["log10_kill"], h["volume_fraction"], strict=True):
        assert fraction == pytest.approx(volume[mean_kill >= level].sum() / volume.sum(), rel=1e-12, abs=1e-15)


@pytest.mark.serial
def test_kill_field_report_compare_and_collect(shared_tmp):
    """The optional "log10_kill" field holds the nodal log10 kill; the report shows the survival-volume histogram
    and the kill columns; compare and collect read the tumour log-kill and coverage."""
    from solver import compare, report, results, sweep
    from solver.simulation import run_case
    from solver.vtkhdf import VTKHDFSeries

    folders = []
    for name, inflow in (("hot", "42 degC"), ("mild", "38 degC")):
        raw = copy.deepcopy(_uniform_case("1 min"))
        raw["protocol"]["inflow_temperature"] = [{"time": "0 min", "value": inflow}]
        raw["agents"]["melphalan"] = {"kill_constant": K_CASE}
        raw["output"] = {"interval": "15 min", "fields": ["T", "AUC", "log10_kill"], "formats": ["vtkhdf"]}
        case = parse_case_tree(raw, ROOT / "cases" / "well-mixed.toml")
        folder = shared_tmp / name
        result = run_case(case, folder, MPI.COMM_WORLD, quiet=True)
        folders.append(folder)
        series = VTKHDFSeries(folder / results.FIELDS_VTKHDF)
        assert "kill_melphalan_log10" in series.point_names
        kill = series.point_data("kill_melphalan_log10", -1)
        expected = result.summary["regions"]["muscle"]["log10_kill_mean"]
        assert kill.min() == pytest.approx(expected, rel=1e-6) and kill.max() == pytest.approx(expected, rel=1e-6)
        assert results.missing_keys(result.summary) == []
    page = report.build(folders[0]).read_text()
    assert "<h2>Survival-volume histogram</h2>" in page and "mean log10 kill" in page
    assert "kill coverage (% with SF &lt; 0.01)" in page and "marrow progenitor surviving fraction" in page
    compared = [compare.Result(f) for f in folders]
    for r in compared:  # the well-mixed limb is all muscle: read it as the tumour
        r.summary["regions"]["tumour"] = r.summary["regions"]["muscle"]
    _, rows = compare.table(compared)
    by_name = {row[0]: row[1:] for row in rows}
    hot, mild = (r.summary["regions"]["muscle"] for r in compared)
    assert by_name["tumour mean log10 kill"] == [hot["log10_kill_mean"], mild["log10_kill_mean"]]
    coverage = by_name["tumour kill coverage (% with SF < 0.01)"]
    assert coverage == [100 * hot["kill_coverage"], 100 * mild["kill_coverage"]]
    collected = {k: get(compared[0].summary) for k, (_, get) in sweep.OUTCOMES.items()}
    assert collected["tumour_log10_kill_mean"] == hot["log10_kill_mean"]
    assert collected["tumour_kill_coverage_percent"] == 100 * hot["kill_coverage"]
    assert collected["marrow_surviving_fraction"] == compared[0].summary["marrow_surviving_fraction"]
