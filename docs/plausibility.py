"""The plausibility tables of docs/plausibility.md: the case library against the validation targets of MODEL.md
section 11, from real runs.

    mpiexec -n 2 .venv/bin/python docs/plausibility.py --run results/plausibility   # runs the cases (minutes)
    mpiexec -n 2 .venv/bin/python docs/plausibility.py --tnf results/plausibility   # TNF with / without
    .venv/bin/python docs/plausibility.py results/plausibility                       # prints the tables

``--tnf`` runs the TNF cases (rat ILP, TM-ILP leg) with and without TNF.
``--run`` runs the five clinical cases as shipped, and the default leg case as a leaky perfusion (leak rate
0.32 %/min, Rauschecker 1991) for the systemic-plateau row. Nothing is tuned: every parameter is the case's.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from mpi4py import MPI

import solver  # noqa: F401  (MPI before dolfinx)

# isort: split
import numpy as np

from solver.case import parse_case, parse_case_tree
from solver.plots import read_series
from solver.simulation import run_case
from solver.sweep import OUTCOMES
from solver.vtkhdf import VTKHDFSeries

ROOT = Path(__file__).resolve().parents[1]
CASES = ["ilp-tm-sarcoma-leg", "ilp-tm-sarcoma-arm", "ilp-melphalan-melanoma-leg", "ili-melanoma-leg",
         "ili-sarcoma-forearm"]  # fmt: skip
LEAKY = "ilp-tm-sarcoma-leg-leaky"


def run(root: Path, comm: MPI.Comm) -> None:
    for name in CASES:
        run_case(parse_case(ROOT / "cases" / name), root / name, comm, quiet=True)
    path = ROOT / "cases" / "ilp-tm-sarcoma-leg" / "case.toml"
    raw = tomllib.loads(path.read_text())
    raw["protocol"]["leak_rate"] = "0.32 %/min"
    run_case(parse_case_tree(raw, path), root / LEAKY, comm, quiet=True)


def _load(folder: Path):
    summary = json.loads((folder / "summary.json").read_text())
    protocol = json.loads((folder / "case_resolved.json").read_text())["protocol"]
    return summary, read_series(folder), protocol


def _speeds(folder: Path) -> tuple[float, float]:
    """Median and maximum interstitial speed (um/s) over the tumour's cells at the end of perfusion."""
    fields = VTKHDFSeries(folder / "fields.vtkhdf")
    speed = np.linalg.norm(fields.cell_data("u_um_per_s", 0), axis=1)
    tumour = speed[fields.cell_data("region", 0) == 1]
    return float(np.median(tumour)), float(tumour.max())


def targets(root: Path) -> list[list[str]]:
    """One line per validation target of MODEL.md section 11 that the delivery physics touches."""
    rows: list[list[str]] = []

    def add(target: str, clinic: str, engine: str, ratio: str, case: str) -> None:
        rows.append([target, clinic, engine, ratio, case])

    for name, label in (
        ("ilp-melphalan-melanoma-leg", "melanoma leg ILP, no TNF"),
        ("ilp-tm-sarcoma-leg", "TM-ILP leg"),
    ):
        if not (root / name / "summary.json").exists():
            continue
        s, _, _ = _load(root / name)
        regions = s["regions"]
        tissue = {r: regions[r].get("tissue_drug_ug_per_g") for r in ("tumour", "muscle", "skin")}
        # Klaase's "skin/subcutis" biopsy holds skin with its subcutaneous fat: their mass-weighted mean
        tissue["skin/subcutis"] = OUTCOMES["skin_subcutis_tissue_drug_ug_per_g"][1](s)
        clinic = {"tumour": 6.8, "muscle": 6.5, "skin": 3.2, "skin/subcutis": 3.2}
        for region, value in tissue.items():
            if value is not None:
                add(f"tissue melphalan at end of perfusion, {region} (ug/g)", f"{clinic[region]}",
                    f"{value:.2f}", f"{value / clinic[region]:.2f}", label)  # fmt: skip
    for name in ("ilp-tm-sarcoma-leg", "ilp-tm-sarcoma-arm", "ilp-melphalan-melanoma-leg"):
        if not (root / name / "summary.json").exists():
            continue
        s, _, _ = _load(root / name)
        a = s["agents"]["melphalan"]
        ratio = a["perfusate_auc_mg_min_per_L"] / a["systemic_auc_inf_mg_min_per_L"]
        add("perfusate / systemic AUC (systemic to infinity)", "37.8 (2.1-131)", f"{ratio:.1f}",
            f"{ratio / 37.8:.2f}", name)  # fmt: skip
        add("peak perfusate melphalan (ug/mL)", "6.1-115", f"{a['peak_perfusate_mg_per_L']:.1f}", "in range"
            if 6.1 <= a["peak_perfusate_mg_per_L"] <= 115 else "outside", name)  # fmt: skip
        add("tracer leak, cumulative maximum (%)", "2.7 (0-21)", f"{100 * s['tracer_leak_fraction']:.2f}",
            f"{100 * s['tracer_leak_fraction'] / 2.7:.2f}", name)  # fmt: skip
        add("drug leaked to the body during isolation (% of dose)", "-",
            f"{100 * a['systemic_leak_fraction']:.2f}", "-", name)  # fmt: skip
        if "probe_temperature_degC" in s:
            probes = s["probe_temperature_degC"]
            low, high, source = (39.0, 41.5, "seed 000") if "melanoma" in name else (38.0, 39.5, "seed 003")
            inside = low <= probes["min"] and probes["max"] <= high
            add("subcutaneous probes, 15 min to end of perfusion (C)", f"{low:g}-{high:g} ({source})",
                f"{probes['min']:.2f}-{probes['max']:.2f}", "in band" if inside else "outside", name)  # fmt: skip
    if (root / LEAKY / "summary.json").exists():
        s, series, protocol = _load(root / LEAKY)
        during = (series["time_min"] >= 20) & (series["time_min"] <= protocol["perfusion_duration"] / 60)
        plateau = series["melphalan_systemic_mg_per_L"][during]
        engine = f"{plateau.min():.3f}-{plateau.max():.3f}"
        add("systemic melphalan plateau, leaky ILP (ug/mL)", "0.28-0.37", engine, f"{plateau.max() / 0.37:.2f}", LEAKY)
        add("tracer leak of the leaky perfusion (%)", "19 %/h (Rauschecker)",
            f"{100 * s['tracer_leak_fraction']:.1f}", "-", LEAKY)  # fmt: skip
    if (root / "ilp-melphalan-melanoma-leg" / "summary.json").exists():
        _, series, _ = _load(root / "ilp-melphalan-melanoma-leg")
        p0 = series["p_tumour_mean_Pa"][0] / 133.322387415
        add(
            "tumour IFP, melanoma nodules (mmHg)", "29.8", f"{p0:.1f}", f"{p0 / 29.8:.2f}", "ilp-melphalan-melanoma-leg"
        )
    for name in ("ilp-tm-sarcoma-leg", "ilp-melphalan-melanoma-leg"):
        if (root / name / "fields.vtkhdf").exists():
            median, peak = _speeds(root / name)
            add("tumour interstitial speed, median / max (um/s)", "0.1-2", f"{median:.3f} / {peak:.3f}", "-", name)
    for name, limb, (ph, be) in ILI_TARGETS:
        if (root / name / "summary.json").exists():
            _, series, _ = _load(root / name)
            at = int(np.argmin(np.abs(series["time_min"] - 30.0)))
            engine_ph, engine_be = series["limb_pH"][at], -series["lactate_rise_mmol_per_L"][at]
            role = "calibrated (ecw_exchange_time)" if limb == "leg" else "prediction"
            add(f"ILI {limb} at 30 min, pH / base excess (mmol/L)", f"{ph} / {be}",
                f"{engine_ph:.2f} / {engine_be:.1f}", f"pH {engine_ph - ph:+.2f}; {role}", name)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ ILI acid-base
ILI_TARGETS = (("ili-melanoma-leg", "leg", (7.15, -9.1)), ("ili-sarcoma-forearm", "arm", (7.06, -13.9)))  # Beasley


def replay_acid_base(folder: Path, exchange_time: float, minutes: float = 30.0) -> tuple[float, float]:
    """pH and base excess (mmol/L) of an ILI run's blood at ``minutes``, replayed in 0D
    (solver.physics.metabolism) with the run's tissue mass, volumes and limb-mean temperature at each step and
    another ``ecw_exchange_time`` (s). Exact for the engine: the acid-base state does not feed back into
    temperature, and with potentiation off not into the drug."""
    from solver.case import Metabolism
    from solver.physics.metabolism import MetabolicState

    summary, series, protocol = _load(folder)
    tissue = json.loads((folder / "case_resolved.json").read_text())["tissue"]
    volumes = {r: e["volume_m3"] for r, e in summary["regions"].items()}
    limb = summary["limb_volume_m3"]
    params = Metabolism.model_construct(**{**protocol["metabolism"], "ecw_exchange_time": exchange_time})
    state = MetabolicState(
        params,
        tissue_mass=sum(volumes[r] * tissue[r]["density"] for r in volumes),
        blood_volume=protocol["prime_volume"] + protocol["limb_blood_fraction"] * limb,
        ecw_volume=params.ecw_fraction * limb,
    )
    times = series["time_min"]
    mean_T = sum(series[f"T_{r}_mean_degC"] * v for r, v in volumes.items()) / limb + 273.15
    for k in range(1, len(times)):
        if times[k] > minutes + 1e-9:
            break
        state.step(60.0 * (times[k] - times[k - 1]), float(mean_T[k]))
    return state.ph, state.base_excess


def calibrate_acid_base(root: Path) -> list[list[str]]:
    """ecw_exchange_time fitted on the leg's pH at 30 min (Beasley 2012), then the arm predicted with it."""
    from scipy.optimize import brentq

    (leg, _, (leg_ph, _)), (arm, _, _) = ILI_TARGETS
    if not all((root / n / "timeseries.csv").exists() for n in (leg, arm)):
        return []
    tau = brentq(lambda t: replay_acid_base(root / leg, t)[0] - leg_ph, 60.0, 30 * 86400.0, xtol=1.0)
    rows = [["ecw_exchange_time fitted on the leg's pH 7.15", f"{tau / 60:.1f} min", "", ""]]
    for name, limb, (ph, be) in ILI_TARGETS:
        p, b = replay_acid_base(root / name, tau)
        rows.append([f"ILI {limb} at 30 min", f"{ph} / {be}", f"{p:.3f} / {b:.1f}", f"pH {p - ph:+.3f}"])
    return rows


# ------------------------------------------------------------------------------------------------ TNF
TNF_CASES = (("rat-ilp-tnf", "rat ILP (Hoving 2006: x6)"), ("ilp-tm-sarcoma-leg", "TM-ILP leg"))


def run_tnf(root: Path, comm: MPI.Comm) -> None:
    """Each TNF case as shipped and without its TNF."""
    for name, _ in TNF_CASES:
        path = ROOT / "cases" / name / "case.toml"
        raw = tomllib.loads(path.read_text())
        run_case(parse_case_tree(raw, path), root / "tnf" / name, comm, quiet=True)
        raw["protocol"].pop("tnf")
        run_case(parse_case_tree(raw, path), root / "tnf" / f"{name}-no-tnf", comm, quiet=True)


def tnf_table(root: Path) -> list[list[str]]:
    """Tumour melphalan (parent drug per gram) at the end of perfusion with and without TNF, and the ratio."""
    rows = []
    for name, label in TNF_CASES:
        with_tnf, without = root / "tnf" / name, root / "tnf" / f"{name}-no-tnf"
        if not ((with_tnf / "summary.json").exists() and (without / "summary.json").exists()):
            continue
        a, b = (_load(f)[0]["regions"] for f in (with_tnf, without))
        ug = a["tumour"]["tissue_drug_ug_per_g"], b["tumour"]["tissue_drug_ug_per_g"]
        kill = a["tumour"]["log10_kill_mean"], b["tumour"]["log10_kill_mean"]
        muscle = a["muscle"]["tissue_drug_ug_per_g"], b["muscle"]["tissue_drug_ug_per_g"]
        rows.append([label, f"{ug[0]:.3g}", f"{ug[1]:.3g}", f"{ug[0] / ug[1]:.2f}", f"{kill[0]:.2f} / {kill[1]:.2f}",
                     f"{muscle[0] / muscle[1]:.3f}"])  # fmt: skip
    return rows


def lymph_table() -> list[list[str]]:
    """Normal-tissue filtration and lymph flow of a uniform tissue (steady: filtration = lymph, MODEL.md 2), at
    rest and under the ILP capillary pressure, with the default parameters of each normal region."""
    case = parse_case(ROOT / "cases" / "ilp-tm-sarcoma-leg")
    pc = case.protocol.capillary_pressure
    out = []
    for region in ("muscle", "fat", "skin"):
        t = case.tissue[region]
        flows = []
        for p_v in (t.p_v, pc):
            LpS = t.Lp * t.S_V
            pe = p_v - t.sigma_p * (t.pi_v - t.pi_i)
            p = (LpS * pe + t.LL * t.p_L) / (LpS + t.LL)
            per_gram_hour = t.LL * (p - t.p_L) / t.density * 3.6e9  # 1/s -> uL/(g h)
            flows.append((p / 133.322387415, per_gram_hour))
        (p0, q0), (p1, q1) = flows
        out.append([region, f"{p0:.1f}", f"{q0:.1f}", f"{p1:.1f}", f"{q1:.1f}", f"{q1 / q0:.0f}"])
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="folder of the results (one sub-folder per case)")
    parser.add_argument("--run", action="store_true", help="run the cases first")
    parser.add_argument("--tnf", action="store_true", help="run the TNF cases with and without TNF first")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.run:
        run(args.root, comm)
    if args.tnf:
        run_tnf(args.root, comm)
    if comm.rank == 0:
        print(table(["target (MODEL.md s. 11)", "clinic", "engine", "engine / clinic", "case"], targets(args.root)))
        print()
        header = ["region", "IFP at rest (mmHg)", "lymph at rest (uL/(g h))", "IFP under ILP (mmHg)",
                  "lymph under ILP (uL/(g h))", "x"]  # fmt: skip
        print(table(header, lymph_table()))
        print()
        print(table(["ILI acid-base (Beasley 2012)", "clinic pH / BE", "engine pH / BE", "difference"],
                    calibrate_acid_base(args.root)))  # fmt: skip
        print()
        header = ["TNF case", "tumour ug/g with TNF", "without", "ratio", "tumour log10 kill with / without",
                  "muscle ratio"]  # fmt: skip
        print(table(header, tnf_table(args.root)))


if __name__ == "__main__":
    main()
