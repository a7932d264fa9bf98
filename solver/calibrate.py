"""``isolimb calibrate SPEC``: fit a sweep's sampled parameters to clinical targets over an emulator, and predict
the targets held back from the fit, each with an interval.

The route (docs/validation.md says why): a collected sweep over the parameters to fit (a Latin hypercube or Sobol'
design, solver/design.py) trains one emulator per outcome, a thin-plate radial-basis interpolant with a linear
trend in the unit cube of the design (``scipy.interpolate.RBFInterpolator``); its leave-one-out error is added to
each target's spread. The prior is the design's distributions (uniform in the unit cube, which is each parameter's
quantile scale); the likelihood is Gaussian in each target used in the fit. The posterior is sampled by importance
sampling: the proposal is a Gaussian around the best fit (``scipy.optimize.least_squares`` from the best of a
Sobol' sample of the prior) with twice the Laplace spread, mixed with 10 % of the prior so that no region is missed.
Posterior medians and 95 % intervals of the parameters follow, and of every target's outcome through the emulator
(targets used in the fit show how well it fits; the others are predictions).

A spec (TOML)::

    title = "Tumour kill constant and melphalan permeability against tissue melphalan"
    sweep = "../../results/calibration-lhs"   # a folder written by isolimb sweep and collected
    samples = 20000                             # posterior draws
    seed = 1
    [[targets]]
    name = "tumour parent melphalan, end of a 60-min leg ILP"
    outcome = "tumour_tissue_drug_ug_per_g"     # a column of collected.csv
    value = "6.8 ug/g"
    sd = "2 ug/g"                               # the target's spread (inter-patient, measurement)
    source = "Klaase 1994 [V]"
    use = "fit"                                 # or "predict" (held back: compared, never fitted)
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from solver import results
from solver.design import DesignError, Distribution, Parameter, split
from solver.output import write_atomic
from solver.units import ureg

MAX_FOLDS = 200  # leave-one-out up to this many runs, else this many folds of cross-validation
PROPOSAL_INFLATION = 2.0  # proposal spread / Laplace spread
DEFENSIVE = 0.1  # share of the proposal drawn from the prior
LEVELS = (0.025, 0.5, 0.975)


class CalibrationError(ValueError):
    """A calibration spec or sweep that cannot be used, in one line."""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    outcome: str
    value: str | float
    sd: str | float
    source: str
    use: Literal["fit", "predict"] = "fit"


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = "calibration"
    sweep: str
    samples: int = Field(default=20000, ge=100, le=10_000_000)
    seed: int = Field(default=1, ge=0)
    targets: list[Target] = Field(min_length=1)


def load(path: Path) -> Spec:
    try:
        return Spec.model_validate(tomllib.loads(path.read_text()))
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise CalibrationError(f"{path}: TOML syntax error: {err}") from None
    except ValueError as err:  # pydantic
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": (), "msg": str(err)}
        where = ".".join(str(p) for p in first["loc"])
        raise CalibrationError(f"{path}: {where}: {first['msg']}") from None


def _in_unit(value: str | float, unit: str, where: str, spread: bool = False) -> float:
    """A target value in the unit of its outcome column (a bare number only for a dimensionless outcome)."""
    try:
        number, own = split(value)
    except DesignError as err:
        raise CalibrationError(f"{where}: {err}") from None
    if bool(own) != bool(unit):
        expected = f'a value with units of {unit}, e.g. "1 {unit}"' if unit else "a bare number (dimensionless)"
        raise CalibrationError(f"{where} = {value!r}: expected {expected}")
    if own == unit or not unit:
        return number
    try:
        if spread and unit == "degC":  # a spread of temperatures is a difference
            return float(ureg.Quantity(number, own.replace("degC", "delta_degC")).to("delta_degC").magnitude)
        return float(ureg.Quantity(number, own).to(unit).magnitude)
    except Exception:
        raise CalibrationError(f"{where} = {value!r}: cannot convert it to {unit}") from None


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, levels=LEVELS) -> list[float]:
    order = np.argsort(x)
    cdf = np.cumsum(w[order])
    cdf /= cdf[-1]
    return [float(x[order][min(np.searchsorted(cdf, q), x.size - 1)]) for q in levels]


class Emulator:
    """Thin-plate RBF with a linear trend, on the unit cube, for one outcome; ``loo`` its leave-one-out RMS error
    (cross-validated in :data:`MAX_FOLDS` folds for larger sweeps)."""

    def __init__(self, u: np.ndarray, y: np.ndarray) -> None:
        from scipy.interpolate import RBFInterpolator

        self.model = RBFInterpolator(u, y, kernel="thin_plate_spline", degree=1)
        folds = np.arange(y.size) % (y.size if y.size <= MAX_FOLDS else MAX_FOLDS)  # leave-one-out, or k-fold
        errors = np.empty(y.size)
        for k in np.unique(folds):
            out = folds == k
            model = RBFInterpolator(u[~out], y[~out], kernel="thin_plate_spline", degree=1)
            errors[out] = model(u[out]) - y[out]
        self.loo = float(np.sqrt(np.mean(np.square(errors))))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        return self.model(np.atleast_2d(u))


def calibrate(spec_path: Path, out: Path | None = None) -> tuple[dict, Path]:
    """Fit, sample the posterior, predict; write ``calibration.json`` and ``calibration.md`` into ``out`` (default:
    the sweep folder) and return (the result, the Markdown file)."""
    spec = load(spec_path)
    folder = (spec_path.parent / spec.sweep).resolve()
    from solver.sweep import UNITS, SweepError, read_design

    if not (folder / results.RUNS).exists():
        raise CalibrationError(f"{spec_path}: sweep = {spec.sweep!r}: not a folder written by isolimb sweep ({folder})")
    try:
        design = read_design(folder)
    except SweepError as err:
        raise CalibrationError(str(err)) from None
    if design["method"] not in ("lhs", "sobol", "saltelli"):
        raise CalibrationError(
            f"{spec_path}: sweep = {spec.sweep!r}: expected a sweep with a sampled design (lhs or sobol), "
            f"got method {design['method']!r}"
        )
    collected = folder / results.COLLECTED
    if not collected.exists():
        raise CalibrationError(f"{spec_path}: sweep = {spec.sweep!r}: no collected.csv (run isolimb collect first)")
    with open(collected, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    with open(folder / results.RUNS, newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f)]
    try:
        params = [Parameter(p["name"], Distribution.model_validate(p["distribution"])) for p in design["parameters"]]
    except (DesignError, ValueError, KeyError) as err:
        raise CalibrationError(f"{folder / results.DESIGN}: damaged ({err})") from None
    u_all = np.array(design["unit_samples"], dtype=float)
    finished = [i for i, run in enumerate(ids) if run in rows]
    u = u_all[finished]
    if len(finished) < 2 * len(params) + 2:
        raise CalibrationError(f"{folder}: {len(finished)} finished runs: too few to emulate {len(params)} parameters")
    targets: list[dict[str, Any]] = []
    for k, t in enumerate(spec.targets):
        where = f"{spec_path}: targets[{k}]"
        if t.outcome not in next(iter(rows.values())):
            raise CalibrationError(f"{where}.outcome = {t.outcome!r}: not a column of {collected}")
        unit = UNITS.get(t.outcome, "")
        y = np.array([float(rows[ids[i]][t.outcome]) for i in finished])
        if not np.isfinite(y).all():
            raise CalibrationError(f"{where}.outcome = {t.outcome!r}: missing (nan) in some runs of {collected}")
        value = _in_unit(t.value, unit, f"{where}.value")
        sd = _in_unit(t.sd, unit, f"{where}.sd", spread=True)
        if not sd > 0:
            raise CalibrationError(f"{where}.sd = {t.sd!r}: expected a positive spread")
        targets.append({"spec": t, "unit": unit, "value": value, "sd": sd, "emulator": Emulator(u, y)})
    fit = [t for t in targets if t["spec"].use == "fit"]
    if not fit:
        raise CalibrationError(f'{spec_path}: no target with use = "fit"')
    sigma = np.array([math.hypot(t["sd"], t["emulator"].loo) for t in fit])
    wanted = np.array([t["value"] for t in fit])

    def residuals(points: np.ndarray) -> np.ndarray:
        points = np.atleast_2d(points)
        return (np.stack([t["emulator"](points) for t in fit], axis=-1) - wanted) / sigma

    best, draws, weights = _posterior(residuals, len(params), spec.samples, spec.seed)
    ess = float(weights.sum() ** 2 / np.square(weights).sum())
    result: dict = {"title": spec.title, "sweep": str(folder), "runs": len(finished), "samples": spec.samples}
    result["effective_samples"] = round(ess, 1)
    result["parameters"] = []
    for j, p in enumerate(params):
        x = p.values(draws[:, j])
        lo, med, hi = _weighted_quantiles(x, weights)
        result["parameters"].append(
            {
                "name": p.name,
                "unit": p.unit,
                "prior": p.describe(),
                "best_fit": float(p.values(best[j : j + 1])[0]),
                "posterior_median": med,
                "posterior_95": [lo, hi],
            }
        )
    result["targets"] = []
    for tg in targets:
        y = tg["emulator"](draws)
        lo, med, hi = _weighted_quantiles(y, weights)
        engine_sd = (hi - lo) / 3.92
        agrees = abs(med - tg["value"]) <= 2 * math.hypot(tg["sd"], engine_sd, tg["emulator"].loo)
        result["targets"].append(
            {
                "name": tg["spec"].name,
                "outcome": tg["spec"].outcome,
                "unit": tg["unit"],
                "use": tg["spec"].use,
                "source": tg["spec"].source,
                "value": tg["value"],
                "sd": tg["sd"],
                "engine_median": med,
                "engine_95": [lo, hi],
                "emulator_loo_rms": tg["emulator"].loo,
                "verdict": "agrees" if agrees else "disagrees",
            }
        )
    out = out or folder
    write_atomic(out / results.CALIBRATION, json.dumps(result, indent=2, allow_nan=False) + "\n")
    md = out / results.CALIBRATION_MD
    write_atomic(md, markdown(result))
    return result, md


def _posterior(residuals, dimension: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best fit, posterior draws in the unit cube and their importance weights (prior uniform on the cube)."""
    from scipy.optimize import least_squares
    from scipy.stats import multivariate_normal, qmc

    start = qmc.Sobol(d=dimension, scramble=True, seed=seed).random(4096)
    misfit = np.square(residuals(start)).sum(axis=1)
    fits = [
        least_squares(lambda x: residuals(x)[0], start[i], bounds=(0.0, 1.0))
        for i in np.argsort(misfit)[: min(8, start.shape[0])]
    ]
    best = min(fits, key=lambda r: r.cost)
    jac = best.jac
    curvature = jac.T @ jac  # Laplace: the Gauss-Newton curvature of the misfit at the best fit
    lam, vec = np.linalg.eigh(0.5 * (curvature + curvature.T))
    # variance 1 / curvature per direction; a direction the data pin less than the prior does (curvature under 12,
    # the inverse variance of the uniform prior; zero where fewer targets than parameters) gets the prior's spread
    cov = vec @ np.diag(1.0 / np.clip(lam, 12.0, 1e10)) @ vec.T
    proposal = multivariate_normal(best.x, PROPOSAL_INFLATION**2 * cov, allow_singular=True, seed=seed)
    rng = np.random.default_rng(seed)
    from_prior = rng.random(samples) < DEFENSIVE
    draws = np.where(from_prior[:, None], rng.random((samples, dimension)), proposal.rvs(samples).reshape(samples, -1))
    inside = np.all((draws >= 0.0) & (draws <= 1.0), axis=1)
    q = (1 - DEFENSIVE) * proposal.pdf(draws).reshape(samples) + DEFENSIVE
    log_like = -0.5 * np.square(residuals(np.clip(draws, 0, 1))).sum(axis=1)
    log_w = np.where(inside, log_like - np.log(q), -np.inf)
    weights = np.exp(log_w - log_w[inside].max())
    return best.x, draws[inside], weights[inside]


def markdown(result: dict) -> str:
    """The parameters' posterior and the targets with their verdicts, as docs/validation.md tables."""
    lines = [f"# {result['title']}", ""]
    lines += [
        f"{result['runs']} engine runs; {result['samples']} posterior draws, {result['effective_samples']:.0f} "
        "effective.",
        "",
        "| parameter | prior | best fit | posterior median | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    for p in result["parameters"]:
        u = f" {p['unit']}" if p["unit"] else ""
        lo, hi = p["posterior_95"]
        lines.append(
            f"| {p['name']} | {p['prior']} | {p['best_fit']:.4g}{u} | {p['posterior_median']:.4g}{u} "
            f"| {lo:.4g} - {hi:.4g}{u} |"
        )
    lines += [
        "",
        "| target | used | source | value (sd) | engine (95 % interval) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        u = f" {t['unit']}" if t["unit"] else ""
        lo, hi = t["engine_95"]
        lines.append(
            f"| {t['name']} | {t['use']} | {t['source']} | {t['value']:.4g} ({t['sd']:.3g}){u} "
            f"| {t['engine_median']:.4g} ({lo:.4g} - {hi:.4g}){u} | {t['verdict']} |"
        )
    return "\n".join(lines) + "\n"
