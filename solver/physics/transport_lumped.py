"""Drug transport, scalar route (the default at P1): one Krylov solve in the free concentration C per right-hand
side, with C_c and A eliminated exactly at the nodes (equations in :mod:`solver.physics.transport`).

Interstitial albumin binds drug in fast equilibrium (bound = B C): storage, convection and lymph carry (1 + B) C,
hydrolysis acts on the free drug. Every zero-order term (storage, exchange, lymph, uptake, reactions) is
integrated with the vertex rule, i.e.
lumped onto the nodes. Then C_c and A obey, node by node i, with nodal weights m_i = INT w v_i:

    alpha_i C_c,i = beta_i C_i + m^phi_c_i C_c,i^old / dt        (C_c row)
    m^1_i A_i     = m^1_i A_i^old + dt k_alk,i m^phi_c_i C_c,i      (A row)
    alpha_i = m^phi_c_i (1/dt + k_h,i + k_alk,i) + beta_i / kappa,   beta_i = k_up,i m^1_i

so C_c is an affine function of C_i alone and substitutes into the C row: its diagonal gains
- beta_i^2 / (kappa alpha_i) and its right-hand side (beta_i / kappa) m^phi_c_i C_c,i^old / (dt alpha_i).
Diffusion, advection and the outflow boundary are assembled as forms (quadrature degree 1 and 2: exact for
P1 with P1 and DG0 coefficients); the lumped terms are nodal vectors added to the diagonal. Each step then
costs one scalar P1 matrix and two right-hand sides; C_c and A follow by vector operations.

The discrete system is exactly that of the mixed route with lumping (the tests compare them), so the drug
balance stays an identity: the balance functionals are dot products with the same nodal weights.
The SUPG residual uses the previous step's C_c in the uptake term, which keeps the elimination local; its
test functions sum to zero over the nodes, so it moves no drug in the balance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from solver.physics.linear import LinearSystem, NodalWeights, merged_options
from solver.physics.transport import (
    DEFAULT_OPTIONS,
    FIELDS,
    Exchange,
    FreeDrugSpace,
    Kinetics,
    TransportProblem,
    equation_scale,
    nodal,
)


class MidpointFields:
    """Coefficients at cell midpoints as DG0 Functions (by name), where the one-point rule evaluates them: a
    P1 field's midpoint value is the mean of its cell's vertex values (numpy); expressions are interpolated."""

    def __init__(self, V: fem.FunctionSpace) -> None:
        self.V0 = fem.functionspace(V.mesh, ("DG", 0))
        self.vertex_dofs = V.dofmap.list  # (local cells, 4): the P1 dofs of each cell, ghost cells included
        self.cell_dof = self.V0.dofmap.list[:, 0]
        self.functions: dict[str, fem.Function] = {}

    def __getitem__(self, name: str) -> fem.Function:
        if name not in self.functions:
            self.functions[name] = fem.Function(self.V0, name=name)
        return self.functions[name]

    def expression(self, expr: ufl.core.expr.Expr):
        """A function returning the midpoint values of ``expr`` per cell (compiled once)."""
        f = fem.Function(self.V0)
        compiled = fem.Expression(expr, self.V0.element.interpolation_points)

        def values() -> np.ndarray:
            f.interpolate(compiled)
            return f.x.array[self.cell_dof]

        return values

    def mean(self, nodal_values: np.ndarray) -> np.ndarray:
        """Midpoint values per cell of a P1 field given by its nodal values."""
        return nodal_values[self.vertex_dofs].mean(axis=1)

    def values(self, name: str) -> np.ndarray:
        return self[name].x.array[self.cell_dof]

    def update(self, name: str, per_cell: np.ndarray) -> np.ndarray:
        self[name].x.array[self.cell_dof] = per_cell
        return per_cell


class LumpedTransport(TransportProblem):
    """One agent's tissue drug problem at P1 with lumped zero-order terms, solved as one scalar system in C.

    Arguments as :class:`solver.physics.transport_mixed.MixedTransport`; ``space`` a P1 space to share (the
    model's, so that the rate Functions of :class:`ThermalRates` are read without interpolation).
    """

    def __init__(
        self,
        mesh,
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
        space: fem.FunctionSpace | None = None,
        binding: ufl.core.expr.Expr | None = None,
    ) -> None:
        V = space if space is not None else fem.functionspace(mesh, ("Lagrange", 1))
        if V.ufl_element().embedded_superdegree != 1:
            raise ValueError("the lumped transport route is P1 only")
        self.V, self.dt, self.comm, self.kappa = V, dt, mesh.comm, kinetics.kappa
        self.n_owned = V.dofmap.index_map.size_local
        self.C, self.C_c, self.A = (fem.Function(V, name=name) for name in FIELDS)
        self.C_old, self.C_c_old, self.A_old = (fem.Function(V) for _ in FIELDS)
        self.C_unit = fem.Function(V)  # response of C to a unit perfusate concentration
        self.C_p = fem.Constant(mesh, 0.0)
        dm = ufl.Measure("dx", domain=mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 1})
        ds_all = (ds if ds is not None else ufl.Measure("ds", domain=mesh))(metadata={"quadrature_degree": 2})
        C, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        a_ex, b_ex = exchange.coefficients()
        k = kinetics
        # albumin-bound drug (B C) is stored, convected and drained with lymph beside the free drug
        binding = fem.Constant(mesh, 0.0) if binding is None else binding
        carried = 1.0 + binding
        lymph_out = ufl.max_value(lymph, 0.0) * carried  # drug leaves with lymph; no backflow from lymphatics
        velocity = carried * velocity
        outflow = ufl.max_value(ufl.dot(velocity, ufl.FacetNormal(mesh)), 0.0)
        # Diffusion, advection and SUPG are integrated with the one-point (midpoint) rule, exact at P1: their
        # coefficients are DG0 fields of midpoint values, updated by numpy (few coefficients to pack).
        self.cells = MidpointFields(V)
        cf = self.cells
        cf.update("phi", cf.expression(phi)())
        cf.update("storage", cf.expression(phi * carried)())
        a = (
            cf["D_eff"] * ufl.inner(ufl.grad(C), ufl.grad(v)) * dx
            - C * ufl.inner(velocity, ufl.grad(v)) * dx
            + outflow * C * v * ds_all
        )
        old = None if sources is None else sources[0] * v * dm
        unit = None
        self.stabilisation = stabilisation
        if stabilisation:
            cf.update("h", cf.expression(ufl.CellDiameter(mesh))())
            self._speed = cf.expression(ufl.sqrt(ufl.inner(velocity, velocity)))
            self._exchange_loss = cf.expression(lymph_out + b_ex)  # per volume (1/s)
            self._uptake_source = cf.expression(a_ex)
            streamline = cf["tau"] * ufl.inner(velocity, ufl.grad(v))
            storage = cf["storage"] * C / dt
            residual = storage + ufl.inner(velocity, ufl.grad(C)) + ufl.div(velocity) * C + cf["loss"] * C
            a += residual * streamline * dx
            supg_old = (cf["storage"] * self.C_old / dt + cf["k_up_over_kappa"] * self.C_c_old) * streamline * dx
            if sources is not None:
                supg_old += sources[0] * streamline * dx
            old = supg_old if old is None else old + supg_old
            unit = cf["a"] * streamline * dx
        self.scale = equation_scale(mesh, dt)
        s = fem.Constant(mesh, self.scale)
        old_s, unit_s = (None if f is None else s * f for f in (old, unit))
        both = old_s if unit_s is None else self.C_p * unit_s if old_s is None else old_s + self.C_p * unit_s
        self.bcs = list(bcs_factory(FreeDrugSpace(V)) if bcs_factory else [])
        opts = merged_options(DEFAULT_OPTIONS, petsc)
        self.system = LinearSystem(s * a, [old_s, unit_s, both], self.C, self.bcs, prefix, opts)
        self._bc_dofs = np.concatenate(
            [bc.dof_indices()[0][: bc.dof_indices()[1]] for bc in self.bcs] or [np.zeros(0, dtype=np.int32)]
        )
        self.weights = NodalWeights(
            {"phi": phi * v * dm, "storage": phi * carried * v * dm, "phi_c": phi_c * v * dm, "one": v * dm}
        )
        self.exchange = NodalWeights(
            {"a": a_ex * v * dm, "b": b_ex * v * dm, "lymph": lymph_out * v * dm, "outflow": outflow * v * ds_all}
        )
        self.sources = None if sources is None else NodalWeights({"C_c": sources[1] * v * dm, "A": sources[2] * v * dm})
        self._rates = {name: nodal(getattr(k, name), V) for name in ("k_h", "k_alk", "k_up", "D")}
        self._exchange_cells()
        self.prepare(exchange_changed=False)  # just assembled

    def _exchange_cells(self) -> None:
        """Midpoint values that follow pressure, perfusion and permeability (SUPG only)."""
        if self.stabilisation:
            for name, expression in (("speed", self._speed), ("exchange_loss", self._exchange_loss),
                                     ("a", self._uptake_source)):  # fmt: skip
                self.cells.update(name, expression())

    def _step_cells(self, dt: float) -> None:
        """Midpoint values that follow T and dt: D (effective, per tissue volume), and the SUPG loss (free
        drug's hydrolysis with phi at the nodes' mean), k_up/kappa and tau."""
        cf = self.cells
        storage = cf.values("storage")
        D_eff = cf.update("D_eff", cf.mean(self._rates["D"]()))
        if not self.stabilisation:
            return
        k_up = cf.mean(self._rates["k_up"]())
        cf.update("k_up_over_kappa", k_up / self.kappa)
        cf.update("loss", cf.values("exchange_loss") + cf.values("phi") * cf.mean(self._rates["k_h"]()) + k_up)
        h, speed = cf.values("h"), cf.values("speed")
        tau = ((2 * storage / dt) ** 2 + (2 * speed / h) ** 2 + 9 * (4 * D_eff / h**2) ** 2) ** -0.5
        cf.update("tau", np.where(speed * h > 2 * D_eff, tau, 0.0))  # only where the cell Peclet number > 1

    # --------------------------------------------------------------------------------------- stepping
    def prepare(self, exchange_changed: bool = True) -> None:
        if exchange_changed:
            self.exchange.assemble()
            self._exchange_cells()
        w, x = self.weights, self.exchange
        dt = float(self.dt.value)
        self._step_cells(dt)
        self.k_h, self.k_alk = self._rates["k_h"]().copy(), self._rates["k_alk"]().copy()
        self.beta = self._rates["k_up"]() * w["one"]
        alpha = w["phi_c"] * (1.0 / dt + self.k_h + self.k_alk) + self.beta / self.kappa
        self.inv_alpha = np.divide(1.0, alpha, out=np.zeros_like(alpha), where=alpha > 0)
        diagonal = w["storage"] / dt + w["phi"] * self.k_h + x["lymph"] + self.beta + x["b"]
        diagonal -= self.beta**2 / self.kappa * self.inv_alpha
        owned = self.scale * diagonal[: self.n_owned]
        owned[self._bc_dofs] = 0.0  # Dirichlet rows keep the unit diagonal of the assembly
        self.system.diagonal = owned
        self.system.operator_changed()

    def _old_rhs(self) -> np.ndarray:
        """The nodal part of the old-state right-hand side (owned, scaled)."""
        w, dt = self.weights, float(self.dt.value)
        cellular = w["phi_c"] * self.C_c_old.x.array / dt
        if self.sources is not None:
            self.sources.assemble()
            cellular = cellular + self.sources["C_c"]
        rhs = w["storage"] * self.C_old.x.array / dt + self.beta / self.kappa * self.inv_alpha * cellular
        return self.scale * rhs[: self.n_owned]

    def _eliminate(self) -> None:
        """C_c and A at the nodes from the current C (the C_c and A rows, solved exactly)."""
        w, dt = self.weights, float(self.dt.value)
        cellular = self.beta * self.C.x.array + w["phi_c"] * self.C_c_old.x.array / dt
        bound = self.k_alk * w["phi_c"]
        if self.sources is not None:
            cellular = cellular + self.sources["C_c"]
        self.C_c.x.array[:] = cellular * self.inv_alpha
        extra = 0.0 if self.sources is None else self.sources["A"]
        self.A.x.array[:] = self.A_old.x.array + dt * (bound * self.C_c.x.array + extra) / w["one"]

    def solve_split(self) -> None:
        if self.bcs:
            raise RuntimeError("superposition needs homogeneous drug boundary conditions")
        self.system.solve(rhs=0, out=self.C, nodal=self._old_rhs())
        self.system.solve(rhs=1, out=self.C_unit, nodal=self.scale * self.exchange["a"][: self.n_owned])
        self.C_p.value = 0.0  # C_c and A follow in combine(), once the circuit has given C_p

    def _dot(self, *pairs: tuple[np.ndarray, np.ndarray]) -> list[float]:
        n = self.n_owned
        local = np.array([float(np.dot(u[:n], v[:n])) for u, v in pairs])
        return list(self.comm.allreduce(local, op=MPI.SUM))

    def rates(self) -> tuple[tuple[float, float], tuple[float, float]]:
        x, C0, C1 = self.exchange, self.C.x.array, self.C_unit.x.array
        b0, b1, l0, l1, a_total = self._dot((x["b"], C0), (x["b"], C1), (x["lymph"], C0), (x["lymph"], C1),
                                             (x["a"], np.ones_like(C0)))  # fmt: skip
        return (-b0, a_total - b1), (l0, l1)

    def combine(self, C_p: float) -> None:
        self.C.x.array[:] += C_p * self.C_unit.x.array
        self.C_p.value = C_p
        self._eliminate()

    def solve_with(self, C_p: float) -> None:
        self.C_p.value = C_p
        nodal_rhs = self._old_rhs() + self.scale * C_p * self.exchange["a"][: self.n_owned]
        self.system.solve(rhs=2, out=self.C, nodal=nodal_rhs)
        self._eliminate()

    # ------------------------------------------------------------------------------------------ state
    def fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.C.x.array, self.C_c.x.array, self.A.x.array

    def field_function(self, i: int) -> fem.Function:
        return (self.C, self.C_c, self.A)[i]

    def set_fields(self, values: Sequence[np.ndarray]) -> None:
        for f, v in zip((self.C, self.C_c, self.A), values, strict=True):
            f.x.array[:] = v
        self.advance()

    def advance(self) -> None:
        for new, old in ((self.C, self.C_old), (self.C_c, self.C_c_old), (self.A, self.A_old)):
            old.x.array[:] = new.x.array

    def rollback(self) -> None:
        for new, old in ((self.C, self.C_old), (self.C_c, self.C_c_old), (self.A, self.A_old)):
            new.x.array[:] = old.x.array

    def amount(self, name: str) -> float:
        w, x = self.weights, self.exchange
        C, Cc, A = self.fields()
        if name == "vascular_in":
            a_total, b = self._dot((x["a"], np.ones_like(C)), (x["b"], C))
            return float(self.C_p.value) * a_total - b
        pairs = {
            "free": [(w["phi"], C)],
            "albumin_bound": [(w["storage"] - w["phi"], C)],
            "cellular": [(w["phi_c"], Cc)],
            "bound": [(w["one"], A)],
            "lymph_out": [(x["lymph"], C)],
            "hydrolysis": [(self.k_h * w["phi"], C), (self.k_h * w["phi_c"], Cc)],
            "boundary_out": [(x["outflow"], C)],
        }[name]
        return float(sum(self._dot(*pairs)))


__all__ = ["LumpedTransport"]
