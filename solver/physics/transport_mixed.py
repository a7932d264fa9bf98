"""Drug transport, mixed route: C, C_c and A as one mixed (C, C_c, A) system of Lagrange degree 1 or 2
(equations in :mod:`solver.physics.transport`). The route for P2 and for a consistent mass matrix; the
default P1 route with lumped zero-order terms is :mod:`solver.physics.transport_lumped`.

Backward Euler; the balance functionals use the forms' own quadrature, so the drug balance closes to solver
tolerance. Streamline-upwind Petrov-Galerkin stabilisation acts where the cell Peclet number exceeds 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import basix.ufl
import numpy as np
import ufl
from dolfinx import fem

from solver.physics.linear import LinearSystem, merged_options, scalar
from solver.physics.transport import (
    DEFAULT_OPTIONS,
    Exchange,
    FreeDrugSpace,
    Kinetics,
    TransportProblem,
    equation_scale,
)


class MixedTransport(TransportProblem):
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
        binding: ufl.core.expr.Expr | None = None,
    ) -> None:
        """``bcs_factory(FreeDrugSpace)`` returns Dirichlet conditions on C; ``sources`` three extra
        volumetric sources (manufactured solutions). ``lumped``: integrate every zero-order term (storage,
        exchange, uptake, reactions, sources) with the vertex rule, i.e. lump them onto the diagonal (P1 only;
        the same discrete system as :class:`LumpedTransport` without stabilisation, kept as its cross-check).
        Backward Euler with a consistent mass matrix
        undershoots below zero where drug diffuses into tissue without vessels (h^2/D >> dt: the necrotic
        core); the lumped system keeps concentrations non-negative on reasonable meshes. The balance
        functionals use the same rule, so the drug balance stays an identity."""
        if lumped and degree != 1:
            raise ValueError("mass lumping is for P1 only (the vertex rule gives P2 edge dofs no mass)")
        P = basix.ufl.element("Lagrange", mesh.basix_cell(), degree)
        self.W = fem.functionspace(mesh, basix.ufl.mixed_element([P, P, P]))
        self.w = fem.Function(self.W, name="drug")
        self.w_old = fem.Function(self.W)
        self.w_unit = fem.Function(self.W)  # response to a unit perfusate concentration
        self.C_p = fem.Constant(mesh, 0.0)  # perfusate concentration (kg/m^3)
        self.dt = dt
        binding = fem.Constant(mesh, 0.0) if binding is None else binding
        carried = 1.0 + binding  # free plus albumin-bound: stored, convected and drained with lymph
        u_vel = carried * velocity
        # One quadrature rule for every form, matrix and balance functionals alike: the drug balance is
        # then an identity of the discrete equations (the estimated degree of exp() terms is also huge).
        dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 2 * degree + 2})
        dm = ufl.Measure("dx", domain=mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        dm = dm if lumped else dx  # the measure of zero-order terms
        w, (v, vc, va) = ufl.TrialFunction(self.W), ufl.TestFunctions(self.W)
        C, Cc, A = ufl.split(w)
        Cn, Ccn, An = ufl.split(self.w_old)
        a_ex, b_ex = exchange.coefficients()
        k = kinetics
        lymph_out = ufl.max_value(lymph, 0.0) * carried  # drug leaves with lymph; no backflow from lymphatics
        uptake = k.k_up * (C - Cc / k.kappa)
        loss = lymph_out * C + phi * k.k_h * C + uptake + b_ex * C  # per volume, excluding storage
        ds_all = ds if ds is not None else ufl.ds
        n = ufl.FacetNormal(mesh)
        outflow = ufl.max_value(ufl.dot(u_vel, n), 0.0)
        storage = phi * carried
        a = (
            storage * C / dt * v * dm
            + k.D * ufl.inner(ufl.grad(C), ufl.grad(v)) * dx
            - C * ufl.inner(u_vel, ufl.grad(v)) * dx
            + outflow * C * v * ds_all
            + loss * v * dm
            + (phi_c * Cc / dt - uptake + phi_c * (k.k_h + k.k_alk) * Cc) * vc * dm
            + (A / dt - phi_c * k.k_alk * Cc) * va * dm
        )
        old = storage * Cn / dt * v * dm + phi_c * Ccn / dt * vc * dm + An / dt * va * dm
        unit = a_ex * v * dm
        if sources is not None:
            old += sources[0] * v * dm + sources[1] * vc * dm + sources[2] * va * dm
        if stabilisation:
            h = ufl.CellDiameter(mesh)
            speed = ufl.sqrt(ufl.inner(u_vel, u_vel) + 1e-40)
            D_eff = k.D
            cell_peclet = speed * h / (2 * D_eff)
            tau = ((2 * storage / dt) ** 2 + (2 * speed / h) ** 2 + 9 * (4 * D_eff / h**2) ** 2) ** -0.5
            tau = ufl.conditional(ufl.gt(cell_peclet, 1.0), tau, 0.0)
            streamline = tau * ufl.inner(u_vel, ufl.grad(v))
            a += (storage * C / dt + ufl.inner(u_vel, ufl.grad(C)) + ufl.div(u_vel) * C + loss) * streamline * dx
            old += storage * Cn / dt * streamline * dx
            unit += a_ex * streamline * dx
            if sources is not None:
                old += sources[0] * streamline * dx
        scale = fem.Constant(mesh, equation_scale(mesh, dt))
        a, old, unit = scale * a, scale * old, scale * unit
        collapsed = [self.W.sub(i).collapse() for i in range(3)]
        self.V = collapsed[0][0]
        self.dofs = [np.asarray(c[1], dtype=np.int64).ravel() for c in collapsed]
        self.bcs = list(bcs_factory(FreeDrugSpace(self.V, self.W.sub(0))) if bcs_factory else [])
        opts = merged_options(DEFAULT_OPTIONS, petsc)
        # right-hand sides: old state only, unit perfusate only, and both with the current C_p
        self.system = LinearSystem(a, [old, unit, old + self.C_p * unit], self.w, self.bcs, prefix, opts)

        # Functionals for the drug balance (kg and kg/s), compiled once.
        C_, Cc_, A_ = ufl.split(self.w)
        self.comm = mesh.comm
        self.forms = {
            "free": fem.form(phi * C_ * dm),
            "albumin_bound": fem.form(phi * binding * C_ * dm),
            "cellular": fem.form(phi_c * Cc_ * dm),
            "bound": fem.form(A_ * dm),
            "vascular_in": fem.form((a_ex * self.C_p - b_ex * C_) * dm),
            "lymph_out": fem.form(lymph_out * C_ * dm),
            "hydrolysis": fem.form((phi * k.k_h * C_ + phi_c * k.k_h * Cc_) * dm),
            "boundary_out": fem.form(outflow * C_ * ds_all),
        }

    # --------------------------------------------------------------------------------------- stepping
    def prepare(self, exchange_changed: bool = True) -> None:
        self.system.operator_changed()  # rates and D follow T every step

    def solve_split(self) -> None:
        """Solve for the old-state response (into ``w``) and the unit-perfusate response (``w_unit``)."""
        if self.bcs:
            raise RuntimeError("superposition needs homogeneous drug boundary conditions")
        self.system.solve(rhs=0, out=self.w)
        self.system.solve(rhs=1, out=self.w_unit)

    def rates(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return self._rate_split("vascular_in"), self._rate_split("lymph_out")

    def _rate_split(self, name: str) -> tuple[float, float]:
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
        self.w_old.x.array[:] = self.w.x.array

    def rollback(self) -> None:
        self.w.x.array[:] = self.w_old.x.array

    def fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self.w.x.array
        return x[self.dofs[0]], x[self.dofs[1]], x[self.dofs[2]]

    def field_function(self, i: int) -> ufl.core.expr.Expr:
        return ufl.split(self.w)[i]

    def set_fields(self, values: Sequence[np.ndarray]) -> None:
        for dofs, v in zip(self.dofs, values, strict=True):
            self.w.x.array[dofs] = v
        self.advance()

    def amount(self, name: str) -> float:
        return scalar(self.comm, self.forms[name])
