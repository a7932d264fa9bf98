"""Sampling designs of ``isolimb sweep``: a full grid, or n points drawn from per-parameter distributions.

Methods (``[design] method``):

- ``grid``: the product of the value lists (no ``[design]`` table needed);
- ``lhs``: Latin hypercube (``scipy.stats.qmc.LatinHypercube``), n points;
- ``sobol``: scrambled Sobol' sequence (``scipy.stats.qmc.Sobol``), n a power of 2;
- ``saltelli``: Saltelli's design for Sobol' indices (``SALib.sample.sobol``): n (a power of 2) base points give
  n (D + 2) runs, n (2 D + 2) with ``second_order = true``;
- ``morris``: Morris trajectories (``SALib.sample.morris``): n trajectories of D + 1 runs on ``levels`` levels.

Every design is drawn in the unit hypercube and mapped through each parameter's inverse distribution function
(``scipy.stats``): a parameter is a table ``{ distribution = "uniform", range = ["3 mmHg", "9 mmHg"] }`` in the
units of the case file (the samples are written with the unit of the range's first value). Distributions:
``uniform`` and ``loguniform`` (``range``), ``triangular`` (``range``, ``mode``), ``normal`` (``mean``, ``sd``,
truncated to ``range`` if given), ``lognormal`` (``median``, ``gsd`` the geometric standard deviation, a number
> 1, truncated to ``range`` if given). Dimensionless parameters take bare numbers. ``also = [paths]`` writes the
same value at more places of the case (the points of a temperature plateau).
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from solver.units import ureg

Scalar = str | int | float
METHODS = ("grid", "lhs", "sobol", "saltelli", "morris")
SAMPLED = METHODS[1:]
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


class DesignError(ValueError):
    """A design that cannot be drawn, in one line (the caller adds the file)."""


class Distribution(BaseModel):
    """One sampled parameter (clinical units as strings; bare numbers only for dimensionless parameters)."""

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["uniform", "loguniform", "triangular", "normal", "lognormal"] = "uniform"
    range: list[Scalar] | None = Field(default=None, min_length=2, max_length=2)
    mode: Scalar | None = None
    mean: Scalar | None = None
    sd: Scalar | None = None
    median: Scalar | None = None
    gsd: float | None = None
    also: list[str] = []  # more dotted paths that take the same value (e.g. every point of a temperature plateau)


class Design(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "lhs", "sobol", "saltelli", "morris"] = "grid"
    n: int | None = Field(default=None, ge=1, le=1_000_000)
    seed: int | None = Field(default=None, ge=0)
    second_order: bool = False  # saltelli: second-order indices as well (2 D + 2 runs per base point)
    levels: int = Field(default=4, ge=2, le=100)  # morris: grid levels


def split(value: Scalar) -> tuple[float, str]:
    """``"3.1e-14 m^2/(Pa s)"`` -> (3.1e-14, "m^2/(Pa s)"); a bare number -> (value, "")."""
    if isinstance(value, bool):
        raise DesignError(f"{value!r}: expected a number or a value with units")
    if isinstance(value, int | float):
        return float(value), ""
    found = _NUMBER.match(value)
    if not found:
        raise DesignError(f'{value!r}: expected a number followed by its units, e.g. "39 degC"')
    number, unit = float(found.group(1)), found.group(2)
    if unit:
        try:
            ureg.Quantity(1.0, unit)
        except Exception:  # pint raises many kinds
            raise DesignError(f"{value!r}: unknown units {unit!r}") from None
    if not math.isfinite(number):
        raise DesignError(f"{value!r}: expected a finite number")
    return number, unit


def _in(value: Scalar, unit: str, what: str) -> float:
    """``value`` as a number in ``unit`` (the unit of the parameter's first value)."""
    number, own = split(value)
    if bool(own) != bool(unit):
        raise DesignError(f"{what} = {value!r}: expected {'units of ' + repr(unit) if unit else 'a bare number'}")
    if own == unit or not unit:
        return number
    try:
        return float(ureg.Quantity(number, own).to(unit).magnitude)
    except Exception:
        raise DesignError(f"{what} = {value!r}: cannot convert it to {unit!r} (units of the parameter)") from None


class Parameter:
    """A sampled parameter: its unit and the frozen scipy distribution of its magnitude in that unit."""

    def __init__(self, name: str, spec: Distribution) -> None:
        needs_uq()
        from scipy import stats

        self.name, self.spec = name, spec
        d = spec.distribution
        needed = {
            "uniform": ("range",),
            "loguniform": ("range",),
            "triangular": ("range", "mode"),
            "normal": ("mean", "sd"),
            "lognormal": ("median", "gsd"),
        }[d]
        given = {k for k in ("range", "mode", "mean", "sd", "median", "gsd") if getattr(spec, k) is not None}
        self.also = list(spec.also)
        if missing := [k for k in needed if k not in given]:
            raise DesignError(f"parameter {name!r}: a {d} distribution needs {' and '.join(missing)}")
        extra = given - set(needed) - ({"range"} if d in ("normal", "lognormal") else set())
        if extra:
            raise DesignError(f"parameter {name!r}: {', '.join(sorted(extra))} has no meaning for a {d} distribution")
        first = {"range": spec.range[0] if spec.range else None, "mean": spec.mean, "median": spec.median}
        self.unit = split(next(v for v in (first["range"], first["mean"], first["median"]) if v is not None))[1]
        lo, hi, truncated = -math.inf, math.inf, spec.range is not None
        if spec.range is not None:
            lo, hi = (_in(v, self.unit, f"{name}.range") for v in spec.range)
            if not lo < hi:
                raise DesignError(f"parameter {name!r}: range = {spec.range}: expected the lower value first")
        if d == "uniform":
            self.dist = stats.uniform(lo, hi - lo)
        elif d == "loguniform":
            if lo <= 0:
                raise DesignError(f"parameter {name!r}: a loguniform range must be positive, got {spec.range}")
            self.dist = stats.loguniform(lo, hi)
        elif d == "triangular":
            mode = _in(spec.mode, self.unit, f"{name}.mode")  # type: ignore[arg-type]
            if not lo <= mode <= hi:
                raise DesignError(f"parameter {name!r}: mode = {spec.mode!r} is outside range {spec.range}")
            self.dist = stats.triang((mode - lo) / (hi - lo), lo, hi - lo)
        elif d == "normal":
            mean = _in(spec.mean, self.unit, f"{name}.mean")  # type: ignore[arg-type]
            sd, sd_unit = split(spec.sd)  # type: ignore[arg-type]
            if sd_unit != self.unit:  # a spread in the mean's own unit (no offset conversions of degC)
                raise DesignError(f"{name}.sd = {spec.sd!r}: expected the unit of the mean, {self.unit or 'none'!r}")
            if not sd > 0:
                raise DesignError(f"parameter {name!r}: sd = {spec.sd!r}: expected a positive spread")
            if not truncated:
                self.dist = stats.norm(mean, sd)
            else:
                self.dist = stats.truncnorm((lo - mean) / sd, (hi - mean) / sd, mean, sd)
        else:  # lognormal
            median = _in(spec.median, self.unit, f"{name}.median")  # type: ignore[arg-type]
            if not median > 0 or not spec.gsd or not spec.gsd > 1:
                raise DesignError(f"parameter {name!r}: a lognormal needs median > 0 and gsd > 1")
            s = math.log(spec.gsd)
            if not truncated:
                self.dist = stats.lognorm(s, scale=median)
            else:  # truncated: the log is a truncated normal
                if lo <= 0:
                    raise DesignError(f"parameter {name!r}: a lognormal range must be positive, got {spec.range}")
                self.dist = _LogTruncNorm(math.log(median), s, math.log(lo), math.log(hi))
        self.bounded = truncated or d in ("uniform", "loguniform", "triangular")

    def values(self, unit_samples: np.ndarray) -> np.ndarray:
        """Magnitudes (in :attr:`unit`) at points of [0, 1]."""
        u = unit_samples if self.bounded else np.clip(unit_samples, 1e-9, 1 - 1e-9)
        return np.asarray(self.dist.ppf(u), dtype=float)

    def text(self, magnitude: float) -> str | float:
        """A sampled value as the case file wants it: "3.21e-14 m^2/(Pa s)", or a number if dimensionless."""
        return f"{magnitude:.6g} {self.unit}" if self.unit else float(f"{magnitude:.6g}")

    def describe(self) -> str:
        s = self.spec
        bits = [f"{k} {getattr(s, k)}" for k in ("range", "mode", "mean", "sd", "median", "gsd") if getattr(s, k)]
        return f"{s.distribution}: " + ", ".join(str(b) for b in bits)


class _LogTruncNorm:
    """A lognormal truncated to [exp(a), exp(b)]: exp of a truncated normal (only ``ppf`` is needed)."""

    def __init__(self, mu: float, s: float, a: float, b: float) -> None:
        from scipy import stats

        self.normal = stats.truncnorm((a - mu) / s, (b - mu) / s, mu, s)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return np.exp(self.normal.ppf(u))


def _power_of_two(n: int, method: str) -> int:
    m = int(round(math.log2(n)))
    if 2**m != n:
        raise DesignError(
            f"design.n = {n}: expected a power of 2 for method {method!r} (e.g. {2**m} or {2 ** (m + 1)})"
        )
    return m


def needs_uq() -> None:
    """Sampled designs, sensitivity and calibration need scipy and SALib (the ``uq`` extra)."""
    try:
        import SALib  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as err:
        raise DesignError(f"sampled designs need scipy and SALib ({err}): pip install 'isolimb[uq]'") from None


def unit_samples(design: Design, dimension: int) -> np.ndarray:
    """The design's points in [0, 1]^D, one row per run, in run order."""
    needs_uq()
    from scipy.stats import qmc

    method, n, seed = design.method, design.n, design.seed
    assert n is not None
    if method == "lhs":
        return qmc.LatinHypercube(d=dimension, seed=seed).random(n)
    if method == "sobol":
        return qmc.Sobol(d=dimension, scramble=True, seed=seed).random_base2(_power_of_two(n, method))
    problem = {"num_vars": dimension, "names": [f"x{i}" for i in range(dimension)], "bounds": [[0.0, 1.0]] * dimension}
    if method == "saltelli":
        from SALib.sample import sobol as saltelli

        _power_of_two(n, method)
        return saltelli.sample(problem, n, calc_second_order=design.second_order, scramble=True, seed=seed)
    from SALib.sample import morris

    return morris.sample(problem, n, num_levels=design.levels, seed=seed)


def points(
    design: Design, parameters: dict[str, list[str | int | float | bool] | Distribution]
) -> tuple[list[tuple[object, ...]], np.ndarray | None, list[Parameter]]:
    """The case values of every run (rows in run order), the unit samples (None for a grid) and the sampled
    parameters. Raises :class:`DesignError` naming the key and what was expected."""
    if design.method == "grid":
        if bad := [k for k, v in parameters.items() if not isinstance(v, list)]:
            raise DesignError(
                f"parameters.{bad[0]!r}: a grid takes a list of values; a distribution needs [design] method = "
                "lhs, sobol, saltelli or morris"
            )
        return list(itertools.product(*parameters.values())), None, []  # type: ignore[arg-type]
    if design.n is None:
        raise DesignError(f"design.n: expected the number of samples for method {design.method!r}")
    if design.seed is None:
        raise DesignError(f"design.seed: expected an integer seed for method {design.method!r} (reproducible draws)")
    if bad := [k for k, v in parameters.items() if isinstance(v, list)]:
        raise DesignError(
            f"parameters.{bad[0]!r}: method {design.method!r} samples distributions; expected a table such as "
            '{ distribution = "uniform", range = ["39 degC", "42 degC"] }, not a list'
        )
    sampled = [Parameter(name, spec) for name, spec in parameters.items()]  # type: ignore[arg-type]
    if design.method == "morris" and (unbounded := [p.name for p in sampled if not p.bounded]):
        raise DesignError(f"parameter {unbounded[0]!r}: Morris levels reach the ends of [0, 1]; give it a range")
    if design.method in ("saltelli", "morris") and len(sampled) < 2:
        raise DesignError(f"method {design.method!r}: expected at least 2 parameters")
    u = unit_samples(design, len(sampled))
    columns = [p.values(u[:, j]) for j, p in enumerate(sampled)]
    if any(not np.all(np.isfinite(c)) for c in columns):
        raise DesignError("a distribution gave a value that is not finite")
    rows: list[tuple[object, ...]] = [
        tuple(p.text(c[i]) for p, c in zip(sampled, columns, strict=True)) for i in range(u.shape[0])
    ]
    return rows, u, sampled
