"""Perfusion circuit and systemic compartment (MODEL.md section 3), 0D, backward Euler.

    V_p dC_p/dt = dosing - INT Phi_v dV - k_h(T_p) V_p C_p - Q_leak (C_p - C_s) - Q_wash C_p
    V_s dC_s/dt = Q_leak (C_p - C_s) + INT JL/V C dV - CL C_s

The tissue terms are affine in C_p after the tissue's superposition solve (rate = r0 + r1 C_p), so one
step is a 2x2 linear system, implicit in both compartments and in the tissue: the balance closes.
Concentrations in kg/m^3, volumes m^3, flows m^3/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Circuit:
    V_p: float  # perfusate volume: circuit prime + the limb's own blood (m^3)
    V_s: float  # systemic distribution volume (m^3)
    clearance: float  # systemic clearance CL (m^3/s)
    C_p: float = 0.0
    C_s: float = 0.0
    totals: dict[str, float] = field(
        default_factory=lambda: {
            "dosed": 0.0,
            "perfusate_hydrolysed": 0.0,
            "leaked": 0.0,
            "cleared": 0.0,
            "washed_out": 0.0,
        }
    )

    def dose(self, amount: float) -> None:
        """A bolus (kg) into the perfusate."""
        self.C_p += amount / self.V_p
        self.totals["dosed"] += amount

    def solve(
        self,
        dt: float,
        k_h: float,
        Q_leak: float,
        Q_wash: float,
        vascular: tuple[float, float] = (0.0, 0.0),
        lymph: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[float, float]:
        """New (C_p, C_s) for one step; ``vascular``/``lymph`` are (r0, r1) of the tissue rates (kg/s)."""
        r0, r1 = vascular
        l0, l1 = lymph
        M = np.array(
            [
                [self.V_p / dt + r1 + k_h * self.V_p + Q_leak + Q_wash, -Q_leak],
                [-Q_leak - l1, self.V_s / dt + Q_leak + self.clearance],
            ]
        )
        rhs = np.array([self.V_p * self.C_p / dt - r0, self.V_s * self.C_s / dt + l0])
        C_p, C_s = np.linalg.solve(M, rhs)
        return float(C_p), float(C_s)

    def accept(self, C_p: float, C_s: float, dt: float, k_h: float, Q_leak: float, Q_wash: float) -> None:
        """Take the new state and add the step's outflows to the running totals (kg)."""
        self.C_p, self.C_s = C_p, C_s
        self.totals["perfusate_hydrolysed"] += dt * k_h * self.V_p * C_p
        self.totals["leaked"] += dt * Q_leak * (C_p - C_s)
        self.totals["cleared"] += dt * self.clearance * C_s
        self.totals["washed_out"] += dt * Q_wash * C_p

    def amounts(self) -> dict[str, float]:
        """Drug now in perfusate and systemic compartments (kg)."""
        return {"perfusate": self.V_p * self.C_p, "systemic": self.V_s * self.C_s}
