"""The time step (issue 11): the scalar transport route solves the same discrete system as the mixed one; the
model's state is complete (rollback, checkpoint and resume share it); the protocol schedule on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI

from solver import meshing
from solver.case import parse_case
from solver.coupling import CoupledModel
from solver.physics.transport import Exchange, Kinetics
from solver.physics.transport_lumped import LumpedTransport
from solver.physics.transport_mixed import MixedTransport
from solver.protocol import Schedule
from solver.simulation import Simulation, Stopping

from .conftest import CASES


def _norm(comm, values: np.ndarray, n: int) -> float:
    return math.sqrt(comm.allreduce(float(np.dot(values[:n], values[:n])), op=MPI.SUM))


def test_scalar_route_equals_mixed_lumped_system(comm):
    """With stabilisation off, eliminating C_c and A at the nodes is exact: three steps of the scalar route
    give the fields, the circuit rates and the balance functionals of the mixed (C, C_c, A) lumped system."""
    msh = mesh.create_unit_cube(comm, 6, 6, 6)
    x = ufl.SpatialCoordinate(msh)
    V = fem.functionspace(msh, ("Lagrange", 1))
    T = fem.Function(V)
    T.interpolate(lambda p: 310.0 + 4.0 * p[0] * p[1])  # a nodal field, as the rates are in the engine
    k_h = fem.Function(V)
    k_h.x.array[:] = 1e-3 * np.exp(0.1 * (T.x.array - 310.0))
    c = lambda v: fem.Constant(msh, v)  # noqa: E731
    velocity = fem.Constant(msh, np.array([2e-3, -1e-3, 5e-4]))
    Jv = 1e-3 * (1.0 + x[0])  # varies in space, as filtration does
    exchange = Exchange(Jv, c(4e-3), c(2e-2), sigma_d=0.1, f_u=0.8)
    kinetics = Kinetics(k_h=k_h, k_alk=c(5e-4), k_up=3e-3, kappa=2.5, D=c(1e-3))
    dt = fem.Constant(msh, 30.0)
    args = (c(0.3), c(0.6), velocity, c(2e-4), exchange, kinetics, dt)
    scalar = LumpedTransport(msh, *args, stabilisation=False, prefix="eq_scalar_", space=V)
    mixed = MixedTransport(msh, 1, *args, stabilisation=False, prefix="eq_mixed_", lumped=True)
    n = V.dofmap.index_map.size_local
    for C_p in (0.05, 0.02, 0.0):
        for tr in (scalar, mixed):
            tr.prepare()
            tr.solve_split()
        rates_s, rates_m = scalar.rates(), mixed.rates()
        for rs, rm in zip(rates_s, rates_m, strict=True):
            assert rs == pytest.approx(rm, rel=1e-8)
        for tr in (scalar, mixed):
            tr.combine(C_p)
        for fs, fm in zip(scalar.fields(), mixed.fields(), strict=True):
            scale = _norm(comm, fm, n)
            assert scale > 0
            assert _norm(comm, fs - fm, n) <= 1e-8 * scale
        for name in ("free", "cellular", "bound", "vascular_in", "lymph_out", "hydrolysis", "boundary_out"):
            assert scalar.amount(name) == pytest.approx(mixed.amount(name), rel=1e-8, abs=1e-30), name
        for tr in (scalar, mixed):
            tr.advance()


def _assert_same_state(a, b, rel):
    assert _same_scalars(a.scalars, b.scalars, rel)
    assert set(a.nodal) == set(b.nodal)
    for name in a.nodal:
        np.testing.assert_allclose(a.nodal[name], b.nodal[name], rtol=rel, atol=0, err_msg=name)


def _same_scalars(a, b, rel) -> bool:
    if isinstance(a, dict):
        assert set(a) == set(b)
        return all(_same_scalars(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple):
        return all(_same_scalars(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        assert b == pytest.approx(a, rel=rel, abs=1e-300)
        return True
    assert a == b
    return True


@pytest.fixture(scope="module")
def ili_model():
    """The ILI leg case (two agents, metabolism, blanket) run to 20 min: every kind of state is non-trivial."""
    case = parse_case(CASES / "ili-melanoma-leg")
    model = CoupledModel(case, meshing.generate(case, MPI.COMM_WORLD))
    sim = Simulation(model, stopping=Stopping())
    sim.end = 20 * 60.0
    sim.run()
    return model, sim


def test_rollback_restores_every_state(ili_model):
    """State in one place: a step advanced and then undone by restore() leaves the state of before, and the
    step advanced again ends exactly where the first attempt did (nothing a step changes escapes the state)."""
    model, sim = ili_model
    t, dt = sim.t, 60.0
    before = model.state()
    model.advance(t, dt)
    first = model.state()
    model.restore(before)
    _assert_same_state(model.state(), before, rel=0.0)
    model.advance(t, dt)
    _assert_same_state(model.state(), first, rel=1e-9)
    model.restore(before)


def test_checkpoint_resume_restores_the_same_state(ili_model, shared_tmp):
    """The checkpoint holds model.state(): a new model resumed from it has the state of the one that wrote it."""
    model, sim = ili_model
    sim.folder = shared_tmp
    sim.write_checkpoint(0.0)
    fresh = CoupledModel(model.case, model.tm)
    resumed = Simulation(fresh, restart=shared_tmp / "checkpoint")
    resumed._resume(resumed.restart_state)
    _assert_same_state(fresh.state(), model.state(), rel=0.0)
    assert resumed.t == sim.t and resumed.steps == sim.steps and resumed.doses_done == sim.doses_done


@pytest.mark.serial
def test_schedule_of_the_default_case():
    """The protocol alone (no dolfinx): the default leg case's inflow temperature, flows, leak, release, TNF and
    milestones (seed 003: 60 min in all from TNF, melphalan at 10 min; washout; release at 70 min)."""
    case = parse_case(CASES / "ilp-tm-sarcoma-leg")
    s = Schedule.of(case)
    p = case.protocol
    minute = 60.0
    assert s.inflow_temperature(35 * minute) == pytest.approx(273.15 + 39.5)
    assert s.inflow_temperature(65 * minute) == pytest.approx(273.15 + 37.0)  # the schedule's drop at 60.1 min
    assert s.flow(10 * minute) == p.flow and s.washout_flow(10 * minute) == 0.0
    assert s.washout_flow(65 * minute) == p.washout_flow and s.flow(65 * minute) == p.washout_flow
    assert s.release_time == pytest.approx(70 * minute)  # washout ends: tourniquet release
    assert s.isolated(70 * minute) and not s.isolated(70.5 * minute)
    assert s.flow(80 * minute) == 0.0 and s.inflow_temperature(80 * minute) == pytest.approx(310.15)
    assert s.leak_flow(1e-3, 65 * minute) == pytest.approx(p.leak_rate * 1e-3) and s.leak_flow(1e-3, 80 * minute) == 0
    assert s.tnf_progress(p.tnf.time + p.tnf.tau) == pytest.approx(1 - math.exp(-1))
    assert [i for i, _ in s.doses_due(9.99 * minute, set())] == []
    assert [i for i, _ in s.doses_due(10 * minute, set())] == [0]
    assert s.doses_due(10 * minute, {0}) == []
    milestones = s.milestones()
    for event in (10 * minute, 60 * minute, 60.1 * minute, 70 * minute, 100 * minute):  # dose, washout, drop,
        assert any(abs(m - event) < 1e-9 for m in milestones), event  # release, end
    assert s.step_to(59.5 * minute, minute) == pytest.approx(0.5 * minute)  # lands on the washout
    assert s.step_to(60 * minute, minute) == pytest.approx(0.1 * minute)  # and on the inflow drop
    # perfusate hydrolysis at 39.5 C is faster than at 37 C by the Arrhenius factor of the agent's Ea
    melphalan = case.agents["melphalan"]
    k37 = math.log(2) / melphalan.half_life
    k = s.perfusate_hydrolysis(melphalan.half_life, melphalan.Ea, 35 * minute)
    assert k / k37 == pytest.approx(math.exp(melphalan.Ea / 8.314462618 * (1 / 310.15 - 1 / 312.65)), rel=1e-9)


def test_petsc_options_of_a_case_do_not_leak_into_the_next_model(comm):
    """A case's PETSc options configure its own solvers and leave PETSc's database: a second model built in
    the same process with the same prefixes gets the defaults again (also for an option the defaults do not
    name, which a later model would otherwise inherit)."""
    from petsc4py import PETSc

    case = parse_case(CASES / "student-small")
    tuned = case.model_copy(
        update={
            "numerics": case.numerics.model_copy(
                update={"petsc": {"heat": {"ksp_type": "gmres", "ksp_initial_guess_nonzero": True}}}
            )
        }
    )
    tm = meshing.generate(case, comm)
    first = CoupledModel(tuned, tm)
    first.start()
    first.advance(0.0, 60.0)
    assert first.heat.system.ksp.getType() == "gmres" and first.heat.system.ksp.getInitialGuessNonzero()
    first.destroy()
    assert not any(name.startswith("heat_") for name in PETSc.Options().getAll())
    second = CoupledModel(case, tm)
    second.start()
    second.advance(0.0, 60.0)
    assert second.heat.system.ksp.getType() == "cg" and not second.heat.system.ksp.getInitialGuessNonzero()
    second.destroy()
