"""The clinical protocol as a schedule of time (MODEL.md sections 3, 5, 6): what the pump, heat exchanger,
doses, washout, leak and TNF do at time t. Pure Python, no dolfinx: testable on its own.

Times in s from the start of perfusion, temperatures in K, flows in m^3/s, rates in 1/s, doses in kg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solver.case import Case, Dose, Protocol
from solver.parameters import GAS_CONSTANT, T_REF

BODY_TEMPERATURE = 310.15  # K: the inflow temperature when a case gives none


@dataclass(frozen=True)
class Schedule:
    """The protocol of ``case`` as functions of time; ``end`` the simulated end time (s)."""

    protocol: Protocol | None
    end: float
    output_interval: float | None = None

    @classmethod
    def of(cls, case: Case) -> Schedule:
        end = case.protocol.end_time if case.protocol else (case.numerics.end_time or case.numerics.dt)
        return cls(case.protocol, end, case.output.interval)

    # ------------------------------------------------------------------------------------- circuit
    @property
    def release_time(self) -> float:
        """Tourniquet release (s): the end of washout; infinite without a protocol."""
        p = self.protocol
        return p.perfusion_duration + p.washout_duration if p is not None else math.inf

    def isolated(self, t: float) -> bool:
        """Whether the step ending at t has the limb isolated (up to and including the release time)."""
        return t <= self.release_time * (1 + 1e-12) + 1e-9

    def inflow_temperature(self, t: float) -> float:
        """Arterial temperature (K): while isolated the heat-exchanger outlet, the case's schedule (piecewise
        linear, held beyond its ends); after release the body's blood."""
        p = self.protocol
        if p is None or not p.inflow_temperature or not self.isolated(t):
            return BODY_TEMPERATURE
        return float(np.interp(t, [q.time for q in p.inflow_temperature], [q.value for q in p.inflow_temperature]))

    def washing_out(self, t: float) -> bool:
        """Whether t lies in the washout (after perfusion, up to and including its end)."""
        p = self.protocol
        return p is not None and p.perfusion_duration < t <= p.perfusion_duration + p.washout_duration + 1e-9

    def flow(self, t: float) -> float:
        """Circuit flow through the limb (m^3/s): pump, then washout, then none."""
        p = self.protocol
        if p is None:
            return 0.0
        if t <= p.perfusion_duration:
            return p.flow
        return p.washout_flow if self.washing_out(t) else 0.0

    def washout_flow(self, t: float) -> float:
        """Flow that carries perfusate out of the circuit (m^3/s) in the step ending at t."""
        return self.protocol.washout_flow if self.protocol is not None and self.washing_out(t) else 0.0

    def leak_flow(self, circulating_volume: float, t: float) -> float:
        """Leak flow between perfusate and body (m^3/s) in the step ending at t: the leak rate (a fraction of
        the perfusate per time) while the tourniquet is on, none after release."""
        if self.protocol is None or not self.isolated(t):
            return 0.0
        return self.protocol.leak_rate * circulating_volume

    def perfusate_hydrolysis(self, half_life: float, Ea: float, t: float) -> float:
        """Hydrolysis rate in the perfusate (1/s) at the inflow temperature at t (Arrhenius, Ea in J/mol)."""
        T = self.inflow_temperature(t)
        return math.log(2.0) / half_life * math.exp(-Ea / GAS_CONSTANT * (1.0 / T - 1.0 / T_REF))

    def doses_due(self, t: float, done: set[int]) -> list[tuple[int, Dose]]:
        """Doses given at or before t and not yet in ``done`` (their indices), in the case's order."""
        doses = self.protocol.doses if self.protocol is not None else []
        return [(i, d) for i, d in enumerate(doses) if i not in done and d.time <= t + 1e-9]

    # ----------------------------------------------------------------------------------------- TNF
    def tnf_progress(self, t: float) -> float | None:
        """Fraction of the TNF effect reached at t, s = 1 - exp(-(t - t_TNF)/tau); None without TNF."""
        tnf = self.protocol.tnf if self.protocol is not None else None
        if tnf is None:
            return None
        return 0.0 if t < tnf.time else 1.0 - math.exp(-(t - tnf.time) / tnf.tau)

    # ---------------------------------------------------------------------------------- milestones
    def milestones(self) -> list[float]:
        """Event times (s) the step sequence must land on exactly: doses, phase changes, TNF, schedule points,
        output times and the end."""
        times = {self.end}
        p = self.protocol
        if p is not None:
            times.update(d.time for d in p.doses)
            times.update([p.perfusion_duration, p.perfusion_duration + p.washout_duration])
            if p.tnf is not None:
                times.add(p.tnf.time)
            times.update(q.time for q in p.inflow_temperature)
        if self.output_interval:
            n = int(math.floor(self.end / self.output_interval + 1e-9))
            times.update(self.output_interval * k for k in range(1, n + 1))
        return sorted(t for t in times if 0 < t <= self.end)

    def next_milestone(self, t: float) -> float:
        """The first milestone after t (the end when none is left)."""
        for m in self.milestones():
            if m > t * (1 + 1e-12) + 1e-9:
                return m
        return self.end

    def step_to(self, t: float, dt_max: float) -> float:
        """The step from t: at most ``dt_max``, landing exactly on the next milestone, leaving no sliver
        before it."""
        target = self.next_milestone(t)
        dt = min(dt_max, target - t)
        return target - t if target - t - dt < 1e-6 * dt else dt


__all__ = ["Schedule", "BODY_TEMPERATURE"]
