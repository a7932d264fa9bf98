"""ILI metabolic state of the isolated limb (MODEL.md section 7, version 2), 0D.

Without an oxygenator the limb lives on the oxygen in its trapped blood. Tissue consumes oxygen at
``VO2 = oxygen_consumption * tissue mass * Q10^((T - 37 C)/10)``; once the store is empty the shortfall is
met by anaerobic glycolysis, which makes ``lactate_per_oxygen`` mol of lactic acid per mol of missing O2.

Two dilution volumes: the acid enters the circulating blood (the circuit's prime and the limb's trapped blood,
``blood_volume``: per limb, from the case's prime and blood fraction), which is what is sampled, and
exchanges slowly with the limb's extracellular water (``ecw_volume`` = ``ecw_fraction`` x limb volume) with
time constant ``ecw_exchange_time``: the ECW concentration relaxes towards the blood's, J = (V_e / tau)(c_b -
c_e). Each step adds the acid to the blood and solves the exchange exactly (the difference decays as
exp(-(1 + V_e/V_b) dt / tau), the total is kept). The blood's pH and base excess follow its buffer capacity
beta (mol/m^3 per pH unit; whole blood 36-41 mmol/L per pH [C]):

    pH = pH_0 - c_b / beta,        base excess = BE_0 - c_b

Acidosis can potentiate the drug: the cellular uptake rate is multiplied by
``1 + (potentiation - 1) min(1, (pH_0 - pH)/0.5)`` (a documented, switchable factor: potentiation = 1 is off).
Units: SI (m^3 of O2 at STP, mol, s, K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from solver.case import Metabolism

MOLAR_VOLUME_STP = 22.414e-3  # m^3/mol, ideal gas at 0 C and 1 atm (how O2 volumes are quoted)
FULL_EFFECT_PH_DROP = 0.5  # pH units at which the potentiation factor reaches its full value


@dataclass
class MetabolicState:
    """Oxygen store, lactic acid in blood and extracellular water, and pH of the isolated limb."""

    params: Metabolism
    tissue_mass: float  # kg
    blood_volume: float  # m^3: circulating blood (prime + the limb's trapped blood), what is sampled
    ecw_volume: float  # m^3: the limb's extracellular water, the slow dilution volume
    oxygen: float = 0.0  # m^3 (STP) left in the trapped blood
    lactate: float = 0.0  # mol of lactic acid made
    oxygen_used: float = 0.0  # m^3 (STP) consumed aerobically
    lactate_ecw: float = 0.0  # mol of it in the extracellular water

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
        V_b, V_e = self.blood_volume, self.ecw_volume
        if V_e <= 0.0:
            return
        mean = self.lactate / (V_b + V_e)
        difference = (self.lactate - self.lactate_ecw) / V_b - self.lactate_ecw / V_e  # c_b - c_e
        difference *= math.exp(-(1.0 + V_e / V_b) * dt / self.params.ecw_exchange_time)
        self.lactate_ecw = V_e * (mean - difference * V_b / (V_b + V_e))

    def state(self) -> list[float]:
        return [self.oxygen, self.lactate, self.oxygen_used, self.lactate_ecw]

    def restore(self, state: list[float]) -> None:
        self.oxygen, self.lactate, self.oxygen_used, self.lactate_ecw = (float(x) for x in state)

    @property
    def lactate_rise(self) -> float:
        """Rise of lactate concentration in the circulating blood (mol/m^3 = mmol/L)."""
        return (self.lactate - self.lactate_ecw) / self.blood_volume

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
