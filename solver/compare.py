"""``isolimb compare RESULTS_A RESULTS_B [...]``: outcomes side by side and time series overlaid.

For questions such as ILP vs ILI, TNF vs no TNF, 39 vs 41 C. The table goes to standard output (Markdown)
and, with the overlaid plots, into ``OUT/compare.html`` (pictures embedded, PNG files in ``OUT``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from solver import plots
from solver import results as folder_files
from solver.output import clinical, write_atomic
from solver.report import CSS, html_image, html_table


class Result:
    """The files of one results folder that a comparison needs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.label = folder.name
        self.summary = json.loads((folder / folder_files.SUMMARY).read_text())
        self.case = json.loads((folder / folder_files.CASE_RESOLVED).read_text())
        self.series = plots.read_series(folder)
        self.regions = json.loads((folder / folder_files.MESH_META).read_text())["regions"]
        self.agent = self.summary.get("primary_agent")
        self.coverage = plots.dose_volume_of(folder)

    def region(self, name: str, key: str, quantity: str | None = None) -> float | None:
        """A region's summary value, in the clinical unit of ``quantity`` (as stored when None)."""
        entry = self.summary["regions"].get(name, {})
        if key not in entry:
            return None
        return clinical(quantity, entry[key]) if quantity else entry[key]


def _protocol(r: Result, key: str):
    return (r.case.get("protocol") or {}).get(key)


def _tnf(r: Result) -> str:
    tnf = _protocol(r, "tnf")
    return f"{tnf['dose'] * 1e6:.3g} mg" if tnf else "none"


def _inflow_max(r: Result) -> float | None:
    schedule = _protocol(r, "inflow_temperature") or []
    return max(p["value"] for p in schedule) - 273.15 if schedule else None


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _agent(r: Result, key: str, scale: float = 1.0) -> float | None:
    return r.summary["agents"][r.agent][key] * scale if r.agent else None


ROWS: list[tuple[str, Callable[[Result], object]]] = [
    ("protocol", lambda r: _protocol(r, "kind") or "-"),
    ("TNF", _tnf),
    ("inflow temperature, max (degC)", _inflow_max),
    ("primary agent", lambda r: r.agent or "-"),
    ("dose (mg)", lambda r: _agent(r, "dose_kg", 1e6)),
    ("tumour mean free AUC (mg min/L)", lambda r: r.region("tumour", "auc_free_mean", "AUC")),
    ("tumour AUC90 (mg min/L)", lambda r: r.coverage["tumour"].covered(0.9) if "tumour" in r.coverage else None),
    ("tumour mean log10 kill", lambda r: r.region("tumour", "log10_kill_mean")),
    ("tumour kill coverage (% with SF < 0.01)", lambda r: _percent(r.region("tumour", "kill_coverage"))),
    ("tumour mean cellular AUC (mg min/L)", lambda r: r.region("tumour", "auc_cell_mean", "AUC")),
    ("tumour mean adducts (mg/L)", lambda r: r.region("tumour", "adducts_mean", "A")),
    ("muscle mean free AUC (mg min/L)", lambda r: r.region("muscle", "auc_free_mean", "AUC")),
    ("skin mean free AUC (mg min/L)", lambda r: r.region("skin", "auc_free_mean", "AUC")),
    ("tumour peak T (degC)", lambda r: r.region("tumour", "temperature_max_degC")),
    ("muscle peak T (degC)", lambda r: r.region("muscle", "temperature_max_degC")),
    ("muscle max CEM43 (min)", lambda r: r.region("muscle", "cem43_max_min")),
    ("muscle max time above 40 C (min)", lambda r: r.region("muscle", "time_above_40C_max_min")),
    ("tumour mean IFP at the end (mmHg)", lambda r: r.region("tumour", "pressure_mean_Pa", "p")),
    ("tumour parent drug at end of perfusion (ug/g)", lambda r: r.region("tumour", "tissue_drug_ug_per_g")),
    ("muscle parent drug at end of perfusion (ug/g)", lambda r: r.region("muscle", "tissue_drug_ug_per_g")),
    (
        "tracer leak (%)",
        lambda r: 100 * r.summary["tracer_leak_fraction"] if "tracer_leak_fraction" in r.summary else None,
    ),
    ("drug leaked while isolated (% of dose)", lambda r: 100 * r.summary["systemic_leak_fraction"]),
    ("peak systemic, release included (mg/L)", lambda r: _agent(r, "peak_systemic_mg_per_L")),
    ("systemic AUC (mg min/L)", lambda r: _agent(r, "systemic_auc_mg_min_per_L")),
    ("marrow progenitor surviving fraction", lambda r: r.summary.get("marrow_surviving_fraction")),
    ("limb pH at the end", lambda r: r.summary.get("metabolism", {}).get("pH")),
    ("drug balance error", lambda r: r.summary["drug_balance_relative_error"]),
]


def table(results: list[Result]) -> tuple[list[str], list[list[object]]]:
    header = ["outcome", *(r.label for r in results)]
    rows = []
    for name, get in ROWS:
        values = [get(r) for r in results]
        if any(v is not None for v in values):
            rows.append([name, *("-" if v is None else v for v in values)])
    return header, rows


def markdown(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


OVERLAYS: list[tuple[str, str, str, Callable[[np.ndarray], np.ndarray]]] = [  # title, y label, column, unit
    ("Perfusate concentration", "mg/L", "{agent}_perfusate_mg_per_L", lambda v: v),
    ("Tumour mean free concentration", "mg/L", "{agent}_C_tumour_mean_mg_per_L", lambda v: v),
    ("Systemic leak", "% of dose", "{agent}_leak_fraction", lambda v: 100.0 * v),
    ("Tumour mean temperature", "degC", "T_tumour_mean_degC", lambda v: v),
    ("Tumour mean interstitial pressure", "mmHg", "p_tumour_mean_Pa", lambda v: clinical("p", v)),
]


def overlay_plots(results: list[Result], out: Path) -> dict[str, Path]:
    made = {}
    for i, (title, ylabel, pattern, unit) in enumerate(OVERLAYS):
        fig, ax = plots.figure(title, ylabel)
        drawn = 0
        for r in results:
            key = pattern.format(agent=r.agent)
            if key in r.series:
                ax.plot(r.series["time_min"], unit(r.series[key]), label=r.label)
                drawn += 1
        if drawn:
            ax.legend()
            made[title] = plots.save(fig, out / f"compare_{i}.png")
        else:
            plt.close(fig)
    with_dvh = [r for r in results if "tumour" in r.coverage]
    if with_dvh:
        made["Tumour drug-volume histograms"] = plots.dvh_plot(
            {r.label: r.coverage["tumour"] for r in with_dvh},
            "free-drug AUC (mg min/L)",
            out / "compare_dvh.png",
            title="Tumour drug-volume histograms",
            ylabel="tumour volume with at least this AUC (%)",
            emphasis=None,
        )
    with_kill = {r.label: plots.kill_volume_of(r.summary).get("tumour") for r in results}
    if any(h is not None for h in with_kill.values()):
        made["Tumour survival-volume histograms"] = plots.dvh_plot(
            {label: h for label, h in with_kill.items() if h is not None},
            "log10 kill",
            out / "compare_kill.png",
            title="Tumour survival-volume histograms",
            ylabel="tumour volume with at least this log10 kill (%)",
            emphasis=None,
        )
    return made


def compare(folders: list[Path], out: Path) -> tuple[str, Path]:
    """Write ``out/compare.html`` and its PNG files; return (Markdown table, html path)."""
    results = [Result(f) for f in folders]
    labels = [r.label for r in results]
    for r in results:  # same folder names in different places: tell them apart by their parent
        if labels.count(r.label) > 1:
            r.label = f"{r.folder.parent.name}/{r.label}"
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table(results)
    parts = ["<h1>isolimb comparison</h1>"]
    parts.append(
        html_table(["result", "title", "folder"], [[r.label, r.summary["title"], str(r.folder)] for r in results])
    )
    parts.append("<h2>Outcomes</h2>" + html_table(header, rows))
    parts.append("<h2>Time series</h2>")
    parts += [html_image(p, title) for title, p in overlay_plots(results, out).items()]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>isolimb comparison</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = out / folder_files.COMPARE
    write_atomic(path, page)
    return markdown(header, rows), path
