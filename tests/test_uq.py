"""Uncertainty and validation machinery (issue 15): sampling designs, sensitivity indices and calibration, on
problems whose answers are known without the engine. The engine's own Sobol' study through SLURM is in
tests/test_sweep.py."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from solver import results
from solver.calibrate import CalibrationError, calibrate, load
from solver.design import Design, DesignError, Distribution, Parameter, points
from solver.sensitivity import analyse
from solver.sweep import OUTCOMES, SweepError, expand
from tests.conftest import CASES, ROOT

pytestmark = pytest.mark.serial  # files only


def _design(method: str, **kw) -> Design:
    return Design(method=method, seed=3, **kw)


def test_distributions_map_the_unit_cube_in_case_units():
    u = np.array([0.0, 0.5, 1.0])
    temperature = Parameter("t", Distribution(distribution="uniform", range=["39 degC", "42 degC"]))
    assert temperature.values(u).tolist() == pytest.approx([39.0, 40.5, 42.0])
    assert temperature.text(40.5) == "40.5 degC"
    k = Parameter("k", Distribution(distribution="loguniform", range=["1e-14 m^2/(Pa s)", "1e-12 m^2/(Pa s)"]))
    assert k.values(u).tolist() == pytest.approx([1e-14, 1e-13, 1e-12])
    mixed = Parameter("q", Distribution(distribution="uniform", range=["300 mL/min", "0.6 L/min"]))
    assert mixed.values(u).tolist() == pytest.approx([300.0, 450.0, 600.0])  # in the unit of the first value
    tri = Parameter("f", Distribution(distribution="triangular", range=[1.0, 3.0], mode=1.0))
    assert tri.values(np.array([0.75]))[0] == pytest.approx(2.0)  # 1 - (1 - x/2)^2 ... median of a ramp at 0.75
    assert tri.text(2.0) == 2.0
    normal = Parameter("n", Distribution(distribution="normal", mean="10 mg/L", sd="2 mg/L"))
    assert normal.values(np.array([0.5, 0.8413447]))[0:2].tolist() == pytest.approx([10.0, 12.0], rel=1e-6)
    lognormal = Parameter("l", Distribution(distribution="lognormal", median=1.0, gsd=2.0, range=[0.25, 4.0]))
    assert lognormal.values(np.array([0.5]))[0] == pytest.approx(1.0)
    assert lognormal.values(np.array([0.0, 1.0])).tolist() == pytest.approx([0.25, 4.0])


@pytest.mark.parametrize(
    "spec, message",
    [
        (Distribution(distribution="uniform", range=["3 degC", "1 degC"]), "lower value first"),
        (Distribution(distribution="uniform", range=["3 degC", 4]), "expected units"),
        (Distribution(distribution="loguniform", range=["0 mmHg", "3 mmHg"]), "positive"),
        (Distribution(distribution="triangular", range=[1, 2]), "needs mode"),
        (Distribution(distribution="uniform", range=[1, 2], mean=1.5), "no meaning"),
        (Distribution(distribution="uniform", range=["1 mmHg", "2 mL"]), "cannot convert"),
        (Distribution(distribution="uniform", range=["1 furlongs per fortnight", "2 mL"]), "units"),
    ],
)
def test_a_bad_distribution_is_one_line_naming_the_parameter(spec, message):
    with pytest.raises(DesignError, match=message):
        Parameter("tissue.tumour.K", spec)


def test_design_sizes_follow_the_methods():
    params = {f"p{i}": Distribution(range=[0.0, 1.0]) for i in range(3)}
    assert len(points(_design("lhs", n=5), params)[0]) == 5
    assert len(points(_design("sobol", n=8), params)[0]) == 8
    assert len(points(_design("saltelli", n=4), params)[0]) == 4 * (3 + 2)
    assert len(points(_design("saltelli", n=4, second_order=True), params)[0]) == 4 * (2 * 3 + 2)
    assert len(points(_design("morris", n=3), params)[0]) == 3 * (3 + 1)
    rows, u, _ = points(_design("lhs", n=6), params)
    again = points(_design("lhs", n=6), params)[1]
    assert np.array_equal(u, again) and np.all((0 <= u) & (u <= 1))  # the seed makes it reproducible
    # a Latin hypercube has one point in each of the n strata of every parameter
    assert all(sorted((u[:, j] * 6).astype(int)) == list(range(6)) for j in range(3))
    with pytest.raises(DesignError, match="power of 2"):
        points(_design("sobol", n=6), params)
    with pytest.raises(DesignError, match="design.seed"):
        points(Design(method="lhs", n=4), params)
    with pytest.raises(DesignError, match="not a list"):
        points(_design("lhs", n=4), {"a": [1, 2]})
    with pytest.raises(DesignError, match="grid takes a list"):
        points(Design(), params)
    with pytest.raises(DesignError, match="give it a range"):
        points(_design("morris", n=2), {**params, "x": Distribution(distribution="normal", mean=1.0, sd=0.1)})


def test_sweep_refuses_a_bad_design_before_writing(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        f'base = "{CASES / "student-small"}"\n[design]\nmethod = "lhs"\nn = 3\nseed = 1\n[parameters]\n'
        '"protocol.flow" = { distribution = "uniform", range = [3, 8] }\n'
    )
    with pytest.raises(SweepError, match=r"sweep.toml: run-0000 .*protocol.flow.*bare numbers"):
        expand(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "cases").exists()
    spec.write_text(spec.read_text().replace("n = 3", "n = 3\nlevels = 1"))
    with pytest.raises(SweepError, match="sweep.toml: design.levels"):
        expand(spec, tmp_path / "out")


def _ishigami(u: np.ndarray) -> np.ndarray:
    x = -math.pi + 2 * math.pi * u
    return np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])


def test_sobol_indices_of_the_ishigami_function():
    """Saltelli design + analysis against the analytic indices of Ishigami's function (a = 7, b = 0.1):
    S1 = 0.314, 0.442, 0; ST = 0.558, 0.442, 0.244."""
    params = {f"p{i}": Distribution(range=[0.0, 1.0]) for i in range(3)}
    design = _design("saltelli", n=1024)
    _, u, _ = points(design, params)
    assert u is not None
    y = _ishigami(u)
    ids = [f"run-{i:04d}" for i in range(len(y))]
    rows = {i: {"tumour_log10_kill_mean": v} for i, v in zip(ids, y, strict=True)}
    rows.pop("run-0007")  # an unfinished run drops its base point only
    spec = {**design.model_dump(), "parameters": [{"name": n} for n in params], "unit_samples": u.tolist()}
    a = analyse(spec, ids, rows, {})
    table = a.table["tumour_log10_kill_mean"]
    assert a.used_runs["tumour_log10_kill_mean"] == len(y) - 5
    assert [r[1] for r in table] == pytest.approx([0.314, 0.442, 0.0], abs=0.05)
    assert [r[3] for r in table] == pytest.approx([0.558, 0.442, 0.244], abs=0.05)
    assert any("not in the summaries" in n for n in a.notes)  # other headline outcomes absent: named, skipped


def test_morris_ranks_a_linear_function():
    """y = 4 x0 + x1 (+ 0 x2) on [0, 1]: mu* = 4, 1, 0 exactly."""
    params = {f"p{i}": Distribution(range=[0.0, 1.0]) for i in range(3)}
    design = _design("morris", n=10)
    _, u, _ = points(design, params)
    assert u is not None
    ids = [f"run-{i:04d}" for i in range(u.shape[0])]
    rows = {i: {"marrow_surviving_fraction": 4 * p[0] + p[1]} for i, p in zip(ids, u, strict=True)}
    spec = {**design.model_dump(), "parameters": [{"name": n} for n in params], "unit_samples": u.tolist()}
    table = analyse(spec, ids, rows, {}).table["marrow_surviving_fraction"]
    assert [r[1] for r in table] == pytest.approx([4.0, 1.0, 0.0], abs=1e-9)


def _synthetic_sweep(folder: Path, n: int = 80) -> None:
    """A sweep folder as isolimb sweep + collect would leave it, with outcomes from known functions of two
    dimensionless parameters on [0, 1]: y1 = x1 + x2, y2 = x1 - x2, y3 = x1 x2."""
    folder.mkdir()
    params = {"agents.melphalan.f_u": Distribution(range=[0.0, 1.0]), "tissue.tumour.phi": Distribution(range=[0, 1])}
    design = _design("lhs", n=n)
    rows, u, sampled = points(design, params)
    assert u is not None
    ids = [f"run-{i:04d}" for i in range(n)]
    (folder / results.DESIGN).write_text(
        json.dumps(
            {
                **design.model_dump(),
                "parameters": [
                    {"name": p.name, "unit": p.unit, "distribution": p.spec.model_dump(exclude_none=True)}
                    for p in sampled
                ],
                "unit_samples": u.tolist(),
            }
        )
    )
    with open(folder / results.RUNS, "w", newline="") as f:
        csv.writer(f).writerows([["id", *params], *([i, *r] for i, r in zip(ids, rows, strict=True))])
    x = np.array([[float(v) for v in r] for r in rows])
    with open(folder / results.COLLECTED, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "tumour_log10_kill_mean", "marrow_surviving_fraction", "tumour_tissue_drug_ug_per_g"])
        w.writerows([i, a + b, a - b, 10 * a * b] for i, (a, b) in zip(ids, x, strict=True))


CALIBRATION = """
title = "synthetic"
sweep = "sweep"
samples = 40000
seed = 2
[[targets]]
name = "sum"
outcome = "tumour_log10_kill_mean"
value = 1.0
sd = 0.02
source = "made up"
[[targets]]
name = "difference"
outcome = "marrow_surviving_fraction"
value = 0.2
sd = 0.02
source = "made up"
[[targets]]
name = "product, held back"
outcome = "tumour_tissue_drug_ug_per_g"
value = "{product}"
sd = "0.1 ug/g"
source = "made up"
use = "predict"
"""


def test_calibration_recovers_a_known_gaussian_posterior(tmp_path):
    """Two targets y1 = x1 + x2 = 1.0 +- 0.02 and y2 = x1 - x2 = 0.2 +- 0.02 on a flat prior: the posterior is
    Gaussian with x1 = 0.6, x2 = 0.4 and sd 0.02 / sqrt(2) each (a linear model, exact). The held-back
    10 x1 x2 = 2.4 is predicted with an interval, and a wrong held-back value is called a disagreement."""
    _synthetic_sweep(tmp_path / "sweep")
    spec = tmp_path / "calibration.toml"
    spec.write_text(CALIBRATION.replace("{product}", "2.4 ug/g"))
    result, md = calibrate(spec)
    sd = 0.02 / math.sqrt(2)
    for p, truth in zip(result["parameters"], (0.6, 0.4), strict=True):
        assert p["posterior_median"] == pytest.approx(truth, abs=0.2 * sd)
        lo, hi = p["posterior_95"]
        assert hi - lo == pytest.approx(2 * 1.96 * sd, rel=0.15)
    assert result["effective_samples"] > 1000
    held = result["targets"][2]
    assert held["use"] == "predict" and held["verdict"] == "agrees"
    assert held["engine_median"] == pytest.approx(2.4, abs=0.02)
    assert "| product, held back | predict | made up |" in md.read_text()
    assert json.loads((tmp_path / "sweep" / results.CALIBRATION).read_text())["targets"][0]["verdict"] == "agrees"
    spec.write_text(CALIBRATION.replace("{product}", "3.4 ug/g"))
    assert calibrate(spec)[0]["targets"][2]["verdict"] == "disagrees"


def test_calibration_with_fewer_targets_than_parameters_keeps_the_free_direction_broad(tmp_path):
    """One target x1 + x2 = 1.0 +- 0.02 on a flat prior over the unit square: the posterior is the thin ridge
    x1 + x2 = 1, along which the prior is flat, so x1's marginal is close to uniform on [0, 1] (median 0.5, 95 %
    interval about 0.03-0.97). A proposal that collapsed along the ridge would sample it poorly (few effective
    samples) and give a narrow interval."""
    _synthetic_sweep(tmp_path / "sweep")
    spec = tmp_path / "calibration.toml"
    text = CALIBRATION.replace("{product}", "2.4 ug/g").replace(
        'outcome = "marrow_surviving_fraction"', "use = 'predict'\noutcome = \"marrow_surviving_fraction\""
    )
    spec.write_text(text)
    result, _ = calibrate(spec)
    x1 = result["parameters"][0]
    assert x1["posterior_median"] == pytest.approx(0.5, abs=0.05)
    lo, hi = x1["posterior_95"]
    assert lo < 0.1 and hi > 0.9
    assert result["effective_samples"] > 2000


@pytest.mark.parametrize(
    "change, message",
    [
        (("{product}", "2.4"), r"targets\[2\].value = '2.4': expected a value with units of ug/g"),
        (("{product}", "2.4 mmHg"), "cannot convert it to ug/g"),
        (('outcome = "marrow_surviving_fraction"', 'outcome = "nonsense"'), "not a column of"),
        (("samples = 40000", "samples = 4"), "samples"),
        (('sweep = "sweep"', 'sweep = "nowhere"'), "not a folder written by isolimb sweep"),
    ],
)
def test_calibration_spec_errors_are_one_line(tmp_path, change, message):
    _synthetic_sweep(tmp_path / "sweep", n=12)
    spec = tmp_path / "calibration.toml"
    spec.write_text(CALIBRATION.replace(*change).replace("{product}", "2.4 ug/g"))
    with pytest.raises(CalibrationError, match=message):
        calibrate(spec)


def test_calibrate_command(tmp_path, capsys):
    """isolimb calibrate prints the tables and writes them; a bad spec is one line and exit status 2."""
    from solver.cli import main

    _synthetic_sweep(tmp_path / "sweep", n=40)
    spec = tmp_path / "calibration.toml"
    spec.write_text(CALIBRATION.replace("{product}", "2.4 ug/g"))
    assert main(["calibrate", str(spec), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| parameter | prior |" in printed and (tmp_path / "out" / results.CALIBRATION_MD).exists()
    spec.write_text(CALIBRATION.replace("{product}", "2.4 furlongs"))
    assert main(["calibrate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("isolimb: error: ") and "targets[2].value" in err and "\n" not in err


@pytest.mark.parametrize("method, n, column", [("morris", 4, "mu*"), ("lhs", 12, "Spearman rho")])
def test_collect_writes_the_sensitivity_page_of_a_sampled_sweep(tmp_path, method, n, column):
    """isolimb sweep + collect without the engine: summaries written by hand from a known function of the
    parameters (kill grows with the inflow temperature only); collect ranks it first, names the runs missing and
    the outcomes absent."""
    from solver.sweep import collect

    spec = tmp_path / "sweep.toml"
    spec.write_text(
        f'base = "{CASES / "student-small"}"\n[design]\nmethod = "{method}"\nn = {n}\nseed = 5\n[parameters]\n'
        '"protocol.inflow_temperature.0.value" = { distribution = "uniform", range = ["39 degC", "42 degC"] }\n'
        '"protocol.flow" = { distribution = "uniform", range = ["3 mL/min", "8 mL/min"] }\n'
        '"agents.melphalan.f_u" = { distribution = "uniform", range = [0.2, 0.45] }\n'
    )
    out = tmp_path / "sweep"
    runs = expand(spec, out)
    for run in runs[:-1]:  # the last run has not finished
        temperature = float(str(run["protocol.inflow_temperature.0.value"]).split()[0])
        flow = float(str(run["protocol.flow"]).split()[0])
        summary = {
            "title": "fake",
            "drug_balance_relative_error": 0.0,
            "systemic_leak_fraction": 0.01,
            "tracer_leak_fraction": 0.01 + 0.001 * flow,
            "regions": {"tumour": {"log10_kill_mean": 0.5 * (temperature - 39.0) ** 2, "kill_coverage": 0.0}},
        }
        (out / "results" / str(run["id"])).mkdir(parents=True)
        (out / "results" / str(run["id"]) / results.SUMMARY).write_text(json.dumps(summary))
    done = collect(out)
    assert done.missing == [runs[-1]["id"]] and done.sensitivity is not None
    with open(out / results.SENSITIVITY_CSV, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["outcome"] == "tumour_log10_kill_mean"]
    ranked = sorted(rows, key=lambda r: -abs(float(r[column])))
    assert ranked[0]["parameter"] == "protocol.inflow_temperature.0.value"
    assert any("kill coverage" in note and "does not vary" in note for note in done.notes)
    assert any("muscle mean free AUC" in note and "not in the summaries" in note for note in done.notes)
    assert "tracer_leak_percent" in {r["outcome"] for r in csv.DictReader(open(out / results.SENSITIVITY_CSV))}
    page = done.sensitivity.read_text()
    assert "Which parameters dominate each outcome" in page and "data:image/png;base64" in page
    table = (out / results.SENSITIVITY_MD).read_text().splitlines()  # the docs' table: temperature leads kill
    kill = next(line for line in table if line.startswith("| tumour mean log10 kill |"))
    assert kill.split("|")[3].strip().startswith("inflow_temperature.0.value ")


STUDIES = sorted([*(ROOT / "docs" / "sweeps").glob("*.toml"), *(ROOT / "hpc").glob("*.toml")])


@pytest.mark.parametrize("spec", STUDIES, ids=[p.name for p in STUDIES])
def test_the_documented_studies_expand_into_valid_cases(tmp_path, spec):
    """Every sweep spec the docs give a command for is a valid design over valid cases (each run validated); a
    cluster-sized design (thousands of runs) is expanded at n = 2, its parameters and fixed values unchanged."""
    raw = tomllib.loads(spec.read_text())
    if raw.get("design", {}).get("n", 0) > 64:
        text = spec.read_text().replace(f'base = "{raw["base"]}"', f'base = "{(spec.parent / raw["base"]).resolve()}"')
        spec = tmp_path / spec.name
        spec.write_text(text.replace(f"n = {raw['design']['n']}\n", "n = 2\n"))
    runs = expand(spec, tmp_path / "sweep")
    assert runs and len(runs) <= 400 and (tmp_path / "sweep" / "run_local.sh").is_file()


@pytest.mark.parametrize("spec", sorted((ROOT / "docs" / "calibration").glob("*.toml")), ids=lambda p: p.name)
def test_the_documented_calibrations_are_valid_specs(spec):
    loaded = load(spec)
    assert {t.use for t in loaded.targets} == {"fit", "predict"}  # a fit, and predictions held back from it


def test_skin_subcutis_is_the_mass_weighted_mean_of_skin_and_fat():
    summary = {
        "regions": {
            "skin": {"tissue_drug_ug_per_g": 2.0, "mass_kg": 1.0},
            "fat": {"tissue_drug_ug_per_g": 5.0, "mass_kg": 3.0},
        }
    }
    assert OUTCOMES["skin_subcutis_tissue_drug_ug_per_g"][1](summary) == pytest.approx((2 + 15) / 4)
    del summary["regions"]["fat"]["mass_kg"]  # a summary written before region masses: not computable
    assert math.isnan(OUTCOMES["skin_subcutis_tissue_drug_ug_per_g"][1](summary))
