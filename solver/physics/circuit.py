"""Perfusion circuit, limb lymph pool and systemic compartment (MODEL.md section 3, version 2), 0D, backward Euler.

While the limb is isolated (tourniquet on):

    V_p dC_p/dt = dosing - INT Phi_v dV - f_u k_h(T_p) V_p C_p - Q_leak (C_p - C_s) - Q_wash C_p
    V_s dC_s/dt = Q_leak (C_p - C_s) - CL C_s
    dM_L/dt     = INT (JL/V)(1 + B) C dV        (lymph formed in the limb is held there, with its drug)

At tourniquet release the drug left in the limb's blood (V_p C_p) and in the lymph pool goes to the body; from
then on the tissue exchanges with systemic plasma and its lymph drains to the body:

    V_s dC_s/dt = - INT Phi_v(C_s) dV + INT (JL/V)(1 + B) C dV - CL C_s

The tissue terms are affine in the plasma concentration after the tissue's superposition solve (rate = r0 +
r1 C_plasma), so one step is a 2x2 (isolated) or 1x1 (released) linear system, implicit in the compartments and
in the tissue: the balance closes. A tracer (radiolabelled albumin: no decay, no exchange with tissue) put in
the perfusate at the start measures the leak as the clinic does: systemic tracer against the concentration a
complete mixing of perfusate and body would give. Concentrations kg/m^3, volumes m^3, flows m^3/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOTALS = ("dosed", "perfusate_hydrolysed", "leaked", "cleared", "washed_out", "lymph_to_systemic", "released")


@dataclass
class Circuit:
    V_p: float  # perfusate volume: circuit prime + the limb's own blood (m^3)
    V_s: float  # systemic distribution volume (m^3)
    clearance: float  # systemic clearance CL (m^3/s)
    C_p: float = 0.0  # perfusate (total) concentration; 0 after release
    C_s: float = 0.0  # systemic plasma (total) concentration
    lymph_pool: float = 0.0  # drug held in the limb's lymph while isolated (kg)
    released: bool = False
    tracer_p: float = 0.0  # tracer concentrations relative to complete mixing (1 = fully mixed)
    tracer_s: float = 0.0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0.0))

    def __post_init__(self) -> None:
        if self.tracer_p == 0.0 and self.tracer_s == 0.0:
            self.tracer_p = (self.V_p + self.V_s) / self.V_p  # all tracer in the perfusate at the start

    @property
    def plasma(self) -> float:
        """The concentration the limb's capillaries carry: perfusate while isolated, systemic after release."""
        return self.C_s if self.released else self.C_p

    def dose(self, amount: float) -> None:
        """A bolus (kg) into the perfusate."""
        self.C_p += amount / self.V_p
        self.totals["dosed"] += amount

    def release(self) -> None:
        """Tourniquet release: the limb's blood and lymph pool, with their drug, join the body."""
        moved = self.V_p * self.C_p + self.lymph_pool
        self.C_s += moved / self.V_s
        self.totals["released"] += moved
        self.C_p, self.lymph_pool, self.released = 0.0, 0.0, True

    def solve(
        self,
        dt: float,
        k_h: float,
        Q_leak: float,
        Q_wash: float,
        vascular: tuple[float, float] = (0.0, 0.0),
        lymph: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[float, float]:
        """New (plasma, systemic) concentrations for one step. ``vascular``/``lymph`` are (r0, r1) of the
        tissue rates (kg/s) against the plasma concentration; ``k_h`` the perfusate hydrolysis rate of the
        total drug (free fraction times the rate constant, 1/s)."""
        r0, r1 = vascular
        l0, l1 = lymph
        if self.released:
            C_s = (self.V_s * self.C_s / dt - r0 + l0) / (self.V_s / dt + r1 - l1 + self.clearance)
            return float(C_s), float(C_s)
        M = np.array(
            [
                [self.V_p / dt + r1 + k_h * self.V_p + Q_leak + Q_wash, -Q_leak],
                [-Q_leak, self.V_s / dt + Q_leak + self.clearance],
            ]
        )
        rhs = np.array([self.V_p * self.C_p / dt - r0, self.V_s * self.C_s / dt])
        C_p, C_s = np.linalg.solve(M, rhs)
        return float(C_p), float(C_s)

    def accept(
        self, plasma: float, C_s: float, dt: float, k_h: float, Q_leak: float, Q_wash: float, lymph: float = 0.0
    ) -> None:
        """Take the new state and add the step's outflows to the running totals (kg); ``lymph`` the tissue's
        lymph drug rate (kg/s): into the pool while isolated, into the body after release."""
        self.C_s = C_s
        self.totals["cleared"] += dt * self.clearance * C_s
        if self.released:
            self.totals["lymph_to_systemic"] += dt * lymph
            return
        self.C_p = plasma
        self.totals["perfusate_hydrolysed"] += dt * k_h * self.V_p * plasma
        self.totals["leaked"] += dt * Q_leak * (plasma - C_s)
        self.totals["washed_out"] += dt * Q_wash * plasma
        self.lymph_pool += dt * lymph
        # the tracer: backward Euler of the same leak, without tissue, hydrolysis or washout
        M = np.array([[self.V_p / dt + Q_leak, -Q_leak], [-Q_leak, self.V_s / dt + Q_leak]])
        rhs = np.array([self.V_p * self.tracer_p / dt, self.V_s * self.tracer_s / dt])
        self.tracer_p, self.tracer_s = (float(x) for x in np.linalg.solve(M, rhs))

    @property
    def tracer_leak(self) -> float:
        """Systemic tracer against complete mixing (0-1): the clinic's leak percentage / 100."""
        return self.tracer_s

    def amounts(self) -> dict[str, float]:
        """Drug now in perfusate, lymph pool and systemic compartment (kg)."""
        return {"perfusate": self.V_p * self.C_p, "lymph_pool": self.lymph_pool, "systemic": self.V_s * self.C_s}

    def state(self) -> dict:
        """Everything a step changes (JSON-able)."""
        keys = ("C_p", "C_s", "lymph_pool", "released", "tracer_p", "tracer_s")
        return {**{k: getattr(self, k) for k in keys}, "totals": dict(self.totals)}

    def restore(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, dict(value) if key == "totals" else value)
