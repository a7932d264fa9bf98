"""ILI metabolic state (MODEL.md section 7) against hand-computed values of its closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from solver.case import Metabolism
from solver.physics.metabolism import MetabolicState

ML, MIN = 1e-6, 60.0


def state(potentiation=1.0, ecw_volume=0.0, exchange="30 min"):
    params = Metabolism(
        oxygen_consumption="2.8 mL/(min kg)",
        initial_oxygen="60 mL",
        buffer_capacity="30 mmol/L",
        lactate_per_oxygen=0.33,
        q10=2.0,
        potentiation=potentiation,
        ecw_exchange_time=exchange,
    )
    # 9 kg leg tissue, 0.4 L circulating blood
    return MetabolicState(params, tissue_mass=9.0, blood_volume=0.4e-3, ecw_volume=ecw_volume)


def test_oxygen_runs_out_then_lactate_accumulates():
    """At 37 C: demand 2.8 x 9 = 25.2 mL/min; 60 mL last 2.38 min; the remaining 27.62 min of demand,
    696 mL O2 = 31.05 mmol, make 0.33 x 31.05 = 10.25 mmol lactic acid: +25.6 mmol/L in 0.4 L, pH -0.854."""
    s = state()
    s.step(2.0 * MIN, 310.15)
    assert s.lactate == 0.0 and s.oxygen == pytest.approx((60 - 50.4) * ML)
    for _ in range(28):
        s.step(1.0 * MIN, 310.15)
    deficit_mol = (25.2 * 30 - 60) * ML / 22.414e-3
    assert s.oxygen == 0.0 and s.oxygen_used == pytest.approx(60 * ML)
    assert s.lactate == pytest.approx(0.33 * deficit_mol, rel=1e-12)
    assert s.lactate_rise == pytest.approx(0.33 * deficit_mol / 0.4e-3, rel=1e-12)
    assert s.ph == pytest.approx(7.4 - 0.33 * deficit_mol / 0.4e-3 / 30.0, rel=1e-12)
    assert s.base_excess == pytest.approx(-s.lactate_rise)


def test_hyperthermia_raises_demand_by_q10():
    assert state().demand(312.15) / state().demand(310.15) == pytest.approx(2.0**0.2, rel=1e-12)


def test_potentiation_follows_the_ph_drop():
    s = state(potentiation=2.0)
    assert s.uptake_factor == 1.0  # no acidosis yet
    s.step(30 * MIN, 310.15)  # pH falls by more than 0.5: full effect
    assert s.uptake_factor == pytest.approx(2.0)


def test_extracellular_water_dilutes_the_blood_acid_as_an_independent_ode():
    """Blood (0.4 L) and ECW (1.3 L) exchanging with tau = 30 min, acid made into the blood once the O2 store is
    empty: the blood lactate at 30 min against scipy's solution of dc_b/dt = (P - V_e (c_b - c_e)/tau)/V_b,
    dc_e/dt = (c_b - c_e)/tau; the total acid is kept; far slower exchange gives the blood-only answer."""
    V_b, V_e, tau = 0.4e-3, 1.3e-3, 30 * MIN
    s = state(ecw_volume=V_e)
    dt = 5.0
    for _ in range(int(30 * MIN / dt)):
        s.step(dt, 310.15)
    demand = 2.8 * 9 * ML / MIN  # m^3 O2 per s
    t_out = 60 * ML / demand  # the store lasts this long
    rate = 0.33 * demand / 22.414e-3  # mol/s of lactic acid afterwards

    def rhs(t, y):
        c_b, c_e = y
        made = rate if t > t_out else 0.0
        return [(made - V_e * (c_b - c_e) / tau) / V_b, (c_b - c_e) / tau]

    sol = solve_ivp(rhs, (0, 30 * MIN), [0.0, 0.0], rtol=1e-10, atol=1e-12, max_step=10.0)
    c_b, c_e = sol.y[:, -1]
    assert s.lactate_rise == pytest.approx(c_b, rel=5e-3)
    assert s.lactate == pytest.approx(c_b * V_b + c_e * V_e, rel=5e-3)
    assert s.ph == pytest.approx(7.4 - c_b / 30.0, abs=2e-3)
    slow = state(ecw_volume=V_e, exchange="30 day")
    for _ in range(30):
        slow.step(1.0 * MIN, 310.15)
    blood_only = state()
    for _ in range(30):
        blood_only.step(1.0 * MIN, 310.15)
    assert slow.lactate_rise == pytest.approx(blood_only.lactate_rise, rel=2e-3)
    assert np.isfinite(s.uptake_factor)
