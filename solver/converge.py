"""``isolimb converge CASE``: a discretisation-error study of a case in mesh and in time.

Two sweeps (solver.sweep) are written into the study folder: ``mesh/`` runs the case at three or more mesh levels
(``mesh.size_factor`` f0, f0/r, f0/r^2, ...; the generators' size fields are self-similar in size_factor, so
every cell shrinks by the same ratio) and ``time/`` at dt, dt/2, dt/4 on the case's own mesh. Each is an
ordinary sweep folder: run here (in this process, at this command's rank count; finished runs are skipped),
or submit its ``sweep.sbatch`` SLURM array and call ``isolimb converge CASE -o OUT --collect`` afterwards.
With ``--refine K`` a third sweep, ``refined/``, adds K finer mesh levels: the finest generated mesh split into 8
per tetrahedron K times in parallel (``mesh.refine``), for levels gmsh cannot mesh on one rank; a file mesh
(no size_factor) is studied by refinement alone (as read, refined 1x, 2x, ...). Refinement keeps the parent's
surfaces (curved boundaries stay as faceted as the parent mesh), so those levels differ from the generated family
by a geometry error of the parent's size, second order for volume means.

For every headline outcome three levels (the finest, then each next coarser one at least 1.15 times its size)
give the observed order p, the Richardson-extrapolated value and the error estimate of every level (Celik et
al. 2008, J. Fluids Eng. 130:078001, for ratios that need not be equal; the mesh size is h = (cells)^(-1/3),
the time size dt). Oscillating or flat differences give no order: the level's error is then bounded by the
spread of the levels; differences that grow as the levels refine give no order either (Celik's absolute value
would make one up): the two finest are then extrapolated with the formal order. A table (``convergence.md``, ``.csv``)
and a plot (``convergence.png``) are written.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from solver import results, sweep
from solver.output import write_atomic

DEFAULT_RATIO = 1.4  # mesh size ratio between levels: 2.7x the cells per level
MIN_RATIO = 1.15  # smallest size ratio between the levels Richardson uses
MAX_OBSERVED_ORDER = 20.0  # the observed order is sought in (0, 20]
SWEEPS = ("mesh", "refined", "time")  # the study's sweep folders; "refined" belongs to the mesh study
MMHG = 133.322387415


def _primary(s: dict) -> dict:
    return s["agents"].get(s.get("primary_agent", ""), {})


# outcome -> (label, function of a summary); the headline outcomes of the issue first
HEADLINE: dict[str, tuple[str, object]] = {
    "tumour_auc_free": ("tumour free AUC (mg min/L)", sweep.OUTCOMES["tumour_auc_free_mg_min_per_L"][1]),
    "tumour_log10_kill": ("tumour mean log10 kill", sweep.OUTCOMES["tumour_log10_kill_mean"][1]),
    "muscle_auc_free": ("muscle free AUC (mg min/L)", sweep.OUTCOMES["muscle_auc_free_mg_min_per_L"][1]),
    "tumour_tissue_drug": (
        "tumour parent drug, end of perfusion (ug/g)",
        sweep.OUTCOMES["tumour_tissue_drug_ug_per_g"][1],
    ),
    "tumour_ifp": (
        "tumour mean IFP (mmHg)",
        lambda s: s["regions"]["tumour"]["pressure_mean_Pa"] / MMHG if "tumour" in s["regions"] else math.nan,
    ),
    "tumour_rim_outflow": ("tumour rim outflow (um/s)", sweep.OUTCOMES["tumour_rim_outflow_um_per_s"][1]),
    "tumour_net_filtration": (
        "tumour net filtration (mL/min)",
        sweep.OUTCOMES["tumour_net_filtration_mL_per_min"][1],
    ),
    "perfusate_auc": ("perfusate AUC (mg min/L)", lambda s: _primary(s).get("perfusate_auc_mg_min_per_L", math.nan)),
}


class ConvergeError(ValueError):
    """A study that cannot be set up or read, in one line."""


@dataclass
class Richardson:
    """Observed order, extrapolated value and per-level relative error estimates of one outcome."""

    order: float  # nan when the differences oscillate or vanish
    extrapolated: float
    errors: list[float]  # |value - extrapolated| / |extrapolated| per level (coarse to fine); the spread if no order
    gci_fine: float  # Roache's grid convergence index of the finest level (safety factor 1.25)
    note: str
    used_order: float = math.nan  # the order the extrapolation used (observed, or formal when capped or absent)


def _triple(h: np.ndarray) -> list[int]:
    """Indices of the three levels Richardson uses: the finest, then each next coarser level whose size is at
    least MIN_RATIO times the last one taken (levels closer than that amplify the noise of the differences)."""
    order = [int(i) for i in np.argsort(h)]  # fine to coarse
    chosen = order[:1]
    for i in order[1:]:
        if len(chosen) < 3 and h[i] >= MIN_RATIO * h[chosen[-1]]:
            chosen.append(i)
    return chosen


def _observed_order(r21: float, r32: float, ratio: float) -> float:
    """The p > 0 that solves e32/e21 = r21^p (r32^p - 1)/(r21^p - 1) (Celik's equation without its absolute
    value, which would turn a difference that grows under refinement into a spurious order); nan if none."""

    def residual(p: float) -> float:
        return p * math.log(r21) + math.log((r32**p - 1) / (r21**p - 1)) - math.log(ratio)

    lo, hi = 1e-6, MAX_OBSERVED_ORDER
    if residual(lo) >= 0 or residual(hi) <= 0:
        return math.nan
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if residual(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def richardson(h: list[float], values: list[float], max_order: float = math.inf) -> Richardson:
    """Richardson extrapolation from three levels of ``h`` (sizes, any order) and ``values``: the finest and the
    next coarser ones at least MIN_RATIO apart (Celik et al. 2008, unequal ratios allowed).

    An observed order above ``max_order`` (the formal order of the discretisation) is not trusted: the
    extrapolation and the error estimates then use ``max_order`` (more cautious), as Roache advises. Differences
    that do not shrink as the levels refine give no order: the two finest are then extrapolated with the formal
    order (or, without one, the error is bounded by the spread of the levels)."""
    hs, vs = np.asarray(h, float), np.asarray(values, float)
    idx = _triple(hs)
    if len(idx) < 3 or not np.all(np.isfinite(vs[idx])):
        return Richardson(math.nan, math.nan, [math.nan] * len(h), math.nan, "fewer than three levels")
    (h1, h2, h3), (f1, f2, f3) = hs[idx], vs[idx]
    r21, r32 = h2 / h1, h3 / h2
    e21, e32 = f2 - f1, f3 - f2
    scale = max(abs(f1), 1e-300)
    spread = float(np.ptp(vs)) / scale
    if abs(e21) <= 1e-12 * scale and abs(e32) <= 1e-12 * scale:
        return Richardson(math.nan, f1, [abs(v - f1) / scale for v in values], 0.0, "identical at every level")
    if e21 * e32 <= 0 or abs(e21) <= 1e-12 * scale:
        errors = [spread] * len(values)
        return Richardson(math.nan, f1, errors, spread, "oscillating: error bounded by the spread of the levels")
    p = _observed_order(r21, r32, e32 / e21)
    if math.isnan(p) and not math.isfinite(max_order):
        errors = [spread] * len(values)
        return Richardson(p, f1, errors, spread, "differences grow as the levels refine: error bounded by the spread")
    used = max_order if math.isnan(p) else min(p, max_order)
    ext = (r21**used * f1 - f2) / (r21**used - 1)
    errors = [abs(v - ext) / max(abs(ext), 1e-300) for v in values]
    gci = 1.25 * abs(e21 / f1) / (r21**used - 1) if f1 != 0 else math.nan
    if math.isnan(p):
        note = f"differences grow as the levels refine: no order; two finest extrapolated at the formal order {used:g}"
    else:
        note = "monotone" if p >= 0.5 else "monotone, order below 0.5: extrapolation doubtful"
        if used < p:
            note += f"; extrapolated with the formal order {used:g}"
    return Richardson(p, ext, errors, gci, note, used)


# --------------------------------------------------------------------------------------------- the study
def _levels(case_file: Path, factors: list[float] | None, levels: int, ratio: float) -> list[float]:
    raw = tomllib.loads(case_file.read_text())
    if factors:
        return sorted(factors, reverse=True)
    f0 = float(raw.get("mesh", {}).get("size_factor", 1.0))
    return [round(f0 / ratio**i, 4) for i in range(levels)]


def prepare(
    case: Path,
    out: Path,
    factors: list[float] | None = None,
    levels: int = 3,
    ratio: float = DEFAULT_RATIO,
    time_levels: int = 3,
    ranks: int = 1,
    wall: str = "01:00:00",
    refine: int = 0,
) -> dict[str, list[dict]]:
    """Write the ``mesh`` (and, with ``time_levels`` >= 3, ``time``) sweeps of ``case`` into ``out``; ``refine``
    adds as many finer levels (the ``refined`` sweep), each the finest mesh split once more in parallel
    (``mesh.refine``, 8x the cells): levels beyond what gmsh meshes on one rank, and the only levels of a file mesh."""
    case_file = case / "case.toml" if case.is_dir() else case
    if not case_file.exists():
        raise ConvergeError(f"{case}: no case.toml there")
    raw = tomllib.loads(case_file.read_text())
    base_refine = int(raw.get("mesh", {}).get("refine", 0))
    studies: dict[str, tuple[dict[str, list], dict[str, object]]] = {}  # name -> (varied, fixed)
    finer = list(range(base_refine + 1, base_refine + refine + 1))
    if raw.get("mesh", {}).get("generator") == "file":
        if refine < 2:
            raise ConvergeError(f"{case}: a file mesh has no size_factor; study it by refinement (--refine 2 or more)")
        studies["mesh"] = ({"mesh.refine": [base_refine, *finer]}, {})
    else:
        mesh_levels = _levels(case_file, factors, levels, ratio)
        if len(mesh_levels) + refine < 3:
            raise ConvergeError(f"--factors {mesh_levels}: a study needs at least three mesh levels")
        studies["mesh"] = ({"mesh.size_factor": mesh_levels}, {})
        if refine:
            studies["refined"] = ({"mesh.refine": finer}, {"mesh.size_factor": mesh_levels[-1]})
    if time_levels >= 3:
        from solver.case import parse_case

        dt = parse_case(case_file).numerics.dt
        studies["time"] = ({"numerics.dt": [f"{dt / 2**i:.10g} s" for i in range(time_levels)]}, {})
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, (parameters, fixed) in studies.items():
        spec = out / f"{name}.toml"
        text = f'base = "{case_file.resolve()}"\nranks = {ranks}\ntime = "{wall}"\n[parameters]\n'
        text += "".join(f'"{k}" = {json.dumps(v)}\n' for k, v in parameters.items())
        if fixed:
            text += "[fixed]\n" + "".join(f'"{k}" = {json.dumps(v)}\n' for k, v in fixed.items())
        write_atomic(spec, text)
        if (out / name / results.RUNS).exists():  # already prepared: keep its results
            with open(out / name / results.RUNS) as f:
                runs[name] = list(csv.DictReader(f))
            continue
        try:
            runs[name] = sweep.expand(spec, out / name)
        except sweep.SweepError as err:
            raise ConvergeError(str(err)) from None
    return runs


def pending(out: Path) -> list[Path]:
    """Case folders of the study without a finished run."""
    todo = []
    for name in SWEEPS:
        for case in sorted((out / name / "cases").glob("run-*")):
            if not (out / name / "results" / case.name / results.SUMMARY).exists():
                todo.append(case)
    return todo


@dataclass
class Study:
    """One sweep of the study: sizes per level (coarse to fine) and outcomes per level."""

    name: str  # "mesh" or "time"
    parameter: list[str]  # each level's name: "size_factor 1.3", "size_factor 1.3, refined 1x", "dt 30 s"
    sizes: list[float]  # h = cells^(-1/3) (relative) or dt (s)
    cells: list[int]
    wall_seconds: list[float]
    outcomes: dict[str, list[float]]
    formal_order: float = math.inf  # P_k elements: k + 1 for means; backward Euler: 1


@dataclass
class Level:
    """One finished run of the study, read from its folder."""

    case: dict  # the resolved case (SI units)
    summary: dict
    wall_seconds: float

    def label(self, study: str) -> str:
        """How the level is named in the table: 'size_factor 1.3', 'size_factor 1.3, refined 1x', 'dt 30 s'."""
        if study == "time":
            return f"dt {self.case['numerics']['dt']:g} s"
        mesh = self.case["mesh"]
        where = f"size_factor {mesh['size_factor']:g}" if "size_factor" in mesh else "as read"
        return f"{where}, refined {mesh['refine']}x" if mesh.get("refine") else where


def _read_sweep(folder: Path) -> list[Level]:
    """Every run of one sweep folder of the study."""
    with open(folder / results.RUNS) as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    levels = []
    for run_id in ids:
        run = folder / "results" / run_id
        if not (run / results.SUMMARY).exists():
            raise ConvergeError(
                f"{run / results.SUMMARY}: missing; run the study first (isolimb converge without --collect)"
            )
        prov = json.loads((run / results.PROVENANCE).read_text()) if (run / results.PROVENANCE).exists() else {}
        case = json.loads((run / results.CASE_RESOLVED).read_text())
        levels.append(Level(case, json.loads((run / results.SUMMARY).read_text()), prov.get("wall_seconds", math.nan)))
    return levels


def read_study(out: Path, name: str) -> Study | None:
    """The ``mesh`` study (its ``refined`` levels included) or the ``time`` study of the folder ``out``."""
    folder = out / name
    if not (folder / results.RUNS).exists():
        return None
    levels = _read_sweep(folder)
    if name == "mesh" and (out / "refined" / results.RUNS).exists():
        levels += _read_sweep(out / "refined")
    cells = [int(level.summary["mesh"]["cells"]) for level in levels]
    if name == "mesh":
        sizes = [c ** (-1.0 / 3.0) for c in cells]
    else:
        sizes = [float(level.case["numerics"]["dt"]) for level in levels]
    outcomes = {}
    for k, (_, get) in HEADLINE.items():
        values = []
        for level in levels:
            try:
                values.append(float(get(level.summary)))  # type: ignore[operator]
            except (KeyError, TypeError, ValueError):
                values.append(math.nan)
        if all(np.isfinite(values)) and any(v != 0 for v in values):
            outcomes[k] = values
    pick = [int(i) for i in np.argsort(sizes)[::-1]]  # coarse to fine
    degree = levels[0].case.get("numerics", {}).get("degree", 1)
    return Study(
        name,
        [levels[i].label(name) for i in pick],
        [sizes[i] for i in pick],
        [cells[i] for i in pick],
        [levels[i].wall_seconds for i in pick],
        {k: [v[i] for i in pick] for k, v in outcomes.items()},
        degree + 1.0 if name == "mesh" else 1.0,
    )


def table(study: Study) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per outcome, each level's value and error estimate, the order and the extrapolation."""
    n = len(study.sizes)
    header = ["outcome", *(f"{p} ({c} cells)" for p, c in zip(study.parameter, study.cells, strict=True))]
    header += ["observed order", "extrapolated", "note"]
    rows = []
    for k, values in study.outcomes.items():
        r = richardson(study.sizes, values, study.formal_order)
        cells = [f"{v:.5g} ({100 * e:.2f} %)" for v, e in zip(values, r.errors, strict=True)]
        order = f"{r.order:.2f}" if np.isfinite(r.order) else "-"
        rows.append([HEADLINE[k][0], *cells, order, f"{r.extrapolated:.5g}", r.note])
    assert all(len(row) == n + 4 for row in rows)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def report(out: Path) -> tuple[str, list[Path]]:
    """Read the finished study, write ``convergence.md``, ``convergence.csv`` and ``convergence.png``; return the
    text of the tables and the files written."""
    texts, written, studies = [], [], []
    for name in ("mesh", "time"):
        study = read_study(out, name)
        if study is None:
            continue
        studies.append(study)
        header, rows = table(study)
        title = "Mesh levels" if name == "mesh" else "Time steps (on the case's own mesh)"
        texts.append(f"## {title}\n\nValue of each level (its estimated relative discretisation error).\n\n")
        texts.append(markdown(header, rows))
        walls = ", ".join(f"{w:.0f} s" for w in study.wall_seconds)
        texts.append(f"\nWall time per level: {walls}.\n\n")
        with open(out / f"convergence_{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        written.append(out / f"convergence_{name}.csv")
    if not studies:
        raise ConvergeError(f"{out}: no study here (isolimb converge CASE -o {out} first)")
    text = "# Discretisation-error study\n\n" + "".join(texts)
    write_atomic(out / "convergence.md", text)
    written.append(out / "convergence.md")
    written.append(plot(studies, out / "convergence.png"))
    return text, written


def plot(studies: list[Study], path: Path) -> Path:
    """Each headline outcome against the level size, with its Richardson extrapolation (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for s in studies for k in s.outcomes))
    fig, axes = plt.subplots(len(keys), len(studies), figsize=(4.5 * len(studies), 2.6 * len(keys)), squeeze=False)
    for j, study in enumerate(studies):
        for i, k in enumerate(keys):
            ax = axes[i][j]
            if k not in study.outcomes:
                ax.set_visible(False)
                continue
            values = study.outcomes[k]
            r = richardson(study.sizes, values, study.formal_order)
            ax.plot(study.sizes, values, "o-", label="levels")
            if np.isfinite(r.used_order):  # the curve the extrapolation assumes, through the finest level
                h = np.linspace(0.0, max(study.sizes), 50)
                h1, f1 = min(study.sizes), values[int(np.argmin(study.sizes))]
                observed = "none" if np.isnan(r.order) else f"{r.order:.2f}"
                label = f"p = {r.used_order:.2f}" + (f" (observed: {observed})" if r.order != r.used_order else "")
                ax.plot(h, r.extrapolated + (f1 - r.extrapolated) * (h / h1) ** r.used_order, "--", label=label)
            ax.axhline(r.extrapolated, color="grey", lw=0.8)
            ax.set_title(HEADLINE[k][0], fontsize=9)
            ax.set_xlabel("h = cells^(-1/3)" if study.name == "mesh" else "dt (s)", fontsize=8)
            ax.set_xlim(left=0)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
