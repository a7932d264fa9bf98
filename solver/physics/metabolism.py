"""ILI metabolic state of the isolated limb (MODEL.md section 7), 0D.

Without an oxygenator the limb lives on the oxygen in its trapped blood. Tissue consumes oxygen at
``VO2 = oxygen_consumption * tissue mass * Q10^((T - 37 C)/10)``; once the store is empty the shortfall is
met by anaerobic glycolysis, which makes ``lactate_per_oxygen`` mol of lactic acid per mol of missing O2.
The acid accumulates in the circulating volume (perfusate + limb blood) and lowers its pH through the
buffer capacity beta (mol/m^3 per pH unit):

    pH = pH_0 - [lactate] / beta,        base excess = BE_0 - [lactate]

Acidosis can potentiate the drug: the cellular uptake rate is multiplied by
``1 + (potentiation - 1) min(1, (pH_0 - pH)/0.5)`` (a documented, switchable factor: potentiation = 1 is off).
Units: SI (m^3 of O2 at STP, mol, s, K).
"""

from __future__ import annotations

from dataclasses import dataclass

from solver.case import Metabolism

MOLAR_VOLUME_STP = 22.414e-3  # m^3/mol, ideal gas at 0 C and 1 atm (how O2 volumes are quoted)
FULL_EFFECT_PH_DROP = 0.5  # pH units at which the potentiation factor reaches its full value


@dataclass
class MetabolicState:
    """Oxygen store, accumulated lactic acid and pH of the isolated limb."""

    params: Metabolism
    tissue_mass: float  # kg
    volume: float  # m^3: circulating volume the acid is diluted in
    oxygen: float = 0.0  # m^3 (STP) left in the trapped blood
    lactate: float = 0.0  # mol of lactic acid made
    oxygen_used: float = 0.0  # m^3 (STP) consumed aerobically

    def __post_init__(self) -> None:
        self.oxygen = self.params.initial_oxygen

    def demand(self, temperature: float) -> float:
        """Oxygen demand of the limb (m^3 STP per s) at mean tissue temperature (K)."""
        q10 = self.params.q10 ** ((temperature - 310.15) / 10.0)
        return self.params.oxygen_consumption * self.tissue_mass * q10

    def step(self, dt: float, temperature: float) -> None:
        """Advance dt seconds at mean tissue temperature ``temperature`` (K)."""
        need = self.demand(temperature) * dt
        aerobic = min(need, self.oxygen)
        self.oxygen -= aerobic
        self.oxygen_used += aerobic
        self.lactate += self.params.lactate_per_oxygen * (need - aerobic) / MOLAR_VOLUME_STP

    @property
    def lactate_rise(self) -> float:
        """Rise of lactate concentration in the circulating volume (mol/m^3 = mmol/L)."""
        return self.lactate / self.volume

    @property
    def ph(self) -> float:
        return self.params.initial_ph - self.lactate_rise / self.params.buffer_capacity

    @property
    def base_excess(self) -> float:
        """Base excess (mol/m^3 = mmol/L), starting from zero."""
        return -self.lactate_rise

    @property
    def uptake_factor(self) -> float:
        """Multiplier of the cellular drug uptake rate from acidosis."""
        drop = min(1.0, max(0.0, (self.params.initial_ph - self.ph) / FULL_EFFECT_PH_DROP))
        return 1.0 + (self.params.potentiation - 1.0) * drop
