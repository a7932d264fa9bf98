"""Drug transport in tissue (MODEL.md section 4, version 2): free C, intracellular C_c and DNA-bound A (kg/m^3).

    phi (1 + B) dC/dt + div(u (1 + B) C) - div(D grad C) = Phi_v - (JL/V)(1 + B) C - phi k_h C - J_up
    phi_c dC_c/dt = J_up - phi_c (k_h + k_alk) C_c,        J_up = k_up (C - C_c/kappa)
    dA/dt = phi_c k_alk C_c
    Phi_v = (Jv/V)(1 - sigma_d) f_u C_p + PS_b (f_u C_p - C) Pe/(exp(Pe) - 1) + q (C_p - C/f_u)
    PS_b = (omega/f_u)(1 - exp(-f_u P S/V / omega)),   Pe = (Jv/V)(1 - sigma_d)/PS_b

B = r (1 - f_u,plasma)/f_u,plasma: interstitial albumin binding (r the interstitial/plasma albumin ratio);
the bound drug moves with interstitial fluid and lymph, and is protected from hydrolysis. D is the effective
diffusivity per tissue volume (Swabb), used once. f_u is the unbound fraction of the plasma the capillaries
carry: the perfusate's while the limb is isolated, the body's after tourniquet release. PS_b integrates
binding-aware exchange along the capillary: PS << omega gives PS, PS >> omega gives omega/f_u (the plasma
flow's whole drug). q is the TNF perfusate leak into tumour interstitium (0 elsewhere; solver.physics.tnf).

Backward Euler in time. The system is linear in the perfusate concentration C_p, so a step is solved by
superposition: x = x0 + C_p x1 (x0: old state, C_p = 0; x1: unit perfusate), which lets the circuit
(solver.physics.circuit) be solved exactly and implicitly with the tissue. Two routes share this module's
pieces and one interface (:class:`TransportProblem`):

- :mod:`solver.physics.transport_lumped` (P1 with lumped zero-order terms, the default): C_c and A obey
  pointwise ODEs, eliminated exactly at the nodes, so the Krylov solve is one scalar system in C;
- :mod:`solver.physics.transport_mixed` (P2, or P1 with a consistent mass matrix): one mixed (C, C_c, A)
  system.

Temperature enters through :class:`ThermalRates`: k_h, k_alk and D as nodal Functions updated once per
step from T, not exp() at every quadrature point of every assembly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ufl
from dolfinx import fem

from solver.parameters import GAS_CONSTANT, T_REF
from solver.physics.linear import LinearSystem

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
FIELDS = ("C", "C_c", "A")


def arrhenius(rate_37, Ea: float, T):
    """k(T) = k_37 exp(-Ea/R (1/T - 1/310.15)), T in K: a UFL expression or a numpy array, as T is."""
    exp = np.exp if isinstance(T, np.ndarray | float | int) else ufl.exp
    return rate_37 * exp(-Ea / GAS_CONSTANT * (1.0 / T - 1.0 / T_REF))


def water_viscosity(T):
    """Water viscosity (Pa s), Vogel equation: 2.414e-5 * 10^(247.8/(T - 140)); T (K) UFL or numpy."""
    return 2.414e-5 * 10 ** (247.8 / (T - 140.0))


def stokes_einstein(D_37: float, T):
    """D(T) = D_37 (T/310.15) mu_w(37 C)/mu_w(T) (m^2/s); T (K) UFL or numpy."""
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
    ``omega`` plasma flow (1/s), ``sigma_d`` drug reflection, ``f_u`` unbound fraction in the plasma (a number
    or a Constant: it changes at tourniquet release), ``leak`` plasma exchanged through leaky vessels (1/s,
    TNF: free and bound drug in, interstitial free over f_u out; solver.physics.tnf)."""

    Jv: ufl.core.expr.Expr
    PS: ufl.core.expr.Expr
    omega: ufl.core.expr.Expr
    sigma_d: float
    f_u: float | fem.Constant
    leak: ufl.core.expr.Expr | float = 0.0

    def coefficients(self) -> tuple[ufl.core.expr.Expr, ufl.core.expr.Expr]:
        """(a, b) with Phi_v = a C_p - b C (C_p the total plasma concentration)."""
        omega_safe = ufl.max_value(self.omega, 1e-30)
        PS_b = self.omega / self.f_u * (1.0 - ufl.exp(-self.f_u * self.PS / omega_safe))
        convective = self.Jv * (1.0 - self.sigma_d)
        Pe = convective / ufl.max_value(PS_b, 1e-30)
        f = peclet_factor(Pe)
        return self.f_u * (convective + PS_b * f) + self.leak, PS_b * f + self.leak / self.f_u


@dataclass
class Kinetics:
    """Cellular kinetics: hydrolysis k_h and alkylation k_alk (1/s), uptake k_up (1/s), equilibrium ratio
    kappa, diffusivity D (m^2/s). Each rate is a float, a Constant, a Function on the transport's scalar
    space (see :class:`ThermalRates`) or any UFL expression."""

    k_h: ufl.core.expr.Expr
    k_alk: ufl.core.expr.Expr
    k_up: float | ufl.core.expr.Expr
    kappa: float
    D: ufl.core.expr.Expr


class ThermalRates:
    """k_h, k_alk, k_up (1/s) and D (m^2/s) of one agent at the current state, as Functions on the
    temperature's space: Arrhenius rates, the uptake rate (times the metabolic potentiation) and Stokes-Einstein
    diffusivity evaluated at the nodes by :meth:`update`, once per step (forms and the nodal elimination read
    them as plain arrays, nothing is interpolated in the time loop)."""

    def __init__(
        self,
        V: fem.FunctionSpace,
        half_life: float,
        alkylation_half_life: float,
        D_37: float,
        k_up: float,
        Ea: tuple[float, float, float],
    ):
        """Rates at 37 C: hydrolysis and alkylation from their half-lives (s), uptake ``k_up`` (1/s), diffusivity
        ``D_37`` (m^2/s); ``Ea`` the activation energies (J/mol) of (hydrolysis, alkylation, uptake)."""
        self.k_h37, self.k_alk37 = np.log(2.0) / half_life, np.log(2.0) / alkylation_half_life
        self.Ea_h, self.Ea_alk, self.Ea_up = Ea
        self.D_37, self.k_up0 = D_37, k_up
        self.k_h, self.k_alk, self.k_up, self.D = (fem.Function(V, name=n) for n in ("k_h", "k_alk", "k_up", "D"))

    def update(self, T: np.ndarray, uptake_factor: float = 1.0) -> None:
        """Set the rates at nodal temperatures ``T`` (K, owned and ghost values), each with its own Arrhenius
        law; ``uptake_factor`` multiplies the uptake rate (acidosis potentiation, 1 otherwise)."""
        self.k_h.x.array[:] = arrhenius(self.k_h37, self.Ea_h, T)
        self.k_alk.x.array[:] = arrhenius(self.k_alk37, self.Ea_alk, T)
        self.k_up.x.array[:] = arrhenius(self.k_up0 * uptake_factor, self.Ea_up, T)
        self.D.x.array[:] = stokes_einstein(self.D_37, T)

    def kinetics(self, kappa: float) -> Kinetics:
        return Kinetics(k_h=self.k_h, k_alk=self.k_alk, k_up=self.k_up, kappa=kappa, D=self.D)


def nodal(expr, V: fem.FunctionSpace) -> Callable[[], np.ndarray]:
    """A function returning the nodal values of ``expr`` on ``V`` (owned and ghost): a Function on V is read
    directly, a number or Constant broadcast, anything else interpolated (compiled once)."""
    n = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    if isinstance(expr, int | float):
        values = np.full(n, float(expr))
        return lambda: values
    if isinstance(expr, fem.Constant):
        return lambda: np.full(n, float(expr.value))
    if isinstance(expr, fem.Function) and expr.function_space == V:
        return lambda: expr.x.array
    f = fem.Function(V)
    compiled = fem.Expression(expr, V.element.interpolation_points)

    def interpolated() -> np.ndarray:
        f.interpolate(compiled)
        return f.x.array

    return interpolated


@dataclass
class FreeDrugSpace:
    """Where the free concentration C lives, for Dirichlet conditions on it: ``V`` the scalar space and, in
    the mixed route, ``sub`` the subspace W.sub(0) of the mixed space (None in the scalar route)."""

    V: fem.FunctionSpace
    sub: fem.FunctionSpace | None = None

    def dirichlet(self, value: fem.Function, facets: np.ndarray | None = None, marker=None) -> fem.DirichletBC:
        """C = ``value`` (a Function on V) on boundary ``facets`` or on the dofs where ``marker(x)`` holds."""
        spaces = self.V if self.sub is None else (self.sub, self.V)
        if facets is not None:
            dofs = fem.locate_dofs_topological(spaces, 2, facets)
        else:
            dofs = fem.locate_dofs_geometrical(spaces, marker)
        return fem.dirichletbc(value, dofs) if self.sub is None else fem.dirichletbc(value, dofs, self.sub)


class TransportProblem(ABC):
    """One agent's tissue drug problem: the interface the coupled model uses, whatever the route.

    A step: :meth:`prepare` (coefficients of this step), :meth:`solve_split` (old-state and unit-perfusate
    responses), :meth:`rates` (the circuit's affine tissue rates), :meth:`combine` (the step's solution for
    the circuit's C_p); then :meth:`advance` to accept it or :meth:`rollback` to undo it.
    """

    V: fem.FunctionSpace  # the scalar space of each of C, C_c and A
    C_p: fem.Constant  # perfusate concentration of the current solution (kg/m^3)
    system: LinearSystem

    @abstractmethod
    def prepare(self, exchange_changed: bool = True) -> None:
        """Take this step's coefficients (T-dependent rates, dt; with ``exchange_changed`` also pressure,
        perfusion and permeability): the operator is rebuilt at the next solve."""

    @abstractmethod
    def solve_split(self) -> None:
        """Solve for the old-state response (C_p = 0) and the unit-perfusate response; the step's fields are set
        by :meth:`combine`."""

    @abstractmethod
    def rates(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """After :meth:`solve_split`: (vascular uptake, lymph outflow), each (r0, r1) with rate = r0 + C_p r1
        (kg/s), summed over ranks."""

    @abstractmethod
    def combine(self, C_p: float) -> None:
        """Make the step's solution the one for perfusate concentration ``C_p``."""

    @abstractmethod
    def solve_with(self, C_p: float) -> None:
        """Solve with a given perfusate concentration (no circuit coupling; benchmarks, Dirichlet ok)."""

    @abstractmethod
    def fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """C, C_c and A of the current solution as nodal arrays on :attr:`V` (owned and ghost)."""

    @abstractmethod
    def field_function(self, i: int) -> ufl.core.expr.Expr:
        """C, C_c or A (``i`` = 0, 1, 2) of the current solution as something forms can use."""

    @abstractmethod
    def set_fields(self, values: Sequence[np.ndarray]) -> None:
        """Set the current and old state (restart, initial conditions)."""

    @abstractmethod
    def advance(self) -> None:
        """Accept the step: the new state becomes the old state."""

    @abstractmethod
    def rollback(self) -> None:
        """Undo the step: the current state goes back to the old state."""

    @abstractmethod
    def amount(self, name: str) -> float:
        """A functional of the current state, summed over ranks: "free", "albumin_bound", "cellular", "bound"
        (kg) or the rates "vascular_in", "lymph_out", "hydrolysis", "boundary_out" (kg/s)."""

    @property
    def unknowns(self) -> int:
        """Global size of the linear system solved (C alone in the scalar route, C, C_c, A in the mixed one)."""
        return int(self.system.A.getSize()[0])

    def inventory(self) -> dict[str, float]:
        """Drug in tissue (kg): free, albumin-bound (interstitial), cellular and bound (adducts)."""
        return {k: self.amount(k) for k in ("free", "albumin_bound", "cellular", "bound")}

    def destroy(self) -> None:
        self.system.destroy()


def equation_scale(mesh, dt: fem.Constant) -> float:
    """dt0 / (mean cell volume): the transport equations are multiplied by it so that matrix entries are O(1)
    instead of ~1e-20, which PETSc's absolute ILU zero-pivot test (1e-12) and GMRES's residual estimate need."""
    from mpi4py import MPI

    n_cells = mesh.topology.index_map(mesh.topology.dim).size_global
    volume = mesh.comm.allreduce(
        fem.assemble_scalar(fem.form(fem.Constant(mesh, 1.0) * ufl.dx(domain=mesh))), op=MPI.SUM
    )
    return float(dt.value) * n_cells / volume


def Transport(
    mesh, degree: int, *args, lumped: bool = False, space: fem.FunctionSpace | None = None, **kwargs
) -> TransportProblem:
    """The transport route for ``degree`` and ``lumped`` (arguments as :class:`MixedTransport`); ``space``:
    the scalar P1 space to share with the caller in the lumped route."""
    if lumped:
        if degree != 1:
            raise ValueError("mass lumping is for P1 only (the vertex rule gives P2 edge dofs no mass)")
        from solver.physics.transport_lumped import LumpedTransport

        return LumpedTransport(mesh, *args, space=space, **kwargs)  # type: ignore[misc]
    from solver.physics.transport_mixed import MixedTransport

    return MixedTransport(mesh, degree, *args, **kwargs)


__all__ = [
    "DEFAULT_OPTIONS",
    "Exchange",
    "FreeDrugSpace",
    "Kinetics",
    "ThermalRates",
    "Transport",
    "TransportProblem",
    "arrhenius",
    "stokes_einstein",
]
