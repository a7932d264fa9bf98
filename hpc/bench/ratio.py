"""Engine vs lean step (not a test): seconds per step of the engine against a lean bare-dolfinx implementation
of the same step, on the same mesh, in the same run, on the rank count it is started with; prints engine/lean.

    mpiexec -n 1 .venv/bin/python hpc/bench/ratio.py --size-factors 1.0 0.42 --steps 3
    mpiexec -n 2 .venv/bin/python hpc/bench/ratio.py --size-factors 1.0 0.42 --steps 3

Scenario (both sides): the default case (TM-ILP leg) without TNF, melphalan at 0 min, inflow at 39.5 C,
perfusion from 0 to the end, no washout, 1 min steps. Size factor 1.0 gives about 34k vertices, 0.42 about
208k (0.55: 119k).

Engine: ``CoupledModel(case, tm)`` and ``Simulation(model).run()`` as in scaling.py: (T(1 + steps) - T(1)) /
steps after a JIT warm-up run, so set-up, the pressure solve and the first step cancel.

Lean (:class:`Lean`, bare dolfinx + petsc4py + numpy, P1 on the same mesh, DG0 tissue parameters per region):
pressure and Darcy flux once; per step the Pennes heat equation with its matrix and preconditioner kept (right-
hand side only), then drug transport as ONE scalar P1 system in free drug C (C_c eliminated at the nodes, A
a nodal update), its matrix re-assembled because k_h(T) and D(T) changed, two right-hand sides (old state,
unit perfusate) and two GMRES solves for the circuit's superposition, two dot products for the circuit
rates, the 2x2 circuit solve, then C, C_c, A, AUCs and peak updated by vector operations at the nodes.
Mean over ``steps`` steps after one warm-up step. Results: hpc/bench/results/ratio-sf<sf>-np<n>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from mpi4py import MPI

import solver  # noqa: F401  (MPI before dolfinx)

# isort: split
import dolfinx.fem.petsc as fem_petsc
import numpy as np
import scaling  # noqa: E402  (the scaling benchmark beside this file: machine, the case, the timed run)
import ufl
from dolfinx import fem
from petsc4py import PETSc

from solver import meshing
from solver.case import Case, FixedValue, Robin
from solver.parameters import BLOOD
from solver.units import DENSITY, HEAT_CAPACITY, PRESSURE, TEMPERATURE

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "cases" / "ilp-tm-sarcoma-leg" / "case.toml"
GAS_CONSTANT = 8.314462618  # J/(mol K)
T_REF = 310.15  # K


def timed_run(tm, size_factor: float, minutes: int) -> tuple[float, dict[str, list[int]]]:
    """The scaling benchmark's timed run, in this benchmark's scenario (no TNF)."""
    seconds, _, its, _, _ = scaling.timed_run(tm, size_factor, minutes, tnf=False)
    return seconds, its


def case_at(size_factor: float, end_minutes: float) -> Case:
    """The default case without TNF, melphalan at 0 min, inflow 39.5 C, perfused for ``end_minutes``."""
    return scaling.case_at(size_factor, end_minutes, tnf=False)


def engine_step(tm, size_factor: float, steps: int) -> tuple[float, dict[str, dict[str, float]]]:
    """Engine seconds per step: (T(1 + steps) - T(1)) / steps after a JIT warm-up run."""
    timed_run(tm, size_factor, 1)  # JIT compilation of every form
    t1, _ = timed_run(tm, size_factor, 1)
    t2, its = timed_run(tm, size_factor, 1 + steps)
    return (t2 - t1) / steps, {k: iteration_stats(v) for k, v in its.items()}


def iteration_stats(its: list[int]) -> dict[str, float]:
    return {"solves": len(its), "mean": sum(its) / len(its) if its else 0.0, "max": max(its, default=0)}


# -------------------------------------------------------------------------------------------------- lean
def ksp_with(comm: MPI.Comm, A: PETSc.Mat, prefix: str, options: dict[str, object]) -> PETSc.KSP:
    """A KSP configured from ``options`` under ``prefix``; the options are removed again afterwards."""
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix(prefix)
    db = PETSc.Options()
    for key, value in options.items():
        db[f"{prefix}{key}"] = value  # type: ignore[index]
    ksp.setFromOptions()
    for key in options:
        db.delValue(f"{prefix}{key}")
    ksp.setOperators(A)
    return ksp


class Lean:
    """The same step as the engine's, written directly in dolfinx (see the module docstring)."""

    HEAT = {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-10, "ksp_atol": 1e-12, "ksp_max_it": 500}
    TRANSPORT = {
        "ksp_type": "gmres",
        "ksp_gmres_restart": 100,
        "ksp_pc_side": "right",
        "pc_type": "asm",
        "sub_pc_type": "ilu",
        "ksp_rtol": 1e-10,
        "ksp_atol": 0.0,
        "ksp_max_it": 1000,
    }

    def __init__(self, case: Case, tm) -> None:
        protocol = case.protocol
        assert protocol is not None
        self.comm = comm = tm.comm
        msh = tm.mesh
        self.V = V = fem.functionspace(msh, ("Lagrange", 1))
        self.n_owned = V.dofmap.index_map.size_local
        dt = case.numerics.dt
        self.dt = dt
        dx = ufl.Measure("dx", domain=msh, subdomain_data=tm.cell_tags)
        dx1 = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 1})
        dm = ufl.Measure("dx", domain=msh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        ds = ufl.Measure("ds", domain=msh, subdomain_data=tm.facet_tags)
        v = ufl.TestFunction(V)

        # ---- DG0 tissue parameters per region (capillary pressure raised by the perfusion, as the engine)
        V0 = fem.functionspace(msh, ("DG", 0))
        n_cells = msh.topology.index_map(3).size_local + msh.topology.index_map(3).num_ghosts
        tags = np.full(n_cells, -1, dtype=np.int32)
        tags[tm.cell_tags.indices] = tm.cell_tags.values
        tissue = {r: case.tissue[r] for r in tm.regions}
        if protocol.capillary_pressure is not None:
            tissue = {r: p.model_copy(update={"p_v": protocol.capillary_pressure}) for r, p in tissue.items()}

        def field(values: dict[str, float]) -> fem.Function:
            f = fem.Function(V0)
            for region, rid in tm.regions.items():
                f.x.array[tags == rid] = values[region]
            return f

        def param(key: str) -> fem.Function:
            return field({r: getattr(p, key) for r, p in tissue.items()})

        one = fem.Constant(msh, 1.0)
        volumes = {
            r: comm.allreduce(fem.assemble_scalar(fem.form(one * dx(i))), MPI.SUM) for r, i in tm.regions.items()
        }
        limb_volume = sum(volumes.values())
        # perfusion: the circuit flow shared in proportion to baseline perfusion x volume (1/s)
        base = {r: p.perfusion * p.density for r, p in tissue.items()}
        total = sum(base[r] * volumes[r] for r in base)
        omega = field({r: base[r] * protocol.flow / total for r in base})
        phi, phi_c, K = param("phi"), param("phi_c"), param("K")
        Lp_SV = param("Lp") * param("S_V")
        pe = param("p_v") - param("sigma_p") * (param("pi_v") - param("pi_i"))
        LL, p_L = param("LL"), param("p_L")

        # ---- pressure once: -div(K grad p) + (Lp S/V + LL) p = Lp S/V pe + LL p_L; Darcy u = -K grad p
        self.p = fem.Function(V)
        p_, q = ufl.TrialFunction(V), v
        a_p = fem.form(ufl.inner(K * ufl.grad(p_), ufl.grad(q)) * ufl.dx + (Lp_SV + LL) * p_ * q * ufl.dx)
        L_p = fem.form((Lp_SV * pe + LL * p_L) * q * ufl.dx)
        bcs_p = self._dirichlet(case, tm, "pressure", PRESSURE)
        self._solve_once(a_p, L_p, bcs_p, self.p, "lean_pressure_", {**self.HEAT, "ksp_atol": 1e-14})
        W = fem.functionspace(msh, ("DG", 0, (3,)))
        self.u = fem.Function(W)
        self.u.interpolate(fem.Expression(-K * ufl.grad(self.p), W.element.interpolation_points))

        # ---- heat: matrix and preconditioner built once, right-hand side per step
        T0 = protocol.initial_temperature
        self.T, self.T_old = fem.Function(V), fem.Function(V)
        self.T.x.array[:] = T0
        self.T_old.x.array[:] = T0
        T_a = protocol.inflow_temperature[0].value  # constant in this scenario
        rho_c = param("density") * param("heat_capacity")
        perf = DENSITY.to_si(BLOOD["density"]) * HEAT_CAPACITY.to_si(BLOOD["heat_capacity"]) * omega
        Q_m = param("metabolic_heat") * param("density")
        T, k = ufl.TrialFunction(V), param("conductivity")
        a_h = (rho_c / dt + perf) * T * v * ufl.dx + ufl.inner(k * ufl.grad(T), ufl.grad(v)) * ufl.dx
        L_h = (rho_c / dt * self.T_old + perf * T_a + Q_m) * v * ufl.dx
        for name, spec in case.boundaries.items():
            if isinstance(spec.heat, Robin):
                tag = tm.boundaries[name]
                a_h += spec.heat.h * T * v * ds(tag)
                L_h += spec.heat.h * spec.heat.ambient * v * ds(tag)
        self.a_h, self.L_h = fem.form(a_h), fem.form(L_h)
        self.bcs_h = self._dirichlet(case, tm, "heat", TEMPERATURE)
        self.A_h = fem_petsc.assemble_matrix(self.a_h, bcs=self.bcs_h)
        self.A_h.assemble()
        self.b_h = fem_petsc.create_vector(V)
        self.ksp_h = ksp_with(comm, self.A_h, "lean_heat_", self.HEAT)

        # ---- transport per agent: one scalar P1 system in C
        ln2 = math.log(2.0)
        self.C_p_init = {
            d.agent: d.per_limb_volume * limb_volume if d.amount is None else d.amount for d in protocol.doses
        }
        self.V_p = protocol.prime_volume + protocol.limb_blood_fraction * limb_volume
        self.agents = []
        lumped_one = fem_petsc.assemble_vector(fem.form(one * v * dm))
        lumped_one.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        lumped_one.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        with lumped_one.localForm() as local:
            m1 = local.array.copy()  # lumped mass of each vertex, ghosts included

        def lumped(expr) -> np.ndarray:
            """Vertex-rule integral of expr v_i, i.e. the lumped weight of each vertex (ghosts included)."""
            vec = fem_petsc.assemble_vector(fem.form(expr * v * dm))
            vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            vec.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
            with vec.localForm() as local:
                out = local.array.copy()
            vec.destroy()
            return out

        def nodal(values: np.ndarray) -> fem.Function:
            f = fem.Function(V)
            f.x.array[:] = values
            return f

        phi_c_nodal = lumped(phi_c) / m1  # lumped-mass average of phi_c at each vertex
        n_global = msh.topology.index_map(3).size_global
        scale = fem.Constant(msh, dt * n_global / limb_volume)  # O(1) entries, as the engine's transport
        lymph_out = ufl.max_value(LL * (self.p - p_L), 0.0)
        Jv = Lp_SV * (pe - self.p)
        n = ufl.FacetNormal(msh)
        outflow = ufl.max_value(ufl.dot(self.u, n), 0.0)
        for name, ag in case.agents.items():
            # exchange (independent of T): Phi_v = a C_p - b C, Renkin-Crone with the Peclet factor
            omega_safe = ufl.max_value(omega, 1e-30)
            PSeff = omega * (1.0 - ufl.exp(-ag.P * param("S_V") / omega_safe))
            conv = Jv * (1.0 - ag.sigma_d)
            Pe = ufl.max_value(ufl.min_value(conv / ufl.max_value(PSeff, 1e-30), 50.0), -50.0)
            small = ufl.lt(abs(Pe), 1e-3)
            f_pe = ufl.conditional(small, 1.0 - Pe / 2 + Pe**2 / 12, Pe / ufl.conditional(small, 1.0, ufl.exp(Pe) - 1))
            m_a, m_b, m_l = lumped(ag.f_u * (conv + PSeff * f_pe)), lumped(PSeff * f_pe), lumped(lymph_out)
            kh = fem.Function(V)  # hydrolysis rate k_h(T) at the nodes (1/s)
            D = fem.Function(V)  # diffusivity D(T) at the nodes (m^2/s)
            g = fem.Function(V)  # uptake with C_c eliminated: coefficient of C (1/s)
            h = fem.Function(V)  # uptake with C_c eliminated: source from the old C_c (kg/(m^3 s))
            C_old = fem.Function(V)
            bl, an = nodal((m_b + m_l) / m1), nodal(m_a / m1)
            C, w = ufl.TrialFunction(V), v
            a_t = scale * (
                (phi / dt + phi * kh + g + bl) * C * w * dm
                + phi * D * ufl.inner(ufl.grad(C), ufl.grad(w)) * dx1
                - C * ufl.inner(self.u, ufl.grad(w)) * dx1
                + outflow * C * w * ufl.ds
            )
            forms = fem.form(a_t), fem.form(scale * (phi * C_old / dt + h) * w * dm), fem.form(scale * an * w * dm)
            A_t = fem_petsc.create_matrix(forms[0])
            b0, b1 = fem_petsc.create_vector(V), fem_petsc.create_vector(V)
            ksp = ksp_with(comm, A_t, f"lean_transport_{name}_", self.TRANSPORT)
            nv = len(m1)
            self.agents.append(
                {
                    "name": name,
                    "kh37": ln2 / ag.half_life,
                    "kalk37": ln2 / ag.alkylation_half_life,
                    "Ea": ag.Ea,
                    "D37": ag.D,
                    "k_up": ag.k_up,
                    "kappa": ag.kappa,
                    "phi_c": phi_c_nodal,
                    "kh": kh,
                    "D": D,
                    "g": g,
                    "h": h,
                    "C_old": C_old,
                    "forms": forms,
                    "A": A_t,
                    "b": (b0, b1),
                    "x": (fem.Function(V), fem.Function(V)),
                    "ksp": ksp,
                    "rates": np.vstack([m_b[: self.n_owned], m_l[: self.n_owned]]),
                    "sum_a": comm.allreduce(float(m_a[: self.n_owned].sum()), MPI.SUM),
                    "C": np.zeros(nv),
                    "Cc": np.zeros(nv),
                    "A_bound": np.zeros(nv),
                    "auc": np.zeros(nv),
                    "auc_c": np.zeros(nv),
                    "peak": np.zeros(nv),
                    "C_p": self.C_p_init.get(name, 0.0) / self.V_p,
                    "C_s": 0.0,
                }
            )
        self.leak, self.V_s, self.CL = (
            protocol.leak_rate * self.V_p,
            protocol.systemic_volume,
            protocol.systemic_clearance,
        )
        self.T_a = T_a
        self.parts = {"heat": 0.0, "transport_assembly": 0.0, "transport_solve": 0.0, "vector_updates": 0.0}
        self.iterations: dict[str, list[int]] = {"heat": []}
        for a in self.agents:
            self.iterations[f"transport_{a['name']}"] = []

    # ---------------------------------------------------------------------------------------------- set-up
    def _dirichlet(self, case: Case, tm, kind: str, dim) -> list[fem.DirichletBC]:
        bcs = []
        for name, spec in case.boundaries.items():
            cond = getattr(spec, kind)
            if isinstance(cond, FixedValue):
                dofs = fem.locate_dofs_topological(self.V, 2, tm.facet_tags.find(tm.boundaries[name]))
                bcs.append(fem.dirichletbc(dim.to_si(cond.value), dofs, self.V))
        return bcs

    def _solve_once(self, a, L, bcs, u: fem.Function, prefix: str, options: dict[str, object]) -> None:
        A = fem_petsc.assemble_matrix(a, bcs=bcs)
        A.assemble()
        b = fem_petsc.assemble_vector(L)
        fem_petsc.apply_lifting(b, [a], bcs=[bcs])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        for bc in bcs:
            bc.set(b.array_w)
        ksp = ksp_with(self.comm, A, prefix, options)
        ksp.solve(b, u.x.petsc_vec)
        u.x.scatter_forward()
        for obj in (ksp, A, b):
            obj.destroy()

    # ------------------------------------------------------------------------------------------------ step
    def _rhs(self, b: PETSc.Vec, L, a=None, bcs=()) -> None:
        with b.localForm() as local:
            local.set(0.0)
        fem_petsc.assemble_vector(b, L)
        if a is not None:
            fem_petsc.apply_lifting(b, [a], bcs=[list(bcs)])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        for bc in bcs:
            bc.set(b.array_w)

    def step(self) -> None:
        dt, clock, parts = self.dt, time.perf_counter, self.parts
        start = clock()
        # heat: right-hand side only; matrix and GAMG hierarchy kept
        self.T_old.x.array[:] = self.T.x.array
        self._rhs(self.b_h, self.L_h, self.a_h, self.bcs_h)
        self.ksp_h.solve(self.b_h, self.T.x.petsc_vec)
        self.T.x.scatter_forward()
        self.iterations["heat"].append(self.ksp_h.getIterationNumber())
        now = clock()
        parts["heat"] += now - start
        start = now
        T = self.T.x.array
        for a in self.agents:
            # T-dependent coefficients once per step at the nodes, then the matrix and two right-hand sides
            arr = np.exp(-a["Ea"] / GAS_CONSTANT * (1.0 / T - 1.0 / T_REF))
            kh = a["kh37"] * arr
            kalk = a["kalk37"] * arr
            a["kh"].x.array[:] = kh
            a["D"].x.array[:] = a["D37"] * (T / T_REF) * 10 ** (247.8 / (T_REF - 140.0) - 247.8 / (T - 140.0))
            k_up, kappa, phi_c = a["k_up"], a["kappa"], a["phi_c"]
            alpha = phi_c * (1.0 / dt + kh + kalk) + k_up / kappa  # C_c = (k_up C + phi_c C_c_old / dt) / alpha
            a["alpha"], a["kalk"] = alpha, kalk
            a["g"].x.array[:] = k_up * (1.0 - k_up / (kappa * alpha))
            a["h"].x.array[:] = k_up * phi_c * a["Cc"] / (dt * kappa * alpha)
            a["C_old"].x.array[:] = a["C"]
            A = a["A"]
            A.zeroEntries()
            fem_petsc.assemble_matrix(A, a["forms"][0])
            A.assemble()
            a["ksp"].setOperators(A)
            self._rhs(a["b"][0], a["forms"][1])
            self._rhs(a["b"][1], a["forms"][2])
            now = clock()
            parts["transport_assembly"] += now - start
            start = now
            for b, x in zip(a["b"], a["x"], strict=True):
                a["ksp"].solve(b, x.x.petsc_vec)
                x.x.scatter_forward()
                self.iterations[f"transport_{a['name']}"].append(a["ksp"].getIterationNumber())
            now = clock()
            parts["transport_solve"] += now - start
            start = now
            # circuit rates (two dot products), the 2x2 implicit circuit, then the nodal updates
            x0, x1 = a["x"][0].x.array, a["x"][1].x.array
            n = self.n_owned
            local = np.concatenate([a["rates"] @ x0[:n], a["rates"] @ x1[:n]])
            (b0, l0, b1, l1) = self.comm.allreduce(local, MPI.SUM)
            r0, r1 = -b0, a["sum_a"] - b1
            k_hp = a["kh37"] * math.exp(-a["Ea"] / GAS_CONSTANT * (1.0 / self.T_a - 1.0 / T_REF))
            M = np.array(
                [
                    [self.V_p / dt + r1 + k_hp * self.V_p + self.leak, -self.leak],
                    [-self.leak - l1, self.V_s / dt + self.leak + self.CL],
                ]
            )
            rhs = np.array([self.V_p * a["C_p"] / dt - r0, self.V_s * a["C_s"] / dt + l0])
            a["C_p"], a["C_s"] = (float(c) for c in np.linalg.solve(M, rhs))
            C = a["C"]
            np.add(x0, a["C_p"] * x1, out=C)
            Cc = a["Cc"]
            Cc[:] = (k_up * C + phi_c * Cc / dt) / a["alpha"]
            a["A_bound"] += dt * phi_c * a["kalk"] * Cc
            a["auc"] += dt * C
            a["auc_c"] += dt * Cc
            np.maximum(a["peak"], C, out=a["peak"])
            now = clock()
            parts["vector_updates"] += now - start
            start = now

    def run(self, steps: int) -> tuple[float, dict[str, float]]:
        """Seconds per step (mean over ``steps`` after one warm-up step) and per part, the maximum over ranks:
        heat (right-hand side and solve), transport assembly (nodal coefficients, matrix, two right-hand
        sides), transport solve (two solves), vector updates (circuit rates and 2x2 solve, C, C_c, A, AUCs)."""
        self.step()  # warm-up: first GAMG set-up, first ASM set-up, caches
        for key in self.parts:
            self.parts[key] = 0.0
        for its in self.iterations.values():
            its.clear()
        self.comm.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.comm.barrier()
        seconds = (time.perf_counter() - t0) / steps
        parts = {k: self.comm.allreduce(v, MPI.MAX) / steps for k, v in self.parts.items()}
        return seconds, parts


# -------------------------------------------------------------------------------------------------- main
def measure(comm: MPI.Comm, size_factor: float, steps: int) -> dict[str, object]:
    tm = meshing.generate(case_at(size_factor, 1), comm)
    engine, engine_its = engine_step(tm, size_factor, steps)
    lean = Lean(case_at(size_factor, 1 + steps), tm)
    lean_seconds, parts = lean.run(steps)
    return {
        "ranks": comm.size,
        "size_factor": size_factor,
        "vertices": tm.mesh.topology.index_map(0).size_global,
        "cells": tm.mesh.topology.index_map(3).size_global,
        "steps": steps,
        "engine_seconds_per_step": engine,
        "lean_seconds_per_step": lean_seconds,
        "ratio": engine / lean_seconds,
        "lean_seconds_by_part": parts,
        "lean_krylov_iterations": {k: iteration_stats(v) for k, v in lean.iterations.items()},
        "engine_krylov_iterations": engine_its,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-factors", type=float, nargs="+", default=[1.0, 0.42])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "hpc" / "bench" / "results")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    for sf in args.size_factors:
        record = {**measure(comm, sf, args.steps), "machine": scaling.machine()}
        if comm.rank == 0:
            args.output.mkdir(parents=True, exist_ok=True)
            path = args.output / f"ratio-sf{sf}-np{comm.size}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            parts = " / ".join(f"{v:.3f}" for v in record["lean_seconds_by_part"].values())  # type: ignore[union-attr]
            print(
                f"{path.name}: {record['vertices']} vertices, {comm.size} ranks: engine "
                f"{record['engine_seconds_per_step']:.3f} s/step, lean {record['lean_seconds_per_step']:.3f} s/step "
                f"(heat / assembly / solve / updates {parts}), engine/lean {record['ratio']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
