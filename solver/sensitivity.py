"""Sensitivity of a sweep's outcomes to its sampled parameters (``isolimb collect``, after solver/design.py).

- Saltelli designs: Sobol' first-order (S1) and total-order (ST) indices with bootstrap confidence intervals
  (``SALib.analyze.sobol``);
- Morris designs: mu* (mean absolute elementary effect, per whole range of the parameter's quantiles, in the
  outcome's unit) with its confidence interval, and sigma (``SALib.analyze.morris``);
- Latin hypercube and Sobol' sequences: Spearman rank correlations with a Fisher-z 95 % interval (``scipy.stats``),
  a screening that needs no special structure.

A run that has not finished, or whose summary lacks an outcome, drops its whole block of the design (a Saltelli
base point, a Morris trajectory), which keeps the estimators valid on the rest. Written into the sweep folder:
``sensitivity.csv``, ``sensitivity.html`` (tables and bar charts, pictures embedded like the report's) and
``sensitivity.md`` (the table of leading parameters, for docs).
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from solver import results
from solver.output import write_atomic

# The headline outcomes (issue 15), as columns of collected.csv; optional ones may be absent from a summary.
HEADLINE = (
    "tumour_log10_kill_mean",
    "tumour_kill_coverage_percent",
    "tumour_auc_free_mg_min_per_L",
    "muscle_auc_free_mg_min_per_L",
    "tumour_tissue_drug_ug_per_g",
    "muscle_tissue_drug_ug_per_g",
    "tracer_leak_percent",
    "marrow_surviving_fraction",
    "muscle_temperature_max_degC",
    "skin_temperature_max_degC",
    "probe_temperature_min_degC",
    "probe_temperature_max_degC",
)
RESAMPLES = 200  # bootstrap resamples of the confidence intervals
CONFIDENCE = 0.95


@dataclass
class Analysis:
    """Indices per outcome: ``table[outcome]`` is a list of rows (parameter first), ``columns`` their names."""

    method: str
    columns: list[str]
    table: dict[str, list[list[object]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    used_runs: dict[str, int] = field(default_factory=dict)


def _blocks(method: str, design: dict) -> int:
    d = len(design["parameters"])
    if method == "saltelli":
        return 2 * d + 2 if design["second_order"] else d + 2
    if method == "morris":
        return d + 1
    return 1


def analyse(design: dict, ids: list[str], rows: dict[str, dict], labels: dict[str, str]) -> Analysis:
    """Indices of every headline outcome; ``ids`` all runs in design order, ``rows`` the finished ones by id."""
    method = design["method"]
    names = [p["name"] for p in design["parameters"]]
    u = np.array(design["unit_samples"], dtype=float)
    block = _blocks(method, design)
    columns = {
        "saltelli": ["parameter", "S1", "S1 conf", "ST", "ST conf"],
        "morris": ["parameter", "mu*", "mu* conf", "sigma", "mu"],
    }.get(method, ["parameter", "Spearman rho", "rho low", "rho high"])
    out = Analysis(method, columns)
    problem = {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}
    for outcome in HEADLINE:
        label = labels.get(outcome, outcome)
        y = np.array([float(rows[i].get(outcome, "nan")) if i in rows else math.nan for i in ids])
        finished = np.array([i in rows for i in ids])
        if finished.any() and not np.isfinite(y[finished]).any():
            out.notes.append(f"{label}: not in the summaries of this sweep (no such region or output): skipped")
            continue
        keep = np.isfinite(y).reshape(-1, block).all(axis=1).repeat(block)
        if keep.sum() < 2 * block or keep.sum() < 4:
            out.notes.append(f"{label}: only {int(keep.sum() // block)} complete block(s) of the design: skipped")
            continue
        y_kept, u_kept = y[keep], u[keep]
        # round-off is not variation: a peak temperature that moves by 1e-10 K over the design does not vary
        if np.ptp(y_kept) <= 1e-9 * max(1.0, float(np.abs(y_kept).max())):
            out.notes.append(f"{label}: does not vary over the design (all {y_kept[0]:.4g}): skipped")
            continue
        out.used_runs[outcome] = int(keep.sum())
        seed = design.get("seed")
        if method == "saltelli":
            from SALib.analyze import sobol

            si = sobol.analyze(
                problem, y_kept, design["second_order"], RESAMPLES, CONFIDENCE, print_to_console=False, seed=seed
            )
            values = [si["S1"], si["S1_conf"], si["ST"], si["ST_conf"]]
        elif method == "morris":
            from SALib.analyze import morris

            si = morris.analyze(problem, u_kept, y_kept, RESAMPLES, CONFIDENCE, num_levels=design["levels"], seed=seed)
            values = [si["mu_star"], si["mu_star_conf"], si["sigma"], si["mu"]]
        else:
            from scipy.stats import spearmanr

            n = y_kept.size
            rho = np.array([spearmanr(u_kept[:, j], y_kept).statistic for j in range(len(names))])
            half = 1.959964 / math.sqrt(max(n - 3, 1))
            z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
            values = [rho, np.minimum(np.tanh(z - half), rho), np.maximum(np.tanh(z + half), rho)]
        out.table[outcome] = [[name, *(float(v[j]) for v in values)] for j, name in enumerate(names)]
    if out.used_runs and min(out.used_runs.values()) < len(ids):
        out.notes.append(
            f"some outcomes use fewer than the {len(ids)} runs of the design (unfinished runs or absent outcomes drop"
            " their whole block); see the run counts per outcome"
        )
    return out


def _leading(a: Analysis, table: list[list[object]], count: int = 4) -> list[tuple[str, float, float | None]]:
    """The ``count`` leading parameters of one outcome: (name, main measure, half-width of its interval or None),
    the measure being ST (Saltelli), mu* as a share of the largest mu* (Morris) or |rho| (otherwise)."""
    measure, conf = {"saltelli": (3, 4), "morris": (1, 2)}.get(a.method, (1, None))
    ranked = sorted(table, key=lambda r: -abs(float(r[measure])))  # type: ignore[arg-type]
    scale = max(abs(float(ranked[0][measure])), 1e-300) if a.method == "morris" else 1.0  # type: ignore[arg-type]
    return [
        (
            str(r[0]),
            abs(float(r[measure])) / scale,  # type: ignore[arg-type]
            float(r[conf]) / scale if conf is not None else None,  # type: ignore[arg-type]
        )
        for r in ranked[:count]
    ]


def dominance(a: Analysis) -> tuple[list[str], list[list[object]]]:
    """One row per outcome: the parameters' main measure (ST, mu* scaled to the largest, |rho|), largest first."""
    header = ["outcome", "dominant parameters (largest first)"]
    rows: list[list[object]] = [
        [outcome, "; ".join(f"{name} ({value:.2f})" for name, value, _ in _leading(a, table))]
        for outcome, table in a.table.items()
    ]
    return header, rows


def markdown(a: Analysis, labels: dict[str, str]) -> str:
    """The dominance table for docs: per outcome the runs used and the leading parameters with the half-width of
    their 95 % interval (ST for Saltelli, mu* scaled to the largest for Morris, |rho| otherwise)."""
    name = {"saltelli": "ST", "morris": "mu* / largest mu*"}.get(a.method, "|Spearman rho|")
    lines = [f"| outcome | runs | leading parameters: {name} (+- 95 % half-width) |", "|---|---|---|"]
    for outcome, table in a.table.items():
        shown = [
            f"{_short(p)} {value:.2f}" + (f" +- {half:.2f}" if half is not None else "")
            for p, value, half in _leading(a, table)
        ]
        lines.append(f"| {labels.get(outcome, outcome)} | {a.used_runs[outcome]} | {'; '.join(shown)} |")
    return "\n".join(lines) + "\n"


def write_csv(a: Analysis, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["outcome", *a.columns])
        for outcome, table in a.table.items():
            writer.writerows([outcome, *row] for row in table)
    return path


def _short(name: str) -> str:
    """A parameter path short enough for a plot axis: its last three keys."""
    return ".".join(name.split(".")[-3:])


def plot(a: Analysis, outcome: str, label: str, path: Path) -> Path:
    """Horizontal bars per parameter, largest at the top (a tornado): S1 and ST, mu* (with sigma), or rho."""
    import matplotlib.pyplot as plt

    from solver.plots import save

    table = a.table[outcome]
    measure = {"saltelli": 3, "morris": 1}.get(a.method, 1)
    order = sorted(range(len(table)), key=lambda j: abs(float(table[j][measure])))  # type: ignore[arg-type]
    names = [_short(str(table[j][0])) for j in order]
    col = lambda k: np.array([float(table[j][k]) for j in order])  # type: ignore[arg-type]  # noqa: E731
    y = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(order) + 1.6), layout="constrained")
    if a.method == "saltelli":
        ax.barh(y + 0.2, col(1), 0.4, xerr=col(2), label="first order S1", color="C0", capsize=2)
        ax.barh(y - 0.2, col(3), 0.4, xerr=col(4), label="total order ST", color="C3", capsize=2)
        ax.set_xlabel(f"Sobol' index ({100 * CONFIDENCE:.0f} % interval)")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-0.2, 1.2)  # indices lie in [0, 1]; the intervals of a small design reach far beyond
        ax.legend(loc="lower right")
    elif a.method == "morris":
        ax.barh(y + 0.2, col(1), 0.4, xerr=col(2), label="mu*", color="C0", capsize=2)
        ax.barh(y - 0.2, col(3), 0.4, label="sigma", color="C1")
        ax.set_xlabel("elementary effect per parameter range (outcome units)")
        ax.legend(loc="lower right")
    else:
        rho = col(1)
        ax.barh(
            y,
            rho,
            0.6,
            xerr=[np.maximum(rho - col(2), 0), np.maximum(col(3) - rho, 0)],
            color=np.where(rho > 0, "C3", "C0"),
            capsize=2,
        )
        ax.set_xlabel("Spearman rank correlation (95 % interval)")
        ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, names)
    ax.set_title(label)
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path)


EXPLAIN = {
    "saltelli": "S1: the share of the outcome's variance due to the parameter alone; ST: its share including its "
    "interactions with the others (ST - S1 large: the parameter acts through interactions; ST near 0: it can be "
    "fixed anywhere in its range). Intervals: bootstrap over the runs; negative values within their interval are 0. "
    "The indices are estimates from a finite design: intervals wider than the indices call for a larger n.",
    "morris": "mu*: the mean absolute change of the outcome when the parameter moves (on its quantile scale) across "
    "its range, in the outcome's unit: a ranking measure; sigma: the spread of those changes (large sigma: "
    "nonlinear effect or interactions).",
    "lhs": "Spearman rank correlation of each parameter with the outcome over the sample (monotone association only; "
    "Saltelli designs give variance shares).",
}


def page(
    a: Analysis, design: dict, labels: dict[str, str], folder: Path, title: str, n_runs: int, missing: list[str]
) -> Path:
    """Write ``folder/sensitivity.html``, ``.csv`` and ``.md``; return the page."""
    from solver.report import CSS, html_image, html_table

    write_csv(a, folder / results.SENSITIVITY_CSV)
    write_atomic(folder / results.SENSITIVITY_MD, markdown(a, labels))
    parts = [f"<h1>Sensitivity: {html.escape(title)}</h1>"]
    parts.append(
        f"<p>Design <b>{html.escape(design['method'])}</b>, n = {design['n']}, seed {design['seed']}: {n_runs} runs, "
        f"{n_runs - len(missing)} finished. Folder <code>{html.escape(str(folder))}</code>.</p>"
    )
    parts.append(
        html_table(
            ["parameter", "distribution (case units)"], [[p["name"], p.get("text", "")] for p in design["parameters"]]
        )
    )
    parts.append(f'<p class="note">{html.escape(EXPLAIN.get(a.method, EXPLAIN["lhs"]))}</p>')
    if a.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in a.notes) + "</ul>")
    header, rows = dominance(a)
    parts.append("<h2>Which parameters dominate each outcome</h2>")
    parts.append(html_table(header, [[labels.get(str(r[0]), r[0]), r[1]] for r in rows]))
    figures = folder / "figures"
    figures.mkdir(exist_ok=True)
    for i, (outcome, table) in enumerate(a.table.items()):
        label = labels.get(outcome, outcome)
        parts.append(f"<h2>{html.escape(label)}</h2><p class='note'>{a.used_runs[outcome]} runs.</p>")
        parts.append(html_table(a.columns, table))
        parts.append(html_image(plot(a, outcome, label, figures / f"sensitivity_{i}.png"), label))
    text = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>isolimb sensitivity</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = folder / results.SENSITIVITY
    write_atomic(path, text)
    return path
