"""Unit strings to SI: conversions against exact definitions, and rejected inputs."""

import math

import pytest

from solver import units as U


@pytest.mark.parametrize(
    ("dim", "text", "si"),
    [
        (U.PRESSURE, "35 mmHg", 35 * 133.322387415),  # 1 mmHg = 133.322387415 Pa (definition)
        (U.CONCENTRATION, "10 mg/L", 0.010),  # mg/L == g/m^3
        (U.FLOW, "500 mL/min", 500e-6 / 60),
        (U.TIME, "60 min", 3600.0),
        (U.TEMPERATURE, "40 degC", 313.15),
        (U.RATE, "0.32 %/min", 0.0032 / 60),
        (U.SPECIFIC_PERFUSION, "37 mL/(min kg)", 37e-6 / 60),
        (U.HYDRAULIC_CONDUCTIVITY, "3.1e-14 m^2/(Pa s)", 3.1e-14),
        (U.ANGLE, "90 deg", math.pi / 2),
    ],
)
def test_conversion(dim, text, si):
    assert dim.to_si(text) == pytest.approx(si, rel=1e-12)


@pytest.mark.parametrize(
    ("dim", "value", "fragment"),
    [
        (U.PRESSURE, 35, "bare numbers are not accepted"),
        (U.PRESSURE, "35", "expected a pressure"),
        (U.PRESSURE, "35 mL", "expected a pressure"),
        (U.TIME, "ten minutes", "cannot parse"),
        (U.TEMPERATURE, True, "bare numbers"),
    ],
)
def test_rejected(dim, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        dim.to_si(value)
