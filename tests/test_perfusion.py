"""Perfusion: Lang et al. temperature dependence by hand, circuit flow shared without loss."""

from __future__ import annotations

import math

import pytest

from solver import meshing
from solver.case import parse_case
from solver.coupling import CoupledModel
from solver.physics.heat import lang_blood_perfusion

from .conftest import CASES, write_case

K = 273.15


@pytest.mark.parametrize(
    ("region", "celsius", "expected"),
    [
        ("muscle", 45.0, 4.0),  # 0.45 + 3.55 at the bell's peak
        ("fat", 45.0, 0.72),
        ("muscle", 37.0, 0.45 + 3.55 * math.exp(-64 / 12)),
        ("tumour", 37.0, 0.833),
        ("tumour", 42.0, 0.833 - 5**4.8 / 5438),
        ("tumour", 44.0, 0.0),  # flow has stopped (clamped)
        ("skin", 40.0, None),
    ],
)
def test_lang_correlation(region, celsius, expected):
    value = lang_blood_perfusion(region, celsius + K)
    assert value == expected if expected is None else value == pytest.approx(expected, rel=1e-12)


def _model(comm, folder, lang: bool):
    text = (CASES / "student-small" / "case.toml").read_text()
    if lang:
        text = text.replace("[numerics]", "[physics]\ntemperature_dependent_perfusion = true\n\n[numerics]")
    case = parse_case(write_case(folder, text))
    return case, CoupledModel(case, meshing.generate(case, comm))


def test_circuit_flow_is_conserved_with_tnf(comm, shared_tmp):
    case, model = _model(comm, shared_tmp / "a", lang=False)
    t = 20 * 60.0  # TNF has lowered tumour flow by now
    omega = model.perfusion(t, tumour_flow_factor=0.56)
    assert sum(omega[r] * model.volumes[r] for r in omega) == pytest.approx(case.protocol.flow, rel=1e-12)
    share = omega["tumour"] / omega["muscle"]
    base = model.omega_base["tumour"] / model.omega_base["muscle"]
    assert share == pytest.approx(0.56 * base, rel=1e-12)


def test_lang_weights_follow_region_temperature(comm, shared_tmp):
    case, model = _model(comm, shared_tmp / "b", lang=True)
    model.T.x.array[:] = 42.0 + K
    after = case.protocol.end_time + 1.0  # no circuit flow: the weights are the perfusion itself
    omega = model.perfusion(after)
    rho_b = 1060.0
    assert omega["muscle"] == pytest.approx(lang_blood_perfusion("muscle", 42.0 + K) / rho_b, rel=1e-9)
    assert omega["tumour"] == pytest.approx(lang_blood_perfusion("tumour", 42.0 + K) / rho_b, rel=1e-9)
