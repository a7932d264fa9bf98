"""Drug transport in tissue (MODEL.md section 4): free C, intracellular C_c and DNA-bound A (kg/m^3).

    phi dC/dt + div(u C) - div(phi D grad C) = Phi_v - (JL/V) C - phi k_h C - J_up
    phi_c dC_c/dt = J_up - phi_c (k_h + k_alk) C_c,        J_up = k_up (C - C_c/kappa)
    dA/dt = phi_c k_alk C_c
    Phi_v = (Jv/V)(1 - sigma_d) C_pu + PSeff (C_pu - C) Pe/(exp(Pe) - 1),   C_pu = f_u C_p
    Pe = (Jv/V)(1 - sigma_d)/PSeff,   PSeff = omega (1 - exp(-P S/V / omega))   (Renkin-Crone)

The three fields are one mixed system (backward Euler), so the drug balance closes to solver tolerance.
The system is linear in the perfusate concentration C_p, so a step is solved by superposition: with
one matrix, x = x0 + C_p x1 (x0: old state, C_p = 0; x1: unit perfusate), which lets the circuit
(solver.physics.circuit) be solved exactly and implicitly with the tissue.
Streamline-upwind Petrov-Galerkin stabilisation acts where the cell Peclet number exceeds 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import basix.ufl
import ufl
from dolfinx import fem
from mpi4py import MPI

from solver.parameters import GAS_CONSTANT, T_REF
from solver.physics.linear import LinearSystem, merged_options, scalar

DEFAULT_OPTIONS: dict[str, object] = {
    "ksp_type": "gmres",
    "ksp_gmres_restart": 100,
    "ksp_pc_side": "right",  # convergence test on the true residual (the balance depends on it)
    "pc_type": "asm",
    "sub_pc_type": "ilu",
    "ksp_rtol": 1e-12,
    "ksp_atol": 0.0,
    "ksp_max_it": 1000,
}

PE_SMALL = 1e-3  # below |Pe| this, Pe/(exp(Pe)-1) is its Taylor series 1 - Pe/2 + Pe^2/12
PE_CLAMP = 50.0  # |Pe| above this: pure convection, exp() kept finite


def arrhenius(rate_37: ufl.core.expr.Expr | float, Ea: float, T: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
    """k(T) = k_37 exp(-Ea/R (1/T - 1/310.15)), T in K."""
    return rate_37 * ufl.exp(-Ea / GAS_CONSTANT * (1.0 / T - 1.0 / T_REF))


def water_viscosity(T: ufl.core.expr.Expr | float):
    """Water viscosity (Pa s), Vogel equation: 2.414e-5 * 10^(247.8/(T - 140))."""
    return 2.414e-5 * 10 ** (247.8 / (T - 140.0))


def stokes_einstein(D_37: float, T: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
    """D(T) = D_37 (T/310.15) mu_w(37 C)/mu_w(T)."""
    return D_37 * (T / T_REF) * water_viscosity(T_REF) / water_viscosity(T)


def peclet_factor(Pe: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
    """Pe/(exp(Pe) - 1), safe at Pe -> 0 (series) and for large |Pe| (clamped)."""
    Pe = ufl.max_value(ufl.min_value(Pe, PE_CLAMP), -PE_CLAMP)
    small = ufl.lt(abs(Pe), PE_SMALL)
    guarded = ufl.conditional(small, 1.0, ufl.exp(Pe) - 1.0)
    return ufl.conditional(small, 1.0 - Pe / 2.0 + Pe**2 / 12.0, Pe / guarded)


@dataclass
class Exchange:
    """Transvascular exchange inputs per tissue volume: ``Jv`` filtration (1/s), ``PS`` = P S/V (1/s),
    ``omega`` plasma flow (1/s), ``sigma_d`` drug reflection, ``f_u`` unbound fraction."""

    Jv: ufl.core.expr.Expr
    PS: ufl.core.expr.Expr
    omega: ufl.core.expr.Expr
    sigma_d: float
    f_u: float

    def coefficients(self) -> tuple[ufl.core.expr.Expr, ufl.core.expr.Expr]:
        """(a, b) with Phi_v = a C_p - b C."""
        omega_safe = ufl.max_value(self.omega, 1e-30)
        PSeff = self.omega * (1.0 - ufl.exp(-self.PS / omega_safe))
        convective = self.Jv * (1.0 - self.sigma_d)
        Pe = convective / ufl.max_value(PSeff, 1e-30)
        f = peclet_factor(Pe)
        return self.f_u * (convective + PSeff * f), PSeff * f


@dataclass
class Kinetics:
    """Cellular kinetics: hydrolysis k_h and alkylation k_alk (1/s, may depend on T), uptake k_up (1/s,
    may be scaled in time), equilibrium ratio kappa, diffusivity D (m^2/s, may depend on T)."""

    k_h: ufl.core.expr.Expr
    k_alk: ufl.core.expr.Expr
    k_up: float | ufl.core.expr.Expr
    kappa: float
    D: ufl.core.expr.Expr


class Transport:
    """One agent's tissue drug problem on a mixed (C, C_c, A) space of Lagrange degree ``degree``."""

    def __init__(
        self,
        mesh,
        degree: int,
        phi: ufl.core.expr.Expr,
        phi_c: ufl.core.expr.Expr,
        velocity: ufl.core.expr.Expr,
        lymph: ufl.core.expr.Expr,
        exchange: Exchange,
        kinetics: Kinetics,
        dt: fem.Constant,
        stabilisation: bool = True,
        bcs_factory=None,
        sources: Sequence[ufl.core.expr.Expr] | None = None,
        petsc: Mapping[str, object] | None = None,
        prefix: str = "transport_",
        ds: ufl.Measure | None = None,
        lumped: bool = False,
    ) -> None:
        """``lumped``: integrate every zero-order term (storage, exchange, uptake, reactions, sources) with the
        vertex rule, i.e. lump them onto the diagonal (P1 only). Backward Euler with a consistent mass matrix
        undershoots below zero where drug diffuses into tissue without vessels (h^2/D >> dt: the necrotic
        core); the lumped system keeps concentrations non-negative on reasonable meshes. The balance
        functionals use the same rule, so the drug balance stays an identity."""
        P = basix.ufl.element("Lagrange", mesh.basix_cell(), degree)
        self.W = fem.functionspace(mesh, basix.ufl.mixed_element([P, P, P]))
        self.w = fem.Function(self.W, name="drug")
        self.w_old = fem.Function(self.W)
        self.w_unit = fem.Function(self.W)  # response to a unit perfusate concentration
        self.C_p = fem.Constant(mesh, 0.0)  # perfusate concentration (kg/m^3)
        self.dt = dt
        u_vel = velocity
        # One quadrature rule for every form, matrix and balance functionals alike: the drug balance is
        # then an identity of the discrete equations (the estimated degree of exp() terms is also huge).
        dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 2 * degree + 2})
        if lumped and degree != 1:
            raise ValueError("mass lumping is for P1 only (the vertex rule gives P2 edge dofs no mass)")
        dm = ufl.Measure("dx", domain=mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        dm = dm if lumped else dx  # the measure of zero-order terms
        w, (v, vc, va) = ufl.TrialFunction(self.W), ufl.TestFunctions(self.W)
        C, Cc, A = ufl.split(w)
        Cn, Ccn, An = ufl.split(self.w_old)
        a_ex, b_ex = exchange.coefficients()
        k = kinetics
        lymph_out = ufl.max_value(lymph, 0.0)  # drug leaves with lymph; no backflow from lymphatics
        uptake = k.k_up * (C - Cc / k.kappa)
        loss = lymph_out * C + phi * k.k_h * C + uptake + b_ex * C  # per volume, excluding storage
        ds_all = ds if ds is not None else ufl.ds
        n = ufl.FacetNormal(mesh)
        outflow = ufl.max_value(ufl.dot(u_vel, n), 0.0)
        a = (
            phi * C / dt * v * dm
            + phi * k.D * ufl.inner(ufl.grad(C), ufl.grad(v)) * dx
            - C * ufl.inner(u_vel, ufl.grad(v)) * dx
            + outflow * C * v * ds_all
            + loss * v * dm
            + (phi_c * Cc / dt - uptake + phi_c * (k.k_h + k.k_alk) * Cc) * vc * dm
            + (A / dt - phi_c * k.k_alk * Cc) * va * dm
        )
        old = phi * Cn / dt * v * dm + phi_c * Ccn / dt * vc * dm + An / dt * va * dm
        unit = a_ex * v * dm
        if sources is not None:
            old += sources[0] * v * dm + sources[1] * vc * dm + sources[2] * va * dm
        if stabilisation:
            h = ufl.CellDiameter(mesh)
            speed = ufl.sqrt(ufl.inner(u_vel, u_vel) + 1e-40)
            D_eff = phi * k.D
            cell_peclet = speed * h / (2 * D_eff)
            tau = ((2 * phi / dt) ** 2 + (2 * speed / h) ** 2 + 9 * (4 * D_eff / h**2) ** 2) ** -0.5
            tau = ufl.conditional(ufl.gt(cell_peclet, 1.0), tau, 0.0)
            streamline = tau * ufl.inner(u_vel, ufl.grad(v))
            a += (phi * C / dt + ufl.inner(u_vel, ufl.grad(C)) + ufl.div(u_vel) * C + loss) * streamline * dx
            old += phi * Cn / dt * streamline * dx
            unit += a_ex * streamline * dx
            if sources is not None:
                old += sources[0] * streamline * dx
        # Scale the equations by dt0 / (mean cell volume): entries become O(1) instead of ~1e-20, which
        # PETSc's absolute ILU zero-pivot test (1e-12) and GMRES's residual estimate both need.
        n_cells = mesh.topology.index_map(mesh.topology.dim).size_global
        volume = mesh.comm.allreduce(fem.assemble_scalar(fem.form(fem.Constant(mesh, 1.0) * dx)), op=MPI.SUM)
        scale = fem.Constant(mesh, float(dt.value) * n_cells / volume)
        a, old, unit = scale * a, scale * old, scale * unit
        self.bcs = list(bcs_factory(self.W, self.C_p) if bcs_factory else [])
        opts = merged_options(DEFAULT_OPTIONS, petsc)
        # right-hand sides: old state only, unit perfusate only, and both with the current C_p
        self.system = LinearSystem(a, [old, unit, old + self.C_p * unit], self.w, self.bcs, prefix, opts)

        # Functionals for the drug balance (kg and kg/s), compiled once.
        C_, Cc_, A_ = ufl.split(self.w)
        self.comm = mesh.comm
        self.forms = {
            "free": fem.form(phi * C_ * dm),
            "cellular": fem.form(phi_c * Cc_ * dm),
            "bound": fem.form(A_ * dm),
            "vascular_in": fem.form((a_ex * self.C_p - b_ex * C_) * dm),
            "lymph_out": fem.form(lymph_out * C_ * dm),
            "hydrolysis": fem.form((phi * k.k_h * C_ + phi_c * k.k_h * Cc_) * dm),
            "boundary_out": fem.form(outflow * C_ * ds_all),
        }

    # --------------------------------------------------------------------------------------- stepping
    def operator_changed(self) -> None:
        self.system.operator_changed()

    def solve_split(self) -> None:
        """Solve for the old-state response (into ``w``) and the unit-perfusate response (``w_unit``)."""
        if self.bcs:
            raise RuntimeError("superposition needs homogeneous drug boundary conditions")
        self.system.solve(rhs=0, out=self.w)
        self.system.solve(rhs=1, out=self.w_unit)

    def rate_split(self, name: str) -> tuple[float, float]:
        """A rate functional after :meth:`solve_split` as (r0, r1): rate = r0 + C_p r1 (kg/s)."""
        self.C_p.value = 0.0
        r0 = scalar(self.comm, self.forms[name])
        x0 = self.w.x.array.copy()
        self.w.x.array[:] = self.w_unit.x.array
        self.C_p.value = 1.0
        r1 = scalar(self.comm, self.forms[name])
        self.w.x.array[:] = x0
        return r0, r1

    def combine(self, C_p: float) -> None:
        """Set the step's solution x = x0 + C_p x1 and the perfusate Constant."""
        self.w.x.array[:] += C_p * self.w_unit.x.array
        self.C_p.value = C_p

    def solve_with(self, C_p: float) -> None:
        """Solve with a given perfusate concentration (no circuit coupling; benchmarks, Dirichlet ok)."""
        self.C_p.value = C_p
        self.system.solve(rhs=2, out=self.w)

    def advance(self) -> None:
        """Accept the step: the new state becomes the old state."""
        self.w_old.x.array[:] = self.w.x.array

    def amount(self, name: str) -> float:
        """A functional of the current state (kg or kg/s), summed over ranks."""
        return scalar(self.comm, self.forms[name])

    def inventory(self) -> dict[str, float]:
        """Drug in tissue (kg): free, cellular and bound."""
        return {k: self.amount(k) for k in ("free", "cellular", "bound")}
