"""Analytic benchmarks of MODEL.md: Baxter-Jain sphere, steady penetration, Pennes slab, the circuit alone,
Starling signs of seed 000, CEM43 by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI

from solver import interface, meshing
from solver.case import parse_case
from solver.coupling import CoupledModel
from solver.physics.circuit import Circuit
from solver.physics.heat import Heat
from solver.physics.pressure import Pressure
from solver.physics.transport import Exchange, Kinetics, Transport
from solver.simulation import cem43_increment

from .conftest import CASES, write_case

MMHG = 133.322387415


def _l2(comm, e, dx=ufl.dx):
    return math.sqrt(comm.allreduce(fem.assemble_scalar(fem.form(e * e * dx)), op=MPI.SUM))


def _total(comm, e):
    return comm.allreduce(fem.assemble_scalar(fem.form(e)), op=MPI.SUM)


def _baxter_jain(case, comm):
    """(pressure model, pe, alpha, u(R), L2 relative error of p) of a Baxter-Jain sphere case."""
    model = CoupledModel(case, meshing.generate(case, comm))
    p = model.pressure.solve()
    t = case.tissue["tumour"]
    R = case.mesh.radius
    pe = t.p_v - t.sigma_p * (t.pi_v - t.pi_i)
    alpha = R * math.sqrt(t.Lp * t.S_V / t.K)
    x = ufl.SpatialCoordinate(model.tm.mesh)
    rho = ufl.sqrt(ufl.dot(x, x)) / R + 1e-12
    exact = pe * (1 - ufl.sinh(alpha * rho) / (rho * math.sinh(alpha)))
    u_exact = t.K * pe / R * (alpha / math.tanh(alpha) - 1)
    return model, alpha, u_exact, _l2(comm, p - exact) / _l2(comm, exact)


@pytest.mark.slow
def test_baxter_jain_sphere_default_k(comm):
    """MODEL.md section 2 at the default tumour K (alpha = R/0.27 mm) on the case's rim-graded mesh: pressure
    profile within 1 % (L2), rim velocity by the surface flux integrals within 5 % (direct -K grad p . n) and
    1 % (balance flux, solver/interface.py), surface area within 0.5 %."""
    case = parse_case(CASES / "benchmark-baxter-jain")
    assert case.tissue["tumour"].K == pytest.approx(3.1e-14, rel=0.01)  # the default, not a raised one
    model, alpha, u_exact, rel = _baxter_jain(case, comm)
    assert case.mesh.radius / alpha == pytest.approx(0.27e-3, rel=0.02)
    assert rel < 0.01, rel
    surface = interface.of_model(model)()
    R = case.mesh.radius
    assert surface.area == pytest.approx(4 * math.pi * R**2, rel=0.005)
    assert surface.velocity == pytest.approx(u_exact, rel=0.05)
    assert surface.balance_velocity == pytest.approx(u_exact, rel=0.01)
    out = interface.outcomes(surface)
    assert out["tumour_rim_outflow_um_per_s"] == pytest.approx(u_exact * 1e6, rel=0.01)
    flow = u_exact * 4 * math.pi * R**2 * 1e6 * 60  # mL/min
    assert out["tumour_net_filtration_mL_per_min"] == pytest.approx(flow, rel=0.01)


def test_baxter_jain_uniform_mesh_misses_the_rim(comm, shared_tmp):
    """The same sphere on a uniform mesh of the bulk size: the rim layer is not resolved and the flux is far off
    (the graded mesh is what makes the benchmark pass)."""
    text = (CASES / "benchmark-baxter-jain" / "case.toml").read_text()
    for key in ("rim_size", "rim_layer"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(key))
    case = parse_case(write_case(shared_tmp / "uniform", text))
    model, _, u_exact, rel = _baxter_jain(case, comm)
    surface = interface.of_model(model)()
    assert rel > 0.03
    assert abs(surface.velocity / u_exact - 1) > 0.2


def test_baxter_jain_sphere_raised_k(comm):
    """The plumbing case (K raised 100-fold, alpha = 3.7, uniform 1 mm P2 cells) against the same closed form."""
    case = parse_case(CASES / "benchmark-baxter-jain-raised-k")
    model, _, u_exact, rel = _baxter_jain(case, comm)
    assert rel < 0.02, rel
    surface = interface.of_model(model)()
    assert surface.velocity == pytest.approx(u_exact, rel=0.02)
    assert surface.balance_velocity == pytest.approx(u_exact, rel=0.02)


def _slab(comm, length, n_x):
    return mesh.create_box(
        comm,
        [np.zeros(3), np.array([length, length / n_x * 2, length / n_x * 2])],
        [n_x, 2, 2],
        mesh.CellType.tetrahedron,
    )


def _x0_dofs(V):
    return fem.locate_dofs_geometrical(V, lambda x: np.isclose(x[0], 0.0))


def test_steady_penetration_length(comm):
    """Diffusion and first-order loss only: C = Cs exp(-x/lambda), lambda = sqrt(D/k) (seed 000)."""
    D, k = 2.4e-10, math.log(2) / (66 * 60)
    lam = math.sqrt(D / k)
    msh = _slab(comm, 10 * lam, 200)
    zero = fem.Constant(msh, 0.0)
    exchange = Exchange(Jv=zero, PS=zero, omega=zero, sigma_d=0.0, f_u=1.0)
    kinetics = Kinetics(k_h=fem.Constant(msh, k), k_alk=zero, k_up=0.0, kappa=1.0, D=fem.Constant(msh, D))
    Cs = 0.01

    def bcs(space):
        g = fem.Function(space.V)
        g.x.array[:] = Cs
        return [space.dirichlet(g, marker=lambda x: np.isclose(x[0], 0.0))]

    dt = fem.Constant(msh, 1e7)  # one long step: 1/dt = 1e-7 1/s against k = 1.75e-4 1/s, steady to 0.06 %
    velocity = fem.Constant(msh, np.zeros(3))
    tr = Transport(
        msh,
        1,
        fem.Constant(msh, 1.0),
        fem.Constant(msh, 0.5),
        velocity,
        zero,
        exchange,
        kinetics,
        dt,
        stabilisation=False,
        bcs_factory=bcs,
        prefix="penetration_",
    )
    tr.solve_with(0.0)
    x = ufl.SpatialCoordinate(msh)
    exact = Cs * ufl.exp(-x[0] / lam)
    C = tr.field_function(0)
    assert _l2(comm, C - exact) / _l2(comm, exact) < 0.01
    # penetration length from the total amount: INT C dx / (Cs * cross-section) = lambda (1 - e^-10)
    section = (10 * lam / 100) ** 2
    assert _total(comm, C * ufl.dx) / (Cs * section) == pytest.approx(lam, rel=0.01)


def test_pennes_slab(comm):
    """Steady 1D Pennes with T(0) = T0, insulated far end: T = Ta + (T0 - Ta) cosh((L-x)/d)/cosh(L/d)."""
    k, perf = 0.49, 1060 * 3617 * 6.7e-4  # W/(m K), rho_b c_b omega (W/(m^3 K))
    d = math.sqrt(k / perf)
    L, T0, Ta = 4 * d, 307.15, 312.65
    msh = _slab(comm, L, 120)
    V = fem.functionspace(msh, ("Lagrange", 1))
    bc = fem.dirichletbc(T0, _x0_dofs(V), V)
    c = lambda v: fem.Constant(msh, v)  # noqa: E731
    heat = Heat(
        V, c(1.0), c(k), c(perf), c(Ta), c(0.0), c(1.0), T_initial=310.0, bcs=[bc], steady=True, prefix="pennes_slab_"
    )
    T = heat.step()
    x = ufl.SpatialCoordinate(msh)
    exact = Ta + (T0 - Ta) * ufl.cosh((L - x[0]) / d) / math.cosh(L / d)
    assert _l2(comm, T - exact) / _l2(comm, exact - Ta) < 0.01


def test_circuit_alone_against_closed_form():
    """Perfusate and systemic compartments alone: a linear 2x2 ODE solved by eigen-decomposition."""
    V_p, V_s, CL, k_h, Q = 1.2e-3, 0.04, 27.8e-3 / 3600, math.log(2) / 3960, 0.0032 / 60 * 1.2e-3
    M = np.array([[-(k_h + Q / V_p), Q / V_p], [Q / V_s, -(Q + CL) / V_s]])
    y0 = np.array([0.08, 0.0])
    T_end = 3600.0
    w, P = np.linalg.eig(M)
    exact = (P @ np.diag(np.exp(w * T_end)) @ np.linalg.solve(P, y0)).real
    errors = []
    for dt in (60.0, 30.0, 15.0):
        c = Circuit(V_p=V_p, V_s=V_s, clearance=CL)
        c.dose(0.08 * V_p)
        for _ in range(int(T_end / dt)):
            C_p, C_s = c.solve(dt, k_h, Q, 0.0)
            c.accept(C_p, C_s, dt, k_h, Q, 0.0)
        errors.append(abs(c.C_p - exact[0]) / exact[0])
        total = sum(c.amounts().values()) + c.totals["perfusate_hydrolysed"] + c.totals["cleared"]
        assert total == pytest.approx(c.totals["dosed"], rel=1e-12)
    assert errors[-1] < 2e-3
    assert math.log2(errors[0] / errors[1]) == pytest.approx(1.0, abs=0.1)  # backward Euler, first order


@pytest.mark.parametrize(
    ("p_v_mmhg", "sign"),
    [(25.0, -1), (35.0, +1)],
    ids=["hypertensive tumour: absorption", "ILP capillary pressure: filtration"],
)
def test_starling_signs_of_seed_000(p_v_mmhg, sign, comm):
    """Seed 000: p_c 25 mmHg against p_i 20 mmHg, opposed by the oncotic gradient (pi_c 20, pi_i 10,
    sigma 0.91), gives net absorption; ILP's 35 mmHg gives net filtration. The engine's own Jv must agree,
    and negative Jv must lower the drug uptake coefficient (the convective barrier)."""
    msh = mesh.create_unit_cube(comm, 2, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", 1))
    c = lambda v: fem.Constant(msh, v)  # noqa: E731
    sigma, pi_v, pi_i = 0.91, 20 * MMHG, 10 * MMHG
    pe = c(p_v_mmhg * MMHG - sigma * (pi_v - pi_i))
    pressure = Pressure(V, c(1e-14), c(2.7e-12 * 7e3), pe, c(0.0), c(0.0), prefix=f"starling{sign}_")
    pressure.p.x.array[:] = 20 * MMHG  # the tumour interstitial pressure of the example
    Jv = _total(comm, pressure.filtration() * ufl.dx)
    assert np.sign(Jv) == sign
    a_with, _ = Exchange(pressure.filtration(), c(1.7e-4), c(8.5e-4), 0.0, 1.0).coefficients()
    a_none, _ = Exchange(c(0.0), c(1.7e-4), c(8.5e-4), 0.0, 1.0).coefficients()
    uptake_change = _total(comm, (a_with - a_none) * ufl.dx)
    assert np.sign(uptake_change) == sign


@pytest.mark.parametrize(
    ("minutes", "celsius", "expected"),
    [(10.0, 44.0, 20.0), (30.0, 41.0, 1.875), (60.0, 43.0, 60.0), (60.0, 37.0, 60 * 0.25**6)],
)
def test_cem43_by_hand(minutes, celsius, expected):
    """Sapareto & Dewey: CEM43 = t R^(43 - T), R = 0.5 at or above 43 C, 0.25 below."""
    T = np.array([celsius + 273.15])
    total = sum(cem43_increment(T, 60.0)[0] for _ in range(int(minutes)))
    assert total == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_interface_flux_of_a_tumour_inside_muscle(comm, shared_tmp):
    """A tumour sphere (R) inside a muscle shell (R_o, no flux outside), default parameters of both: the
    fluid crossing the interior interface against the two-region closed form. Tumour: p = pe_t + A sinh(k_t r)/r;
    muscle (filtration and lymph): p = pe_m + B sinh(k_m r)/r + C cosh(k_m r)/r; p and K dp/dr continuous at R,
    dp/dr = 0 at R_o. Outflow = -K_t p'(R) 4 pi R^2. Checks the tumour-surface integrals on facets between two
    regions (the limb's case), at 1 and 2 ranks."""
    R, R_o = 3e-3, 6e-3
    text = f"""title = "tumour in muscle"
[mesh]
generator = "sphere"
radius = "{R * 1e3} mm"
outer_radius = "{R_o * 1e3} mm"
cell_size = "0.8 mm"
rim_size = "0.12 mm"
rim_layer = "0.3 mm"
[physics]
heat = "off"
drug = false
[numerics]
dt = "1 min"
degree = 2
"""
    case = parse_case(write_case(shared_tmp / "two", text))
    model = CoupledModel(case, meshing.generate(case, comm))
    model.pressure.solve()
    surface = interface.of_model(model)()
    t, m = case.tissue["tumour"], case.tissue["muscle"]
    pe_t = t.p_v - t.sigma_p * (t.pi_v - t.pi_i)
    a_t, a_m = t.Lp * t.S_V + t.LL, m.Lp * m.S_V + m.LL
    pe_m = (m.Lp * m.S_V * (m.p_v - m.sigma_p * (m.pi_v - m.pi_i)) + m.LL * m.p_L) / a_m
    pe_t = (t.Lp * t.S_V * pe_t + t.LL * t.p_L) / a_t
    k_t, k_m = math.sqrt(a_t / t.K), math.sqrt(a_m / m.K)

    def basis(f, k, r):  # value and derivative of f(k r)/r
        g = {"sinh": (math.sinh, math.cosh), "cosh": (math.cosh, math.sinh)}[f]
        return g[0](k * r) / r, (k * g[1](k * r) * r - g[0](k * r)) / r**2

    s_t, ds_t = basis("sinh", k_t, R)
    s_m, ds_m = basis("sinh", k_m, R)
    c_m, dc_m = basis("cosh", k_m, R)
    _, ds_o = basis("sinh", k_m, R_o)
    _, dc_o = basis("cosh", k_m, R_o)
    M = np.array([[s_t, -s_m, -c_m], [t.K * ds_t, -m.K * ds_m, -m.K * dc_m], [0.0, ds_o, dc_o]])
    A, _, _ = np.linalg.solve(M, np.array([pe_m - pe_t, 0.0, 0.0]))
    outflow = -t.K * A * ds_t * 4 * math.pi * R**2
    assert abs(outflow) > 0
    assert surface.area == pytest.approx(4 * math.pi * R**2, rel=0.005)
    assert surface.source == pytest.approx(outflow, rel=0.01)  # the balance flux the summary reports
    assert surface.outflow == pytest.approx(outflow, rel=0.05)  # the direct surface integral, tumour side
