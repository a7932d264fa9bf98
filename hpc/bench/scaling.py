"""Scaling benchmark (not a test): seconds per step and per equation, Krylov iterations and peak memory
against dofs, for the default case (TM-ILP leg) at several mesh sizes, on the rank count it is started with.

    mpiexec -n 1 .venv/bin/python hpc/bench/scaling.py --size-factors 2.5 1.6 1.0 --steps 3 -o hpc/bench/results
    mpiexec -n 2 .venv/bin/python hpc/bench/scaling.py --size-factors 2.5 1.6 1.0 --steps 3 -o hpc/bench/results
    .venv/bin/python hpc/bench/scaling.py --table hpc/bench/results      # the Markdown table of all JSON files

Each measurement is the difference of two runs (1 and 1 + steps minutes of perfusion with melphalan and TNF
from the start), after a warm-up run that pays the JIT compilation. Peak memory is the sum over ranks of
each process's maximum resident set (Python, dolfinx and PETSc included), so small meshes show mostly the
fixed cost of the interpreter and libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import tomllib
from pathlib import Path

from mpi4py import MPI

import solver  # noqa: F401  (MPI before dolfinx)
from solver import meshing
from solver.case import Case, parse_case_tree
from solver.coupling import CoupledModel
from solver.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "cases" / "ilp-tm-sarcoma-leg" / "case.toml"


def machine() -> dict[str, object]:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return {"host": platform.node(), "cpu": model, "cores": os.cpu_count(), "platform": platform.platform()}


def case_at(size_factor: float, end_minutes: float, tnf: bool = True) -> Case:
    """The default case with melphalan (and TNF unless ``tnf`` is false) at 0 min, inflow 39.5 C, ending after
    ``end_minutes`` of perfusion."""
    raw = tomllib.loads(CASE.read_text())
    raw["mesh"]["size_factor"] = size_factor
    p = raw["protocol"]
    if not tnf:
        p.pop("tnf", None)
    p["end_time"] = p["perfusion_duration"] = f"{end_minutes} min"
    p["washout_duration"] = "0 min"
    p["inflow_temperature"] = [{"time": "0 min", "value": "39.5 degC"}]
    p["doses"][0]["time"] = "0 min"
    raw.pop("output", None)
    return parse_case_tree(raw, CASE)  # through the case parser: defaults, units, validation


def timed_run(tm, size_factor: float, minutes: int, tnf: bool = True) -> tuple[float, dict, dict, CoupledModel, dict]:
    """Wall time of a whole run of ``minutes`` (every rank in step), its phase seconds, iterations, model, summary."""
    model = CoupledModel(case_at(size_factor, minutes, tnf), tm)
    sim = Simulation(model)
    tm.comm.barrier()
    t0 = time.perf_counter()
    result = sim.run()
    tm.comm.barrier()
    its = {k: list(s.iterations) for k, s in model.linear_systems().items()}
    return time.perf_counter() - t0, dict(sim.phase_seconds), its, model, result.summary


def measure(comm: MPI.Comm, size_factor: float, steps: int) -> dict[str, object]:
    """Seconds per step from runs of 1 and 1 + steps minutes (1 min steps) after a JIT warm-up run:
    (T(1 + steps) - T(1)) / steps, so set-up and the first solves cancel."""
    start = time.perf_counter()
    tm = meshing.generate(case_at(size_factor, 1), comm)
    mesh_seconds = time.perf_counter() - start
    timed_run(tm, size_factor, 1)  # JIT compilation of every form
    t1, phases1, _, _, _ = timed_run(tm, size_factor, 1)
    t2, phases2, its2, model, summary = timed_run(tm, size_factor, 1 + steps)
    per_eq = {k: (phases2[k] - phases1[k]) / steps for k in ("pressure", "heat", "transport")}
    its = {
        k: {"solves": len(v), "mean": sum(v) / len(v) if v else 0.0, "max": max(v, default=0)} for k, v in its2.items()
    }
    rss = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, op=MPI.SUM)  # bytes
    transport = sum(a.transport.unknowns for a in model.agents)
    return {
        "ranks": comm.size,
        "size_factor": size_factor,
        "cells": tm.mesh.topology.index_map(3).size_global,
        "scalar_dofs": model.V.dofmap.index_map.size_global,
        "transport_dofs": transport,
        "mesh_seconds": mesh_seconds,
        "steps": steps,
        "seconds_per_step": (t2 - t1) / steps,
        "seconds_per_step_by_equation": per_eq,
        "krylov_iterations": its,
        "peak_memory_bytes_all_ranks": rss,
        "memory_bytes_per_transport_dof": rss / transport,
        "memory_bytes_per_vertex": rss / tm.mesh.topology.index_map(0).size_global,
        "balance_error": summary["drug_balance_relative_error"],
    }


def table(folder: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("leg-sf*.json"))]
    rows.sort(key=lambda r: (r["transport_dofs"], r["ranks"]))
    serial = {r["size_factor"]: r["seconds_per_step"] for r in rows if r["ranks"] == 1}
    header = "| vertices | transport unknowns | ranks | s/step | pressure / heat / transport s | transport its mean/max"
    out = [header + " | peak memory (GB) | memory/vertex (kB) | efficiency |", "|---" * 9 + "|"]
    for r in rows:
        e = r["seconds_per_step_by_equation"]
        t = next(v for k, v in r["krylov_iterations"].items() if k.startswith("transport"))
        eff = serial.get(r["size_factor"])
        eff_text = f"{eff / (r['ranks'] * r['seconds_per_step']):.2f}" if eff else "-"
        out.append(
            f"| {r['scalar_dofs']:,} | {r['transport_dofs']:,} | {r['ranks']} | {r['seconds_per_step']:.2f} | "
            f"{e['pressure']:.2f} / {e['heat']:.2f} / {e['transport']:.2f} | {t['mean']:.1f}/{t['max']} | "
            f"{r['peak_memory_bytes_all_ranks'] / 1e9:.2f} | {r['memory_bytes_per_vertex'] / 1e3:.1f} | {eff_text} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-factors", type=float, nargs="+", default=[2.5, 1.6, 1.0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "hpc" / "bench" / "results")
    p.add_argument("--table", type=Path, help="print the table of the JSON files in this folder and stop")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return
    comm = MPI.COMM_WORLD
    for sf in args.size_factors:
        record = {**measure(comm, sf, args.steps), "machine": machine()}
        if comm.rank == 0:
            args.output.mkdir(parents=True, exist_ok=True)
            path = args.output / f"leg-sf{sf}-np{comm.size}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"{path.name}: {record['transport_dofs']} transport dofs, {record['seconds_per_step']:.2f} s/step")


if __name__ == "__main__":
    main()
