"""``isolimb report RESULTS``: one self-contained HTML page telling the story of a run.

Sections: the case, the outcome table (MODEL.md section 8), time-series plots, the drug-volume histogram,
slices through the tumour, the drug balance, the metabolic state (ILI), and provenance. Pictures are made
into ``RESULTS/figures`` and embedded in ``RESULTS/report.html`` as base64, so the page can be mailed alone.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from solver import plots, results
from solver.output import clinical, write_atomic

SECTIONS = (
    "Case",
    "Outcomes",
    "Time series",
    "Drug-volume histogram",
    "Survival-volume histogram",
    "Slices",
    "Drug balance",
    "Provenance",
)
LEAK_LIMIT = 0.10  # seed 000: leak fraction x limb dose <= systemic tolerance; the 10 % rule
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}
pre{background:#f7f7f7;padding:0.8em;overflow-x:auto;font-size:0.85em}.note{color:#555;font-size:0.9em}
.ok{color:#1a7f37}.bad{color:#b42318}figure{margin:0}figcaption{font-size:0.9em;color:#444}"""


def html_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}"><figcaption>' + (
        f"{html.escape(caption)}</figcaption></figure>"
    )


def outcome_rows(summary: dict, coverage: dict[str, plots.DoseVolume]) -> list[list[object]]:
    """One row per region, clinical units."""
    rows = []
    for region, r in summary["regions"].items():
        auc = r.get("auc_free_mean")
        h = coverage.get(region)
        rows.append(
            [
                region,
                r["volume_m3"] * 1e6,
                clinical("AUC", auc) if auc is not None else "-",
                clinical("AUC", r["auc_cell_mean"]) if "auc_cell_mean" in r else "-",
                *(h.covered(f) if h else "-" for f in plots.COVERAGE_LEVELS),
                clinical("C", r["peak_free_max"]) if "peak_free_max" in r else "-",
                clinical("A", r["adducts_mean"]) if "adducts_mean" in r else "-",
                r.get("tissue_drug_ug_per_g", "-"),
                r["temperature_max_degC"],
                r["cem43_max_min"],
                r.get("time_above_40C_max_min", "-"),
                r.get("log10_kill_mean", "-"),
                100 * r["kill_coverage"] if "kill_coverage" in r else "-",
                clinical("p", r["pressure_mean_Pa"]),
            ]
        )
    return rows


OUTCOME_HEADER = [
    "region",
    "volume (mL)",
    "mean free AUC (mg min/L)",
    "mean cellular AUC (mg min/L)",
    *(f"AUC{int(100 * f)} (mg min/L)" for f in plots.COVERAGE_LEVELS),
    "peak free C (mg/L)",
    "mean adducts (mg/L)",
    "parent drug at end of perfusion (ug/g)",
    "peak T (degC)",
    "max CEM43 (min)",
    "max time above 40 C (min)",
    "mean log10 kill",
    "kill coverage (% with SF < 0.01)",
    "mean IFP (mmHg)",
]


def build(folder: Path) -> Path:
    """Make the figures and write ``folder/report.html``; returns its path."""
    summary = json.loads((folder / results.SUMMARY).read_text())
    prov = json.loads((folder / results.PROVENANCE).read_text()) if (folder / results.PROVENANCE).exists() else {}
    figures = folder / "figures"
    figures.mkdir(exist_ok=True)
    has_fields = (folder / results.FIELDS_VTKHDF).exists()
    coverage = plots.dose_volume_of(folder)
    auc_name = f"AUC_{summary.get('primary_agent')}_mg_min_per_L"
    parts = [f"<h1>{html.escape(summary['title'])}</h1>", _headline(summary, prov, folder)]
    parts.append("<h2>Case</h2>" + _case_section(folder))
    parts.append("<h2>Outcomes</h2>" + _outcomes_section(summary, coverage))
    parts.append("<h2>Time series</h2>")
    parts += [html_image(p, title) for title, p in plots.time_series_plots(folder, figures).items()]
    parts.append("<h2>Drug-volume histogram</h2>")
    if coverage:
        dvh = plots.dvh_plot(coverage, auc_name.replace("_", " "), figures / "dvh.png")
        parts.append(html_image(dvh, f"cumulative {auc_name}"))
    else:
        parts.append('<p class="note">No AUC field in this result (no drug, or AUC not in output.fields).</p>')
    parts.append("<h2>Survival-volume histogram</h2>")
    kill = plots.kill_volume_of(summary)
    if kill:
        svh = plots.dvh_plot(
            kill,
            f"log10 kill ({summary.get('primary_agent')}, heat-enhanced)",
            figures / "survival_volume.png",
            title="Survival-volume histogram (end of run)",
            ylabel="volume with at least this log10 kill (%)",
        )
        parts.append(html_image(svh, "cumulative log10 kill: -log10 SF, SF = exp(-k INT TER(T) C dt)"))
    else:
        parts.append('<p class="note">No drug in this result: no tumour kill.</p>')
    parts.append("<h2>Slices</h2>")
    if has_fields:
        parts += [html_image(p, title) for title, p in plots.slice_renders(folder, figures).items()]
        parts.append(
            '<p class="note">In ParaView: <code>pvpython open_in_paraview.py</code> in the results folder (headless: '
            "<code>xvfb-run -a pvbatch open_in_paraview.py --png view.png</code>).</p>"
        )
    else:
        parts.append('<p class="note">No fields.vtkhdf in this result (output.formats).</p>')
    parts.append("<h2>Drug balance</h2>" + _balance_section(summary))
    if "probe_temperature_degC" in summary:
        probes = summary["probe_temperature_degC"]
        parts.append(
            "<h2>Probe-controlled temperature</h2>"
            f"<p>The controller's probes (mean) read {probes['min']:.2f} to {probes['max']:.2f} degC from 15 min"
            " after the start of perfusion to its end (seed 003 holds 38-39.5 C); probes and inflow are in the"
            " temperature plot above.</p>"
        )
    if "metabolism" in summary:
        m = summary["metabolism"]
        parts.append("<h2>Metabolic state at the end (ILI)</h2>" + html_table(["quantity", "value"], list(m.items())))
    parts.append("<h2>Provenance</h2>" + _provenance_section(summary, prov))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(summary['title'])}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = folder / results.REPORT
    write_atomic(path, page)
    return path


def _headline(summary: dict, prov: dict, folder: Path) -> str:
    bits = [f"results folder <code>{html.escape(str(folder))}</code>"]
    if prov:
        bits.append(f"run {prov['started_utc']} on {prov['ranks']} rank(s), {prov['wall_seconds']:.0f} s")
    bits.append(f"drug balance error {summary['drug_balance_relative_error']:.1e}")
    return f"<p>{'; '.join(bits)}.</p>"


def _case_section(folder: Path) -> str:
    source = folder / "case.toml"
    text = (
        source.read_text() if source.exists() else json.dumps(json.loads((folder / results.CASE_RESOLVED).read_text()))
    )
    name = "case.toml (as given)" if source.exists() else "case_resolved.json (SI units)"
    return f'<p class="note">{name}; the case in SI units is in case_resolved.json.</p><pre>{html.escape(text)}</pre>'


def _outcomes_section(summary: dict, coverage: dict[str, plots.DoseVolume]) -> str:
    out = [html_table(OUTCOME_HEADER, outcome_rows(summary, coverage))]
    rows = []
    tracer = summary.get("tracer_leak_fraction", 0.0)
    verdict = "within" if tracer <= LEAK_LIMIT else "above"
    for name, a in summary["agents"].items():
        curve = [a.get(k, "-") for k in ("peak_perfusate_mg_per_L", "perfusate_half_life_min")]
        rows.append(
            [name, a["dose_kg"] * 1e6, 100 * tracer, verdict, 100 * a["systemic_leak_fraction"], *curve]
            + [a.get("perfusate_systemic_auc_ratio", "-"), a["peak_systemic_mg_per_L"], a["systemic_auc_mg_min_per_L"]]
            + [a.get("marrow_surviving_fraction", "-")]
        )
    if rows:
        header = ["agent", "dose (mg)", "tracer leak (%)", "10 % rule", "drug leaked while isolated (% of dose)"]
        header += ["peak perfusate (mg/L)", "perfusate half-life (min)", "perfusate / systemic AUC"]
        header += ["peak systemic, release included (mg/L)", "systemic AUC, release included (mg min/L)"]
        header += ["marrow progenitor surviving fraction"]
        out.append(html_table(header, rows))
        out.append(
            '<p class="note">Tracer leak: systemic tracer (a perfusate marker that neither decays nor crosses '
            "vessels) against the concentration complete mixing would give, the largest value while the limb was "
            "isolated: the clinic's leak percentage, to which the 10 % rule applies. Parent drug per gram: free, "
            "albumin-bound and cellular drug and the drug in the tissue's own blood, region mean at the end of "
            "perfusion (adducts apart), as biopsies measure it.</p>"
        )
    surface = summary.get("tumour_surface", {})
    if surface.get("area_m2"):
        header = ["tumour surface", "area (cm^2)", "net filtration (mL/min)", "mean rim outflow (um/s)"]
        header += ["direct surface integral (um/s)", "when"]
        row = [
            "tumour + necrosis",
            surface["area_m2"] * 1e4,
            summary["tumour_net_filtration_mL_per_min"],
            summary["tumour_rim_outflow_um_per_s"],
            surface.get("rim_outflow_direct_um_per_s", "-"),
            surface.get("time", "-"),
        ]
        out.append(html_table(header, [row]))
        out.append(
            '<p class="note">Interstitial fluid leaving the tumour across its surface (outward positive): the balance '
            "flux INT (Jv/V - JL/V) dx over the tumour, which the discrete pressure conserves, and its mean velocity "
            "over the surface; the direct surface integral of -K grad p . n beside it shows how well the mesh "
            "resolves the rim layer (solver/interface.py).</p>"
        )
    out.append(
        '<p class="note">AUC<i>n</i>: the free-drug AUC reached by at least <i>n</i> % of the region volume (from '
        "cell means of the P1 field). Muscle and skin exposure, peak temperature and CEM43 are regional toxicity "
        "surrogates to read beside the Wieberdink grades (seed 001, Table 1), never predictions of them, and so are "
        "the time above 40 C and the marrow surviving fraction (exp(-k f_u systemic AUC), CFU-GM k). Log10 kill: "
        "-log10 SF with SF = exp(-k AUC_eff), AUC_eff = INT TER(T) C dt of the free drug, TER = exp(beta (T - 37 C)) "
        "above 37 C (MODEL.md section 8); k is a calibration parameter (default 1 mL/(ug h)), so kill is a surrogate "
        "to compare runs, not a predicted response. Coverage: the volume fraction with SF < 0.01 (cell means).</p>"
    )
    return "".join(out)


def _balance_section(summary: dict) -> str:
    out = []
    for name, a in summary["agents"].items():
        b = a["balance_kg"]
        rows = [
            [k, v * 1e6, 100 * v / b["dosed"] if b["dosed"] else 0.0] for k, v in b.items() if k != "relative_error"
        ]
        out.append(f"<h3>{html.escape(name)}</h3>" + html_table(["where", "mg", "% of dose"], rows))
        out.append(f"<p>relative balance error (dose - everything accounted for) / dose: {b['relative_error']:.2e}</p>")
    return "".join(out) or "<p>No drug in this run.</p>"


def _provenance_section(summary: dict, prov: dict) -> str:
    out = []
    if prov:
        out.append(html_table(["software", "version"], [[k, json.dumps(v)] for k, v in prov["versions"].items()]))
        out.append(f"<p>command: <code>{html.escape(' '.join(prov['command']))}</code>; host {prov['host']}</p>")
        solvers = [[k, s["ksp_type"], s["pc_type"], s["rtol"]] for k, s in prov["solvers"].items()]
        out.append(html_table(["equation", "KSP", "PC", "rtol"], solvers))
    iters = [[k, v["solves"], v["mean"], v["max"]] for k, v in summary["krylov_iterations"].items()]
    out.append(html_table(["equation", "solves", "mean iterations", "max iterations"], iters))
    out.append(html_table(["phase", "seconds"], list(summary["phase_seconds"].items())))
    mesh = summary.get("mesh", {})
    out.append(html_table(["mesh", "value"], [[k, v] for k, v in mesh.items() if not isinstance(v, dict)]))
    return "".join(out)
