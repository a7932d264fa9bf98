"""Print the plausibility table of docs/plausibility.md from results folders of the case library.

for c in ilp-tm-sarcoma-leg ilp-tm-sarcoma-arm ilp-melphalan-melanoma-leg ili-melanoma-leg ili-sarcoma-forearm; do
    mpiexec -n 2 .venv/bin/isolimb run cases/$c --force -q
done
.venv/bin/python docs/plausibility.py results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from solver.output import clinical
from solver.plots import read_series
from solver.vtkhdf import VTKHDFSeries

CASES = ["ilp-tm-sarcoma-leg", "ilp-tm-sarcoma-arm", "ilp-melphalan-melanoma-leg", "ili-melanoma-leg",
         "ili-sarcoma-forearm"]  # fmt: skip
TISSUE_DENSITY = 1.05  # kg/L: mg/L of tissue -> ug/g


def row(folder: Path) -> dict[str, str]:
    s = read_series(folder)
    summary = json.loads((folder / "summary.json").read_text())
    protocol = json.loads((folder / "case_resolved.json").read_text())["protocol"]
    end = int(np.argmin(abs(s["time_min"] - protocol["perfusion_duration"] / 60)))  # end of perfusion
    out = {"case": folder.name, "at (min)": f"{s['time_min'][end]:.0f}"}
    for region in ("tumour", "muscle", "skin"):
        key = f"melphalan_total_{region}_mean_mg_per_L"
        out[f"{region} melphalan (ug/g)"] = f"{s[key][end] / TISSUE_DENSITY:.2f}" if key in s else "-"
    out["leak (% of dose)"] = f"{100 * summary['systemic_leak_fraction']:.1f}"
    p = clinical("p", s["p_tumour_mean_Pa"])
    out["tumour IFP start -> end (mmHg)"] = f"{p[0]:.1f} -> {p[-1]:.1f}"
    fields = VTKHDFSeries(folder / "fields.vtkhdf")
    speed = np.linalg.norm(fields.cell_data("u_um_per_s", fields.times.size - 1), axis=1)
    tumour = speed[fields.cell_data("region", 0) == 1]
    out["tumour speed median / max (um/s)"] = f"{np.median(tumour):.3f} / {tumour.max():.3f}"
    if "limb_pH" in s:
        out["pH / base excess at end of perfusion"] = (
            f"{s['limb_pH'][end]:.2f} / {-s['lactate_rise_mmol_per_L'][end]:.1f}"
        )
    else:
        out["pH / base excess at end of perfusion"] = "-"
    return out


def main(root: Path) -> None:
    rows = [row(root / c) for c in CASES if (root / c / "summary.json").exists()]
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r[h] for h in header) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))
