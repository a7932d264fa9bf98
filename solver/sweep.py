"""Parameter sweeps: ``isolimb sweep SPEC`` expands a design (a grid, Latin hypercube, Sobol', Saltelli or Morris)
into case folders and a SLURM job array; ``isolimb collect DIR`` gathers the summaries into one CSV, plots outcomes
against each parameter and, for Saltelli and Morris designs, writes the sensitivity indices (solver/sensitivity.py).

SLURM is the distributed engine (an array job, one MPI run per task); nothing here schedules anything.
A sweep spec (TOML)::

    base = "../cases/student-small"          # a case folder or file, relative to the spec
    ranks = 2                                # MPI ranks per run
    time = "00:20:00"                        # SLURM wall time per run
    launcher = "mpiexec -n {ranks}"          # or "srun" where the site's MPI is built for it
    [parameters]                             # dotted paths into the case; integers index lists
    "protocol.inflow_temperature.0.value" = ["39 degC", "41 degC"]
    "protocol.tnf.ifp_reduction" = [0.5, 0.8]

or, sampled (solver/design.py)::

    [design]
    method = "saltelli"                      # lhs, sobol, saltelli, morris (grid: the default)
    n = 64
    seed = 1
    [parameters]
    "protocol.inflow_temperature.0.value" = { distribution = "uniform", range = ["39 degC", "42 degC"] }
    "tissue.tumour.K" = { distribution = "loguniform", range = ["1e-14 m^2/(Pa s)", "1e-13 m^2/(Pa s)"] }
    [fixed]                                  # set in every run, not varied: the study's mesh, step and output
    "mesh.size_factor" = 2.5
    "numerics.dt" = "2 min"
    "output.fields" = []

Every generated case is validated before anything is written.
"""

from __future__ import annotations

import copy
import csv
import json
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from solver import integrity, results
from solver.case import CaseError, FileMesh, parse_case_tree
from solver.design import Design, DesignError, Distribution, points
from solver.output import clinical, write_atomic
from solver.units import ureg


class SweepError(ValueError):
    """A sweep spec or folder that cannot be used, in one line."""


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str
    ranks: int = Field(default=1, ge=1)
    time: str = "01:00:00"
    launcher: str = "mpiexec -n {ranks}"
    design: Design = Design()
    fixed: dict[str, str | int | float | bool | list[str]] = {}
    parameters: dict[str, list[str | int | float | bool] | Distribution] = Field(min_length=1)


def _set(tree: dict, path: str, value: object, where: str) -> None:
    keys = path.split(".")
    node: Any = tree
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SweepError(f"{where}: parameter {path!r}: {'.'.join(keys[:-1])} is not a table or list")


def load_spec(path: Path) -> SweepSpec:
    try:
        raw = tomllib.loads(path.read_text())
        return SweepSpec.model_validate(raw)
    except OSError as err:
        raise SweepError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: TOML syntax error: {err}") from None
    except ValueError as err:  # pydantic
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": (), "msg": str(err)}
        where = ".".join(str(p) for p in first["loc"])
        raise SweepError(f"{path}: {where}: {first['msg']}") from None


def expand(spec_path: Path, out: Path) -> list[dict[str, object]]:
    """Write ``out/cases/<id>/case.toml`` for every point of the design, ``out/runs.csv``, ``out/design.json``,
    ``out/sweep.sbatch`` and ``out/run_local.sh``; return the runs (id and parameter values)."""
    spec = load_spec(spec_path)
    base = (spec_path.parent / spec.base).resolve()
    base_file = base / "case.toml" if base.is_dir() else base
    try:
        base_raw = tomllib.loads(base_file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SweepError(f"{spec_path}: base = {spec.base!r}: cannot read a case there: {err}") from None
    names = list(spec.parameters)
    if both := sorted(set(names) & set(spec.fixed)):
        raise SweepError(f"{spec_path}: {both[0]!r} is both fixed and a parameter; expected one of the two")
    for path, fixed in spec.fixed.items():
        try:
            _set(base_raw, path, fixed, str(spec_path))
        except (IndexError, ValueError, KeyError, TypeError) as err:
            raise SweepError(f"{spec_path}: fixed {path!r}: not a path into the base case ({err})") from None
    try:
        rows, unit_samples, sampled = points(spec.design, spec.parameters)
    except DesignError as err:
        raise SweepError(f"{spec_path}: {err}") from None
    runs: list[dict[str, object]] = []
    texts = {}
    also = {p.name: p.also for p in sampled}
    for i, values in enumerate(rows):
        run_id = f"run-{i:04d}"
        raw = copy.deepcopy(base_raw)
        for name, value in zip(names, values, strict=True):
            try:
                for path in (name, *also.get(name, ())):
                    _set(raw, path, value, str(spec_path))
            except (IndexError, ValueError, KeyError, TypeError) as err:
                raise SweepError(f"{spec_path}: parameter {name!r}: not a path into the base case ({err})") from None
        raw.setdefault("output", {})["folder"] = str((out / "results" / run_id).resolve())
        chosen = dict(zip(names, values, strict=True))
        if sampled:  # many parameters: the values are in runs.csv
            raw["title"] = f"{raw.get('title', 'case')} [{run_id} of a {spec.design.method} design]"
        else:
            raw["title"] = (
                f"{raw.get('title', 'case')} [{run_id}: " + ", ".join(f"{n}={v}" for n, v in chosen.items()) + "]"
            )
        try:
            case = parse_case_tree(raw, base_file)
        except CaseError as err:
            raise SweepError(f"{spec_path}: {run_id} ({chosen}): {err}") from None
        if isinstance(case.mesh, FileMesh):  # the generated case lives elsewhere: keep the file it names
            raw["mesh"]["path"] = case.mesh.path
        texts[run_id] = to_toml(raw)
        runs.append({"id": run_id, **chosen})
    for run_id, text in texts.items():
        folder = out / "cases" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "case.toml", text)
    with open(out / results.RUNS, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", *names])
        writer.writeheader()
        writer.writerows(runs)
    design = {
        **spec.design.model_dump(),
        "parameters": [
            {"name": p.name, "unit": p.unit, "distribution": p.spec.model_dump(exclude_none=True), "text": p.describe()}
            for p in sampled
        ]
        or [{"name": n, "values": v} for n, v in spec.parameters.items()],  # type: ignore[dict-item]
        "runs": len(runs),
        "unit_samples": unit_samples.tolist() if unit_samples is not None else None,
    }
    write_atomic(out / results.DESIGN, json.dumps(design, indent=1) + "\n")
    launch = spec.launcher.format(ranks=spec.ranks)
    write_atomic(out / "sweep.sbatch", SBATCH.format(n=len(runs) - 1, ranks=spec.ranks, time=spec.time, launch=launch))
    # one rank needs no launcher here (an MPI singleton), so the local runner works whichever mpiexec is on PATH
    write_atomic(out / "run_local.sh", LOCAL.format(launch=launch if spec.ranks > 1 else ""))
    (out / "logs").mkdir(exist_ok=True)  # SLURM does not create the folder of --output
    (out / "sweep.sbatch").chmod(0o755)
    (out / "run_local.sh").chmod(0o755)
    return runs


def to_toml(tree: dict) -> str:
    """TOML text of a case tree (strings, numbers, booleans, lists and tables, as case files have)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise SweepError(f"cannot write {v!r} as TOML")

    lines = [f"{json.dumps(k)} = {value(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    for k, v in tree.items():
        if isinstance(v, dict):
            lines.append(f"\n[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


SBATCH = """#!/bin/bash
# A SLURM job array: one MPI run of isolimb per task. Submit from this folder: sbatch sweep.sbatch
# Submitting it again continues what is unfinished: finished runs are skipped, stopped ones resume from their
# checkpoint (isolimb run --continue). SLURM's USR1 before the wall time makes each run stop with a checkpoint.
#SBATCH --job-name=isolimb-sweep
#SBATCH --array=0-{n}
#SBATCH --ntasks={ranks}
#SBATCH --cpus-per-task=1
#SBATCH --time={time}
#SBATCH --signal=B:USR1@120
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
cd "${{SLURM_SUBMIT_DIR}}"
export OMP_NUM_THREADS=1
# node-local JIT cache per task: tasks compiling the same forms at once into one cache can time out (FFCx waits
# 10 s for another process's compile). ISOLIMB_JIT_CACHE: a cache where the forms were compiled before (one run of
# the base case with XDG_CACHE_HOME set to it), which every task then only reads.
export XDG_CACHE_HOME="${{ISOLIMB_JIT_CACHE:-${{TMPDIR:-/tmp}}/isolimb-cache-${{SLURM_JOB_ID}}}}"
ID=$(printf "run-%04d" "${{SLURM_ARRAY_TASK_ID}}")
ISOLIMB="${{ISOLIMB:-isolimb}}"
{launch} "$ISOLIMB" run "cases/$ID" --continue --checkpoint-every "${{CHECKPOINT_EVERY:-10 min}}" -q &
run=$!
trap 'kill -USR1 "$run" 2>/dev/null || true' USR1 TERM
status=0
while kill -0 "$run" 2>/dev/null; do
  wait "$run" && status=0 || status=$?
done
exit "$status"
"""

LOCAL = """#!/bin/bash
# Every run of the sweep on this machine (no SLURM): ./run_local.sh, one run after the other, or JOBS=4 ./run_local.sh,
# four at a time (each with the sweep's ranks). Running it again skips finished runs and resumes stopped ones.
# A failed run is named on stderr and does not stop the others; the script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
export ISOLIMB="${{ISOLIMB:-isolimb}}"
printf '%s\\n' cases/run-* | xargs -P "${{JOBS:-1}}" -I CASE \\
  sh -c '{launch} "$ISOLIMB" run CASE --continue -q || {{ echo "run_local.sh: CASE failed" >&2; exit 1; }}'
"""


# ------------------------------------------------------------------------------------------------ collect
OUTCOMES = {  # column -> (label, function of summary)
    "tumour_auc_free_mg_min_per_L": ("tumour mean free AUC (mg min/L)", lambda s: _region(s, "tumour")),
    "muscle_auc_free_mg_min_per_L": ("muscle mean free AUC (mg min/L)", lambda s: _region(s, "muscle")),
    "tumour_adducts_mg_per_L": ("tumour mean adducts (mg/L)", lambda s: _region(s, "tumour", "adducts_mean", "A")),
    "tumour_temperature_max_degC": (
        "tumour peak T (degC)",
        lambda s: _region(s, "tumour", "temperature_max_degC", None),
    ),
    "tumour_tissue_drug_ug_per_g": (
        "tumour parent drug at end of perfusion (ug/g)",
        lambda s: _region(s, "tumour", "tissue_drug_ug_per_g", None),
    ),
    "tumour_log10_kill_mean": (
        "tumour mean log10 kill",
        lambda s: _region(s, "tumour", "log10_kill_mean", None),
    ),
    "tumour_kill_coverage_percent": (
        "tumour kill coverage (% with SF < 0.01)",
        lambda s: 100 * _region(s, "tumour", "kill_coverage", None),
    ),
    "tumour_rim_outflow_um_per_s": (
        "tumour rim outflow (um/s)",
        lambda s: s.get("tumour_rim_outflow_um_per_s", float("nan")),
    ),
    "tumour_net_filtration_mL_per_min": (
        "tumour net filtration (mL/min)",
        lambda s: s.get("tumour_net_filtration_mL_per_min", float("nan")),
    ),
    "marrow_surviving_fraction": (
        "marrow progenitor surviving fraction",
        lambda s: s.get("marrow_surviving_fraction", float("nan")),
    ),
    "muscle_tissue_drug_ug_per_g": (
        "muscle parent drug at end of perfusion (ug/g)",
        lambda s: _region(s, "muscle", "tissue_drug_ug_per_g", None),
    ),
    "skin_tissue_drug_ug_per_g": (
        "skin parent drug at end of perfusion (ug/g)",
        lambda s: _region(s, "skin", "tissue_drug_ug_per_g", None),
    ),
    "skin_subcutis_tissue_drug_ug_per_g": (
        "skin and subcutaneous fat parent drug at end of perfusion (ug/g, the clinic's skin/subcutis biopsy)",
        lambda s: _mass_weighted(s, ("skin", "fat"), "tissue_drug_ug_per_g"),
    ),
    "muscle_temperature_max_degC": (
        "muscle peak T (degC)",
        lambda s: _region(s, "muscle", "temperature_max_degC", None),
    ),
    "skin_temperature_max_degC": ("skin peak T (degC)", lambda s: _region(s, "skin", "temperature_max_degC", None)),
    "probe_temperature_min_degC": (
        "probes' mean temperature, lowest after settling (degC)",
        lambda s: _probe(s, "min"),
    ),
    "probe_temperature_max_degC": (
        "probes' mean temperature, highest after settling (degC)",
        lambda s: _probe(s, "max"),
    ),
    "perfusate_systemic_auc_ratio": (
        "perfusate / systemic AUC",
        lambda s: _agent(s, "perfusate_systemic_auc_ratio"),
    ),
    "perfusate_systemic_auc_inf_ratio": (  # the clinic's ratio: systemic AUC extrapolated to infinity with CL/V
        "perfusate / systemic AUC to infinity",
        lambda s: _agent(s, "perfusate_auc_mg_min_per_L") / _agent(s, "systemic_auc_inf_mg_min_per_L"),
    ),
    "peak_perfusate_mg_per_L": ("peak perfusate (mg/L)", lambda s: _agent(s, "peak_perfusate_mg_per_L")),
    "peak_systemic_mg_per_L": ("peak systemic, release included (mg/L)", lambda s: _agent(s, "peak_systemic_mg_per_L")),
    "tracer_leak_percent": ("tracer leak (%)", lambda s: 100 * s.get("tracer_leak_fraction", float("nan"))),
    "systemic_leak_percent": ("drug leaked while isolated (% of dose)", lambda s: 100 * s["systemic_leak_fraction"]),
    "drug_balance_relative_error": ("drug balance error", lambda s: s["drug_balance_relative_error"]),
}


# The unit of each column of collected.csv (for calibration targets given with units); "" dimensionless.
UNITS = {
    "tumour_auc_free_mg_min_per_L": "mg min/L",
    "muscle_auc_free_mg_min_per_L": "mg min/L",
    "tumour_auc90_mg_min_per_L": "mg min/L",
    "tumour_adducts_mg_per_L": "mg/L",
    "tumour_temperature_max_degC": "degC",
    "muscle_temperature_max_degC": "degC",
    "skin_temperature_max_degC": "degC",
    "probe_temperature_min_degC": "degC",
    "probe_temperature_max_degC": "degC",
    "tumour_tissue_drug_ug_per_g": "ug/g",
    "muscle_tissue_drug_ug_per_g": "ug/g",
    "skin_tissue_drug_ug_per_g": "ug/g",
    "skin_subcutis_tissue_drug_ug_per_g": "ug/g",
    "tumour_log10_kill_mean": "",
    "tumour_kill_coverage_percent": "%",
    "marrow_surviving_fraction": "",
    "tracer_leak_percent": "%",
    "systemic_leak_percent": "%",
    "perfusate_systemic_auc_ratio": "",
    "perfusate_systemic_auc_inf_ratio": "",
    "peak_perfusate_mg_per_L": "mg/L",
    "peak_systemic_mg_per_L": "mg/L",
    "drug_balance_relative_error": "",
}


def _probe(s: dict, key: str) -> float:
    """The probes' settled mean temperature, its min or max (nan in cases without temperature control)."""
    probe = s.get("probe_temperature_degC")
    return _number_or_nan(probe, key) if isinstance(probe, dict) else float("nan")


def _agent(s: dict, key: str) -> float:
    """A value of the primary agent's summary (nan without drug or key)."""
    agent = s.get("agents", {}).get(s.get("primary_agent") or "", {})
    return _number_or_nan(agent, key)


def _number_or_nan(s: dict, key: str) -> float:
    """A top-level number of a summary (an optional key: nan when absent or not a number)."""
    v = s.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _region(s: dict, region: str, key: str = "auc_free_mean", quantity: str | None = "AUC") -> float:
    """A region's summary value in the clinical unit of ``quantity`` (as stored when None); nan if absent."""
    entry = s["regions"].get(region, {})
    if key not in entry:
        return float("nan")
    return clinical(quantity, entry[key]) if quantity else entry[key]


def _mass_weighted(s: dict, regions: tuple[str, ...], key: str) -> float:
    """The mass-weighted mean of a per-gram value over ``regions`` (nan if one lacks it)."""
    entries = [s["regions"].get(r, {}) for r in regions]
    if any(key not in e or "mass_kg" not in e for e in entries):
        return float("nan")
    return sum(e[key] * e["mass_kg"] for e in entries) / sum(e["mass_kg"] for e in entries)


def _coverage(result: Path) -> float:
    """AUC90 of the tumour: the free-drug AUC reached by 90 % of its volume (nan without fields or tumour)."""
    from solver.plots import dose_volume_of

    tumour = dose_volume_of(result).get("tumour")
    return tumour.covered(0.9) if tumour else float("nan")


def _number(v: str) -> float:
    """A swept value as a number for plotting: "39 degC" -> 39, "0.8" -> 0.8."""
    try:
        return float(v)
    except ValueError:
        return float(ureg.Quantity(v).magnitude)


class Collected(NamedTuple):
    csv: Path  # collected.csv
    missing: list[str]  # ids of the runs without a summary
    plots: list[Path]  # outcomes against each parameter
    sensitivity: Path | None  # sensitivity.html (sampled designs), None for a grid
    notes: list[str]  # outcomes the sensitivity analysis skipped, and why


def read_design(folder: Path) -> dict:
    """``design.json`` of a sweep folder (a grid for folders written before designs existed)."""
    path = folder / results.DESIGN
    if not path.exists():
        return {"method": "grid"}
    try:
        return integrity.read_json_object(path)
    except ValueError as err:
        raise SweepError(f"{path}: {err}") from None


def collect(folder: Path) -> Collected:
    """Write ``folder/collected.csv``, ``folder/collect_<n>.png`` and, for a sampled design, the sensitivity indices
    (``sensitivity.html``, ``sensitivity.csv``)."""
    runs_csv = folder / results.RUNS
    if not runs_csv.exists():
        raise SweepError(f"{folder}: no runs.csv (not a folder written by isolimb sweep)")
    try:
        with open(runs_csv, newline="") as f:
            runs = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SweepError(f"{runs_csv}: cannot read it ({err})") from None
    if not runs or "id" not in runs[0] or any(None in run or None in run.values() for run in runs):
        raise SweepError(f"{runs_csv}: empty or damaged (expected a header with 'id' and one whole row per run)")
    design = read_design(folder)
    if design["method"] != "grid" and len(design.get("unit_samples") or []) != len(runs):
        raise SweepError(f"{folder / results.DESIGN}: its samples do not match the {len(runs)} runs of runs.csv")
    params = [k for k in runs[0] if k != "id"]
    rows, missing = [], []
    title = "sweep"
    for run in runs:
        summary_path = folder / "results" / run["id"] / results.SUMMARY
        if not summary_path.exists():
            missing.append(run["id"])
            continue
        try:
            summary = integrity.read_json_object(summary_path)
        except ValueError as err:
            raise SweepError(f"run {run['id']}: {err}") from None
        title = str(summary.get("title", title)).split(" [run-")[0]
        row = {**run, **{k: get(summary) for k, (_, get) in OUTCOMES.items()}}
        row["tumour_auc90_mg_min_per_L"] = _coverage(folder / "results" / run["id"])
        rows.append(row)
    if not rows:
        raise SweepError(f"{folder}: none of the {len(runs)} runs has finished (no results/*/summary.json)")
    path = folder / results.COLLECTED
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plots = _plots(folder, rows, params, sampled=design["method"] != "grid")
    page, notes = None, []
    if design["method"] != "grid":
        from solver import sensitivity

        labels = {k: label for k, (label, _) in OUTCOMES.items()}
        analysis = sensitivity.analyse(design, [r["id"] for r in runs], {r["id"]: r for r in rows}, labels)
        page = sensitivity.page(analysis, design, labels, folder, title, len(runs), missing)
        notes = analysis.notes
    return Collected(path, missing, plots, page, notes)


def _plots(folder: Path, rows: list[dict], params: list[str], sampled: bool = False) -> list[Path]:
    import matplotlib.pyplot as plt

    from solver.plots import save

    made = []
    shown = ["tumour_auc90_mg_min_per_L", "tumour_auc_free_mg_min_per_L", "muscle_auc_free_mg_min_per_L"]
    shown += ["tumour_adducts_mg_per_L", "tumour_log10_kill_mean", "systemic_leak_percent"]
    for i, param in enumerate(params):
        others = [p for p in params if p != param]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.0 * len(shown), 3.6), layout="constrained")
        groups: dict[tuple, list[dict]] = {}
        for r in rows:  # a grid: one line per combination of the other parameters; a sample: one cloud
            groups.setdefault(() if sampled else tuple(r[p] for p in others), []).append(r)
        for key, members in groups.items():
            members.sort(key=lambda r: _number(r[param]))
            x = np.array([_number(r[param]) for r in members])
            label = ", ".join(f"{p.split('.')[-1]}={v}" for p, v in zip(others, key, strict=True)) if key else None
            for ax, outcome in zip(axes, shown, strict=True):
                ax.plot(x, [r[outcome] for r in members], "o" if sampled else "o-", ms=3 if sampled else 6, label=label)
        for ax, outcome in zip(axes, shown, strict=True):
            ax.set_xlabel(param)
            ax.set_ylabel(OUTCOMES[outcome][0] if outcome in OUTCOMES else "tumour AUC90 (mg min/L)")
            ax.grid(alpha=0.3)
        if others and not sampled:
            axes[0].legend(fontsize=8)
        made.append(save(fig, folder / f"collect_{i}.png"))
    return made
