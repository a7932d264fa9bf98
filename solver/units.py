"""Physical quantities: parse clinical unit strings ("35 mmHg", "10 mg/L") into SI floats.

Everything inside the engine is SI (m, kg, s, K, Pa, mol). Case files carry strings with units; this
module is the only place where units are converted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pint

ureg = pint.UnitRegistry()
ureg.formatter.default_format = "~"


MAX_CHARS = 200  # a unit string longer than this is not a value
# Integer literals are read as floats, so that "2**10000 s" or "10**10**10 s" overflows at once instead of building
# a huge integer; an exponent right after "e"/"E" (1e-14) is part of a float literal and left alone.
_INTEGER = re.compile(r"(?<![\w.])(?<![eE][+-])(\d+)(?![\w.])")


@dataclass(frozen=True)
class Dimension:
    """A physical dimension that a case value must have, and the SI unit it is stored in.

    ``limits``: the sane range of any value of this dimension, as two unit strings ("0 degC", "60 degC"),
    inclusive; values outside it are errors. ``absolute``: a temperature on an absolute scale (a temperature
    difference such as "36 delta_degC" is an error).
    """

    name: str  # readable name used in error messages ("pressure")
    si_unit: str  # the SI unit the value is converted to ("Pa")
    limits: tuple[str, str] | None = None
    absolute: bool = False

    @property
    def dimensionality(self) -> pint.util.UnitsContainer:
        return ureg.Quantity(1.0, self.si_unit).dimensionality

    def parse(self, value: object) -> pint.Quantity:
        """``value`` (a string such as "35 mmHg") as a finite quantity of this dimension (ValueError if not)."""
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(
                f'expected a {self.name} with units as a string, e.g. "1 {self.si_unit}"'
                f" (bare numbers are not accepted)"
            )
        if len(value) > MAX_CHARS:
            raise ValueError(f"expected a {self.name} with units, got a string of {len(value)} characters")
        try:
            quantity = ureg.Quantity(_INTEGER.sub(r"\1.0", value.strip()))
        except Exception as err:  # pint raises many exception types for bad strings (OverflowError too)
            raise ValueError(f"cannot parse {value!r} as a {self.name}: {_reason(err)}") from None
        if not isinstance(quantity, pint.Quantity) or quantity.dimensionality != self.dimensionality:
            got = getattr(quantity, "dimensionality", "dimensionless")
            raise ValueError(f"expected a {self.name} (convertible to {self.si_unit}), got units of {got}")
        if self.absolute and any(name.startswith("delta_") for name, _ in quantity.unit_items()):
            raise ValueError(f"expected an absolute {self.name} (degC, degF or K), not a temperature difference")
        magnitude = quantity.magnitude
        if not isinstance(magnitude, (int, float)) or not math.isfinite(magnitude):
            raise ValueError(f"expected a finite {self.name}")
        return quantity

    def to_si(self, value: object) -> float:
        """Convert ``value`` (a string such as "35 mmHg") to a float in ``si_unit``.

        Raises ``ValueError`` with a one-line message when the value is a bare number, unparsable, not finite,
        of the wrong dimension or outside the dimension's sane ``limits``.
        """
        quantity = self.parse(value)
        try:
            si = float(quantity.to(self.si_unit).magnitude)
        except Exception as err:  # overflow in the conversion
            raise ValueError(f"cannot convert {value!r} to {self.si_unit}: {_reason(err)}") from None
        if not math.isfinite(si):
            raise ValueError(f"expected a finite {self.name} (it overflows in {self.si_unit})")
        if self.limits is not None:
            low, high = (float(ureg.Quantity(x).to(self.si_unit).magnitude) for x in self.limits)
            if not low <= si <= high:
                raise ValueError(f"expected a {self.name} between {self.limits[0]} and {self.limits[1]}")
        return si


def _reason(err: Exception) -> str:
    """An exception as one short line."""
    if isinstance(err, OverflowError):
        return "the number overflows"
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


LENGTH = Dimension("length", "m", ("0 m", "10 m"))
AREA = Dimension("area", "m^2")
VOLUME = Dimension("volume", "m^3", ("0 L", "1000 L"))
TIME = Dimension("time", "s", ("0 s", "30 day"))
MASS = Dimension("mass", "kg", ("0 g", "1000 g"))
TEMPERATURE = Dimension("temperature", "K", ("0 degC", "60 degC"), absolute=True)
PRESSURE = Dimension("pressure", "Pa", ("-1000 mmHg", "1000 mmHg"))
CONCENTRATION = Dimension("mass concentration", "kg/m^3", ("0 mg/L", "1e5 mg/L"))
FLOW = Dimension("volume flow", "m^3/s", ("0 L/min", "100 L/min"))
RATE = Dimension("rate", "1/s", ("0 1/s", "1000 1/s"))
HEATING_RATE = Dimension("rate of temperature change", "K/s", ("0 K/s", "1 K/s"))
HYDRAULIC_CONDUCTIVITY = Dimension("hydraulic conductivity", "m^2/(Pa*s)")
FILTRATION_COEFFICIENT = Dimension("filtration coefficient", "m/(Pa*s)")
LYMPH_COEFFICIENT = Dimension("lymphatic coefficient", "1/(Pa*s)")
SURFACE_DENSITY = Dimension("vessel surface per volume", "1/m")
DIFFUSIVITY = Dimension("diffusivity", "m^2/s")
PERMEABILITY = Dimension("vascular permeability", "m/s")
DENSITY = Dimension("density", "kg/m^3")
THERMAL_CONDUCTIVITY = Dimension("thermal conductivity", "W/(m*K)")
HEAT_CAPACITY = Dimension("specific heat capacity", "J/(kg*K)")
HEAT_TRANSFER = Dimension("heat transfer coefficient", "W/(m^2*K)")
SPECIFIC_PERFUSION = Dimension("perfusion per tissue mass", "m^3/(kg*s)")
SPECIFIC_POWER = Dimension("power per tissue mass", "W/kg")
MOLAR_ENERGY = Dimension("activation energy", "J/mol")
MOLAR_MASS = Dimension("molar mass", "kg/mol")
MOLAR_CONCENTRATION = Dimension("molar concentration", "mol/m^3")
ANGLE = Dimension("angle", "rad", ("-360 deg", "360 deg"))
VOLUME_RATE = Dimension("oxygen consumption per tissue mass", "m^3/(kg*s)")
THERMAL_SENSITIVITY = Dimension("thermal enhancement coefficient", "1/K", ("0 1/K", "1 1/K"))
KILL_CONSTANT = Dimension("kill constant (per unit of drug exposure)", "m^3/(kg*s)")
