"""Physical quantities: parse clinical unit strings ("35 mmHg", "10 mg/L") into SI floats.

Everything inside the engine is SI (m, kg, s, K, Pa, mol). Case files carry strings with units; this
module is the only place where units are converted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pint

ureg = pint.UnitRegistry()
ureg.formatter.default_format = "~"


@dataclass(frozen=True)
class Dimension:
    """A physical dimension that a case value must have, and the SI unit it is stored in."""

    name: str  # readable name used in error messages ("pressure")
    si_unit: str  # the SI unit the value is converted to ("Pa")

    @property
    def dimensionality(self) -> pint.util.UnitsContainer:
        return ureg.Quantity(1.0, self.si_unit).dimensionality

    def to_si(self, value: object) -> float:
        """Convert ``value`` (a string such as "35 mmHg") to a float in ``si_unit``.

        Raises ``ValueError`` with a one-line message when the value is a bare number, unparsable,
        or of the wrong dimension.
        """
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(
                f'expected a {self.name} with units as a string, e.g. "1 {self.si_unit}"'
                f" (bare numbers are not accepted)"
            )
        try:
            quantity = ureg.Quantity(value.strip())
        except Exception as err:  # pint raises many exception types for bad strings
            raise ValueError(f"cannot parse {value!r} as a {self.name}: {err}") from None
        if not isinstance(quantity, pint.Quantity) or quantity.dimensionality != self.dimensionality:
            got = getattr(quantity, "dimensionality", "dimensionless")
            raise ValueError(f"expected a {self.name} (convertible to {self.si_unit}), got units of {got}")
        return float(quantity.to(self.si_unit).magnitude)


LENGTH = Dimension("length", "m")
AREA = Dimension("area", "m^2")
VOLUME = Dimension("volume", "m^3")
TIME = Dimension("time", "s")
MASS = Dimension("mass", "kg")
TEMPERATURE = Dimension("temperature", "K")
PRESSURE = Dimension("pressure", "Pa")
CONCENTRATION = Dimension("mass concentration", "kg/m^3")
FLOW = Dimension("volume flow", "m^3/s")
RATE = Dimension("rate", "1/s")
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
ANGLE = Dimension("angle", "rad")
VOLUME_RATE = Dimension("oxygen consumption per tissue mass", "m^3/(kg*s)")
