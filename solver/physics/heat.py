"""Pennes bioheat equation (MODEL.md section 5), steady or backward Euler in time.

    rho c dT/dt - div(k grad T) = rho_b c_b omega (T_a(t) - T) + Q_m        (W/m^3)
    -k dT/dn = h (T - T_ambient) on Robin boundaries (skin to room, or the ILI warming blanket)

``omega`` is the volumetric perfusion (1/s): under ILP the circuit flow shared among regions, with
``T_a`` the heat-exchanger outlet temperature. The operator is constant while omega and dt are: its
matrix and preconditioner are reused; ``operator_changed()`` is called when perfusion changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import ufl
from dolfinx import fem

from solver.physics.linear import LinearSystem, merged_options

DEFAULT_OPTIONS: dict[str, object] = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-10,
    "ksp_atol": 1e-12,
    "ksp_max_it": 500,
}


def lang_blood_perfusion(region: str, T: float) -> float | None:
    """Blood perfusion (kg/(m^3 s)) at temperature T (K) after Lang, Erdmann & Seebass (1999), for the
    regions it covers (muscle, fat, tumour); None for others. Tumour flow falls above 37 C and stops near
    42.8 C (clamped at 0); below 37 C it is taken as its 37 C value."""
    c = T - 273.15
    bell = math.exp(-((c - 45.0) ** 2) / 12.0)
    if region == "muscle":
        return 0.45 + 3.55 * bell
    if region == "fat":
        return 0.36 + 0.36 * bell
    if region == "tumour":
        return max(0.833 - max(c - 37.0, 0.0) ** 4.8 / 5438.0, 0.0)
    return None


T_43 = 316.15  # K


def cem43_increment(T: np.ndarray, dt: float) -> np.ndarray:
    """Thermal dose added in dt seconds at temperatures T (K), in equivalent minutes at 43 C
    (Sapareto & Dewey 1984: R = 0.5 at or above 43 C, 0.25 below)."""
    R = np.where(T >= T_43, 0.5, 0.25)
    return (dt / 60.0) * R ** (T_43 - T)


class RobinBoundary:
    """h (W/(m^2 K)) and ambient temperature (K) on boundary facets tagged ``tag``; both Constants."""

    def __init__(self, mesh, tag: int, h: float, ambient: float) -> None:
        self.tag = tag
        self.h = fem.Constant(mesh, h)
        self.ambient = fem.Constant(mesh, ambient)


class Heat:
    """Pennes heat problem in temperature T (K).

    ``rho_c`` volumetric heat capacity (J/(m^3 K)); ``k`` conductivity (W/(m K)); ``perfusion_coeff`` =
    rho_b c_b omega (W/(m^3 K)); ``T_a`` arterial/inflow temperature Constant (K); ``Q_m`` metabolic
    heat (W/m^3); ``ds`` boundary measure with facet tags; ``steady`` drops the time derivative.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        rho_c: ufl.core.expr.Expr,
        k: ufl.core.expr.Expr,
        perfusion_coeff: ufl.core.expr.Expr,
        T_a: fem.Constant,
        Q_m: ufl.core.expr.Expr,
        dt: fem.Constant,
        T_initial: float,
        robin: Sequence[RobinBoundary] = (),
        ds: ufl.Measure | None = None,
        bcs: Sequence[fem.DirichletBC] = (),
        steady: bool = False,
        petsc: Mapping[str, object] | None = None,
        source: ufl.core.expr.Expr | None = None,
        prefix: str = "heat_",
    ) -> None:
        self.V = V
        self.T = fem.Function(V, name="T")
        self.T.x.array[:] = T_initial
        self.T_old = fem.Function(V, name="T_old")
        self.T_old.x.array[:] = T_initial
        self.T_a, self.dt, self.steady = T_a, dt, steady
        T, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        a = ufl.inner(k * ufl.grad(T), ufl.grad(v)) * ufl.dx + perfusion_coeff * T * v * ufl.dx
        L = (perfusion_coeff * T_a + Q_m) * v * ufl.dx
        if not steady:
            a += rho_c / dt * T * v * ufl.dx
            L += rho_c / dt * self.T_old * v * ufl.dx
        for r in robin:
            assert ds is not None
            a += r.h * T * v * ds(r.tag)
            L += r.h * r.ambient * v * ds(r.tag)
        if source is not None:
            L += source * v * ufl.dx
        self.system = LinearSystem(a, L, self.T, bcs, prefix, merged_options(DEFAULT_OPTIONS, petsc))

    def step(self) -> fem.Function:
        """Advance one time step (or solve the steady problem); T_old becomes T."""
        self.T_old.x.array[:] = self.T.x.array
        self.system.solve()
        return self.T

    def operator_changed(self) -> None:
        self.system.operator_changed()
