"""ILI metabolic state (MODEL.md section 7) against hand-computed values of its closed form."""

from __future__ import annotations

import pytest

from solver.case import Metabolism
from solver.physics.metabolism import MetabolicState

ML, MIN = 1e-6, 60.0


def state(potentiation=1.0):
    params = Metabolism(
        oxygen_consumption="2.8 mL/(min kg)",
        initial_oxygen="60 mL",
        buffer_capacity="30 mmol/L",
        lactate_per_oxygen=0.33,
        q10=2.0,
        potentiation=potentiation,
    )
    return MetabolicState(params, tissue_mass=9.0, volume=0.4e-3)  # 9 kg leg tissue, 0.4 L circulating


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
