"""Method of manufactured solutions: L2 convergence rates of pressure, heat and transport, P1 and P2.

Each equation's own module builds the forms; the test adds the manufactured source. Time-dependent
problems use solutions linear in time, for which backward Euler is exact: one step from the exact
initial state leaves only the spatial error, whose L2 rate must be degree + 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI

from solver.physics.heat import Heat
from solver.physics.pressure import Pressure
from solver.physics.transport import Exchange, Kinetics, Transport

SIZES = {1: (4, 8, 16), 2: (2, 4, 8)}


def _cube(comm, n):
    return mesh.create_unit_cube(comm, n, n, n)


def _l2(comm, e):
    return math.sqrt(comm.allreduce(fem.assemble_scalar(fem.form(e * e * ufl.dx)), op=MPI.SUM))


def _boundary_bc(V, expr):
    msh = V.mesh
    msh.topology.create_connectivity(2, 3)
    facets = mesh.exterior_facet_indices(msh.topology)
    g = fem.Function(V)
    g.interpolate(fem.Expression(expr, V.element.interpolation_points))
    return fem.dirichletbc(g, fem.locate_dofs_topological(V, 2, facets))


def _rates(errors):
    return [math.log(errors[i] / errors[i + 1], 2) for i in range(len(errors) - 1)]


def pressure_error(comm, n, degree):
    msh = _cube(comm, n)
    x = ufl.SpatialCoordinate(msh)
    p_ex = 1000 * (1 + ufl.sin(math.pi * x[0]) * ufl.cos(math.pi * x[1]) * x[2] ** 2)
    K, LpSV, pe = fem.Constant(msh, 2.0), fem.Constant(msh, 3.0), fem.Constant(msh, 500.0)
    LL, pL = fem.Constant(msh, 0.5), fem.Constant(msh, 10.0)
    source = -ufl.div(K * ufl.grad(p_ex)) + (LpSV + LL) * p_ex - LpSV * pe - LL * pL
    V = fem.functionspace(msh, ("Lagrange", degree))
    problem = Pressure(V, K, LpSV, pe, LL, pL, bcs=[_boundary_bc(V, p_ex)], source=source, prefix=f"mp{n}{degree}_")
    p = problem.solve()
    return _l2(comm, p - p_ex) / _l2(comm, p_ex)


def heat_error(comm, n, degree):
    msh = _cube(comm, n)
    x = ufl.SpatialCoordinate(msh)
    g = 310 + 3 * ufl.sin(math.pi * x[0]) * ufl.sin(math.pi * x[1]) + x[2] ** 3
    dt_value = 0.5
    rho_c, k, perf = fem.Constant(msh, 4.0), fem.Constant(msh, 0.5), fem.Constant(msh, 2.0)
    T_a, Q_m, dt = fem.Constant(msh, 312.0), fem.Constant(msh, 7.0), fem.Constant(msh, dt_value)
    T1 = g * (1 + dt_value)  # T(x, t) = g(x) (1 + t), at t = dt
    source = rho_c * g - ufl.div(k * ufl.grad(T1)) - perf * (T_a - T1) - Q_m
    V = fem.functionspace(msh, ("Lagrange", degree))
    problem = Heat(
        V,
        rho_c,
        k,
        perf,
        T_a,
        Q_m,
        dt,
        T_initial=0.0,
        bcs=[_boundary_bc(V, T1)],
        source=source,
        prefix=f"mh{n}{degree}_",
    )
    problem.T.interpolate(fem.Expression(g, V.element.interpolation_points))
    T = problem.step()
    return _l2(comm, T - T1) / _l2(comm, T1)


def transport_errors(comm, n, degree, lumped=False):
    msh = _cube(comm, n)
    x = ufl.SpatialCoordinate(msh)
    g = [
        1 + ufl.sin(math.pi * x[0]) * ufl.cos(math.pi * x[1]) * x[2],
        0.5 + x[0] ** 2 * ufl.cos(math.pi * x[2]),
        0.2 + x[1] * x[2] ** 2,
    ]
    dt_value, C_p = 0.25, 1.7
    ex = [gi * (1 + dt_value) for gi in g]
    phi, phi_c = fem.Constant(msh, 0.3), fem.Constant(msh, 0.6)
    u = fem.Constant(msh, np.array([0.3, -0.2, 0.1]))
    Jv, PS, omega = fem.Constant(msh, 0.4), fem.Constant(msh, 0.8), fem.Constant(msh, 1.5)
    lymph = fem.Constant(msh, 0.2)
    exchange = Exchange(Jv, PS, omega, sigma_d=0.1, f_u=0.8)
    kin = Kinetics(
        k_h=fem.Constant(msh, 0.3), k_alk=fem.Constant(msh, 0.4), k_up=0.9, kappa=2.0, D=fem.Constant(msh, 0.05)
    )
    B = fem.Constant(msh, 0.7)  # interstitial albumin binding: stored, convected and drained with the free drug
    a_ex, b_ex = exchange.coefficients()
    C, Cc, A = ex
    uptake = kin.k_up * (C - Cc / kin.kappa)
    sources = [
        phi * (1 + B) * g[0]
        + ufl.div(u * (1 + B) * C)
        - ufl.div(kin.D * ufl.grad(C))
        - (a_ex * C_p - b_ex * C)
        + lymph * (1 + B) * C
        + phi * kin.k_h * C
        + uptake,
        phi_c * g[1] - uptake + phi_c * (kin.k_h + kin.k_alk) * Cc,
        g[2] - phi_c * kin.k_alk * Cc,
    ]

    def bcs(space):
        gC = fem.Function(space.V)
        gC.interpolate(fem.Expression(C, space.V.element.interpolation_points))
        msh.topology.create_connectivity(2, 3)
        return [space.dirichlet(gC, facets=mesh.exterior_facet_indices(msh.topology))]

    dt = fem.Constant(msh, dt_value)
    problem = Transport(
        msh,
        degree,
        phi,
        phi_c,
        u,
        lymph,
        exchange,
        kin,
        dt,
        stabilisation=False,
        bcs_factory=bcs,
        sources=sources,
        prefix=f"mt{n}{degree}{int(lumped)}_",
        lumped=lumped,
        binding=B,
    )
    initial = []
    for gi in g:
        f = fem.Function(problem.V)
        f.interpolate(fem.Expression(gi, problem.V.element.interpolation_points))
        initial.append(f.x.array.copy())
    problem.set_fields(tuple(initial))
    problem.prepare()
    problem.solve_with(C_p)
    return [_l2(comm, problem.field_function(i) - ex[i]) / _l2(comm, ex[i]) for i in range(3)]


@pytest.mark.parametrize("degree", [1, 2])
def test_pressure_rate(degree, comm):
    rates = _rates([pressure_error(comm, n, degree) for n in SIZES[degree]])
    assert rates[-1] == pytest.approx(degree + 1, abs=0.2), rates


@pytest.mark.parametrize("degree", [1, 2])
def test_heat_rate(degree, comm):
    rates = _rates([heat_error(comm, n, degree) for n in SIZES[degree]])
    assert rates[-1] == pytest.approx(degree + 1, abs=0.2), rates


@pytest.mark.parametrize("degree, lumped", [(1, False), (1, True), (2, False)])
def test_transport_rate(degree, lumped, comm):
    errors = np.array([transport_errors(comm, n, degree, lumped) for n in SIZES[degree]])
    for field in range(3):
        rates = _rates(list(errors[:, field]))
        assert rates[-1] == pytest.approx(degree + 1, abs=0.25), (field, rates)
