"""The results folder as a contract: the names of its files and the keys of ``summary.json`` that other tools
read. Writers (run, report, sweep) and readers (report, compare, collect, probe, the tests) take the names from
here, so a rename is one edit and a key a reader needs cannot silently disappear (tests/test_results.py checks
every run's summary against :data:`SUMMARY_KEYS`).
"""

from __future__ import annotations

# -------------------------------------------------------------------------------------------- files
SUMMARY = "summary.json"  # outcomes of the run (SI unless the key names a unit)
SERIES = "timeseries.csv"  # one row per recorded time, clinical units in the column names
CASE_COPY = "case.toml"  # the case file as given
CASE_RESOLVED = "case_resolved.json"  # the case in SI units, defaults filled
PROVENANCE = "provenance.json"  # versions, command, solvers, costs
RUN_LOG = "run.log"
MESH = "mesh.xdmf"  # mesh with cell (region) and facet (boundary) tags
MESH_META = "mesh.json"  # region and boundary names and ids of the mesh
FIELDS_VTKHDF = "fields.vtkhdf"  # fields over time for pyvista and ParaView >= 5.12
FIELDS_XDMF = "fields.xdmf"  # fields over time for ParaView 5.11
PARAVIEW_SCRIPT = "open_in_paraview.py"
REPORT = "report.html"
COMPARE = "compare.html"
CHECKPOINT = "checkpoint"  # folder; CHECKPOINT/STATE holds the scalars
CHECKPOINT_STATE = "state.json"
RUNS = "runs.csv"  # a sweep's list of runs
COLLECTED = "collected.csv"  # a sweep's collected outcomes
DESIGN = "design.json"  # a sweep's design: method, n, seed, distributions and the unit-cube samples
SENSITIVITY = "sensitivity.html"  # a sweep's sensitivity indices (Saltelli, Morris) or rank correlations
SENSITIVITY_CSV = "sensitivity.csv"  # the same indices as a table
SENSITIVITY_MD = "sensitivity.md"  # the leading parameters per outcome, a Markdown table for docs
CALIBRATION = "calibration.json"  # isolimb calibrate: posterior of the fitted parameters, targets and predictions
CALIBRATION_MD = "calibration.md"  # the same as Markdown tables for docs/validation.md

# --------------------------------------------------------------------------------------- summary keys
# Keys of summary.json that tools other than the writer read, with their unit.
SUMMARY_KEYS: dict[str, str] = {
    "drug_balance_relative_error": "1: |dose - everything accounted for| / dose, worst agent",
    "systemic_leak_fraction": "1: drug leaked to the body through the tourniquet while isolated / dose",
    "tracer_leak_fraction": "1: largest systemic tracer against complete mixing while isolated (the clinic's leak)",
    "primary_agent": "name of the agent the region outcomes are for",
    "marrow_surviving_fraction": "1: marrow progenitors, exp(-k f_u systemic AUC) of the primary agent",
    "steps": "number of accepted steps",
    "phase_seconds": "wall time per equation and output (s)",
    "peak_memory_GB": "GB: peak resident memory, {largest_rank, all_ranks} (this segment's processes)",
    "krylov_iterations": "solves, mean and max iterations per linear system",
    "mesh": "cells, vertices, sizes",
    "ranks": "MPI ranks of the last segment",
    "tumour_rim_outflow_um_per_s": "um/s: mean outward interstitial velocity across the tumour surface (flux integral)",
    "tumour_net_filtration_mL_per_min": "mL/min: net interstitial fluid leaving the tumour across its surface",
}
AGENT_KEYS: dict[str, str] = {  # summary["agents"][name]
    "dose_kg": "kg",
    "balance_kg": "kg per destination, and the relative error",
    "peak_systemic_mg_per_L": "mg/L, tourniquet release and after included",
    "systemic_auc_mg_min_per_L": "mg min/L, release and after included",
    "peak_perfusate_mg_per_L": "mg/L",
    "perfusate_auc_mg_min_per_L": "mg min/L, while isolated",
    "perfusate_systemic_auc_ratio": "1",
}
REGION_KEYS: dict[str, str] = {  # summary["regions"][region]
    "volume_m3": "m^3",
    "mass_kg": "kg: volume x the tissue's density",
    "pressure_mean_Pa": "Pa, at the end",
    "temperature_max_degC": "degC: the highest temperature anywhere in the region at any time of the run",
    "cem43_max_min": "min",
    "time_above_40C_max_min": "min: the longest time any point of the region spent above 40 C",
    "auc_free_mean": "kg s/m^3, of the primary agent",
    "auc_cell_mean": "kg s/m^3",
    "adducts_mean": "kg/m^3",
    "peak_free_max": "kg/m^3",
    "log10_kill_mean": "1: volume mean of -log10 SF, SF = exp(-k INT TER(T) C dt), of the primary agent",
    "kill_coverage": "1: volume fraction with SF < 0.01",
}
OPTIONAL_KEYS: dict[str, str] = {  # present when the case has what they measure
    "probe_temperature_degC": "degC: {min, max} of the probes' mean from 15 min after the start of perfusion to"
    " its end (cases with protocol.temperature_control)",
    "metabolism": "ILI acid-base at the end: pH, base excess (mmol/L), lactate, oxygen used",
}
DRUG_REGION_KEYS: dict[str, str] = {  # regions where the clinic takes biopsies (tissue with blood vessels)
    "tissue_drug_ug_per_g": "ug/g: parent drug (free, albumin-bound, cellular, tissue blood) at end of perfusion",
}


def missing_keys(summary: dict) -> list[str]:
    """The contract's keys a summary of a run with drug lacks (dotted paths); empty when it is whole."""
    out = [k for k in SUMMARY_KEYS if k not in summary]
    for name, agent in summary.get("agents", {}).items():
        out += [f"agents.{name}.{k}" for k in AGENT_KEYS if k not in agent]
    for region, entry in summary.get("regions", {}).items():
        out += [f"regions.{region}.{k}" for k in REGION_KEYS if k not in entry]
        if entry.get("volume_m3") and region in ("tumour", "muscle", "skin", "fat"):
            out += [f"regions.{region}.{k}" for k in DRUG_REGION_KEYS if k not in entry]
    return out
