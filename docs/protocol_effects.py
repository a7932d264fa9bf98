"""The protocol's free choices against what they buy and cost: Morris' signed mean effect (mu, the mean change of
the outcome when the parameter moves across its whole range, other parameters anywhere in theirs) and mu*, from
``isolimb collect`` of a Morris sweep. Prints the Markdown table of docs/uncertainty.md:

    .venv/bin/python docs/protocol_effects.py results/morris-leg
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

CHOICES = {  # sweep parameter -> label
    "protocol.temperature_control.target.0.value": "probe target 38 -> 41 C",
    "protocol.flow": "flow 300 -> 700 mL/min",
    "protocol.doses.0.per_limb_volume": "melphalan 7.5 -> 13 mg/L",
    "protocol.tnf.dose": "TNF 1 -> 4 mg",
}
OUTCOMES = {  # collected.csv column -> label
    "tumour_log10_kill_mean": "tumour log10 kill",
    "tumour_auc_free_mg_min_per_L": "tumour free AUC (mg min/L)",
    "muscle_auc_free_mg_min_per_L": "muscle free AUC (mg min/L)",
    "muscle_tissue_drug_ug_per_g": "muscle drug (ug/g)",
    "muscle_temperature_max_degC": "muscle peak T (C)",
    "marrow_surviving_fraction": "marrow surviving fraction",
}


def main(folder: Path) -> None:
    with open(folder / "sensitivity.csv", newline="") as f:
        rows = {(r["outcome"], r["parameter"]): r for r in csv.DictReader(f)}
    print("| choice | " + " | ".join(OUTCOMES.values()) + " |")
    print("|---|" + "---|" * len(OUTCOMES))
    for parameter, label in CHOICES.items():
        cells = []
        for outcome in OUTCOMES:
            r = rows.get((outcome, parameter))
            cells.append(f"{float(r['mu']):+.3g} ({float(r['mu*']):.3g})" if r else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
