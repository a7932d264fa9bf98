"""Why the default leg's kill does not converge smoothly in the time step (docs/convergence.md, "The kill over
dt"): the default case on a coarse mesh at dt = 60, 30, 15, 7.5 and 3.75 s, with its probe-controlled inflow and
with the controller removed (the inflow then follows the case's fixed schedule, 39.5 C), everything else equal.

    mpiexec -n 2 .venv/bin/python docs/controller_dt.py --run results/controller-dt   # 13 min here
    .venv/bin/python docs/controller_dt.py results/controller-dt                       # prints the table

For each outcome and each step the table gives the value and the ratio of successive differences (2 for a clean
first-order method); the last column is the dt = 1 min run's distance from the finest.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from itertools import pairwise
from pathlib import Path

from mpi4py import MPI

import solver  # noqa: F401  (MPI before dolfinx)

# isort: split
from solver.case import parse_case_tree
from solver.compare import markdown
from solver.simulation import run_case

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "cases" / "ilp-tm-sarcoma-leg" / "case.toml"
SIZE_FACTOR = 2.5  # the coarsest level of the case's mesh study: the step study, not the mesh, is the point
STEPS_S = (60.0, 30.0, 15.0, 7.5, 3.75)
VARIANTS = ("controlled", "fixed inflow")
OUTCOMES = {  # label -> tumour region key of summary.json
    "tumour mean log10 kill": "log10_kill_mean",
    "tumour free AUC (mg min/L)": "auc_free_mean",
    "tumour CEM43, max (min)": "cem43_max_min",
}


def _folder(root: Path, variant: str, dt: float) -> Path:
    return root / f"{variant.replace(' ', '-')}-dt{dt:g}s"


def run(root: Path, comm: MPI.Comm) -> None:
    for variant in VARIANTS:
        for dt in STEPS_S:
            raw = tomllib.loads(CASE.read_text())
            raw["mesh"]["size_factor"] = SIZE_FACTOR
            raw.setdefault("numerics", {})["dt"] = f"{dt:g} s"
            raw["output"] = {"formats": ["vtkhdf"], "fields": ["T"], "interval": "10 min"}
            if variant == "fixed inflow":
                del raw["protocol"]["temperature_control"]
            run_case(parse_case_tree(raw, CASE), _folder(root, variant, dt), comm, quiet=True)


def rows(root: Path) -> list[list[str]]:
    out = []
    for variant in VARIANTS:
        tumour = [
            json.loads((_folder(root, variant, dt) / "summary.json").read_text())["regions"]["tumour"] for dt in STEPS_S
        ]
        for label, key in OUTCOMES.items():
            values = [t[key] for t in tumour]
            diffs = [b - a for a, b in pairwise(values)]
            ratios = [f"{d0 / d1:.2f}" if d1 != 0 else "-" for d0, d1 in pairwise(diffs)]
            error = 100 * (values[0] - values[-1]) / values[-1]
            out.append([variant, label, *(f"{v:.5g}" for v in values), ", ".join(ratios), f"{error:+.2f} %"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="folder of the runs")
    parser.add_argument("--run", action="store_true", help="run the cases first")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.run:
        run(args.root, comm)
    if comm.rank == 0:
        header = ["inflow", "outcome", *(f"dt {dt:g} s" for dt in STEPS_S), "difference ratios", "dt 60 s vs 3.75 s"]
        print(markdown(header, rows(args.root)))


if __name__ == "__main__":
    main()
