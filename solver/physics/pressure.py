"""Interstitial fluid pressure and Darcy flux (MODEL.md section 2). Steady; re-solved on change.

    -div(K grad p) = Jv/V - JL/V
    Jv/V = Lp S/V [p_v - p - sigma_p (pi_v - pi_i)],    JL/V = LL (p - p_L)
    u    = -K grad p                                      (m/s)

Boundaries: no flux by default; ``fixed`` values are Dirichlet conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ufl
from dolfinx import fem

from solver.physics.linear import LinearSystem, merged_options

DEFAULT_OPTIONS: dict[str, object] = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-10,
    "ksp_atol": 1e-14,
    "ksp_max_it": 500,
}


class Pressure:
    """Steady pressure equation on ``V`` (P1 or P2) with coefficient expressions.

    ``K`` hydraulic conductivity (m^2/(Pa s)); ``Lp_SV`` = Lp S/V (1/(Pa s)); ``pe`` = p_v - sigma_p
    (pi_v - pi_i) (Pa); ``LL`` (1/(Pa s)) and ``p_L`` (Pa) lymphatics; ``source`` an extra volumetric
    source (1/s), used by manufactured-solution tests.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        K: ufl.core.expr.Expr,
        Lp_SV: ufl.core.expr.Expr,
        pe: ufl.core.expr.Expr,
        LL: ufl.core.expr.Expr,
        p_L: ufl.core.expr.Expr,
        bcs: Sequence[fem.DirichletBC] = (),
        petsc: Mapping[str, object] | None = None,
        source: ufl.core.expr.Expr | None = None,
        prefix: str = "pressure_",
    ) -> None:
        self.V = V
        self.p = fem.Function(V, name="p")
        self.K = K
        self.Lp_SV, self.pe, self.LL, self.p_L = Lp_SV, pe, LL, p_L
        p, q = ufl.TrialFunction(V), ufl.TestFunction(V)
        a = ufl.inner(K * ufl.grad(p), ufl.grad(q)) * ufl.dx + (Lp_SV + LL) * p * q * ufl.dx
        L = (Lp_SV * pe + LL * p_L) * q * ufl.dx
        if source is not None:
            L += source * q * ufl.dx
        self.system = LinearSystem(a, L, self.p, bcs, prefix, merged_options(DEFAULT_OPTIONS, petsc))
        mesh = V.mesh
        self.W = fem.functionspace(mesh, ("DG", max(V.ufl_element().embedded_superdegree - 1, 0), (3,)))
        self.u = fem.Function(self.W, name="u")
        self._flux = fem.Expression(-K * ufl.grad(self.p), self.W.element.interpolation_points)

    def solve(self) -> fem.Function:
        """Reassemble (coefficients may have changed), solve for p and update the Darcy flux u."""
        self.system.operator_changed()
        self.system.solve()
        self.u.interpolate(self._flux)
        return self.p

    def filtration(self) -> ufl.core.expr.Expr:
        """Jv/V, transvascular filtration per tissue volume (1/s); positive into the tissue."""
        return self.Lp_SV * (self.pe - self.p)

    def lymph(self) -> ufl.core.expr.Expr:
        """JL/V, lymphatic drainage per tissue volume (1/s)."""
        return self.LL * (self.p - self.p_L)
