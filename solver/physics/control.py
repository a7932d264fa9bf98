"""Probe-controlled inflow temperature (MODEL.md section 5).

The clinic controls the limb, not the heat exchanger: four subcutaneous probes are held at 38-39.5 C (seed 003)
by heating the perfusate. The engine does the same. Each step a PI controller sets the heat-exchanger outlet
temperature T_a from the mean of the case's probe points, measured at the start of the step:

    e(t) = T_target(t) - T_probes(t)
    T_a  = T_target(t) + gain (e + I / integral_time),        I = INT e dt

limited to [min_inflow, max_inflow] and to a change of at most ``max_rate`` per unit time (a heat exchanger
warms the circuit at a finite rate). The target is fed forward, so the integral only has to make up what the
skin loses to the room; the integral is frozen while the output sits at a limit and the error would push it
further in (anti-windup). The controller is a pure object (no dolfinx): its state (output, integral) is part
of the model's state, so rollback and checkpoints carry it.

Units: K, s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from solver.case import Case, LimbMesh, TemperatureControl


@dataclass
class InflowController:
    """PI controller of the inflow temperature (K) on the probes' mean temperature (K)."""

    target: Callable[[float], float]  # T_target(t), K
    gain: float  # K of inflow per K of probe error
    integral_time: float  # s
    min_inflow: float  # K
    max_inflow: float  # K
    max_rate: float  # K/s
    output: float  # the heat-exchanger outlet now, K
    integral: float = 0.0  # INT e dt, K s

    def update(self, t: float, dt: float, probe_mean: float) -> float:
        """The inflow temperature for the step from t to t + dt, given the probes' mean at t."""
        goal = self.target(t)
        error = goal - probe_mean
        integral = self.integral + error * dt
        wanted = goal + self.gain * (error + integral / self.integral_time)
        low = max(self.min_inflow, self.output - self.max_rate * dt)
        high = min(self.max_inflow, self.output + self.max_rate * dt)
        output = min(max(wanted, low), high)
        pushing_further = (wanted > high and error > 0.0) or (wanted < low and error < 0.0)
        if not pushing_further:
            self.integral = integral
        self.output = output
        return output

    def state(self) -> list[float]:
        return [self.output, self.integral]

    def restore(self, state: list[float]) -> None:
        self.output, self.integral = (float(x) for x in state)


def target_schedule(control: TemperatureControl) -> Callable[[float], float]:
    """T_target(t) (K): the case's points, piecewise linear, held beyond its ends."""
    times = [q.time for q in control.target]
    values = [q.value for q in control.target]
    return lambda t: float(np.interp(t, times, values))


DEFAULT_PROBE_ANGLES = (45.0, 135.0, 225.0, 315.0)  # degrees from the tumour's direction: off the tumour


def default_probes(case: Case) -> np.ndarray:
    """Four points (m) in the subcutis (mid-depth of the fat layer) at the tumour's level, a quarter turn apart
    and 45 degrees off the tumour's direction: where the clinic puts its four probes (seed 003). Limb meshes
    only; the level is the limb's middle without a tumour."""
    from solver.meshing import limb_geometry, nodule_centres, sarcoma_centre

    spec = case.mesh
    if not isinstance(spec, LimbMesh):
        raise ValueError("default probes need a 'limb' mesh: give protocol.temperature_control.probes")
    geo = limb_geometry(spec)
    if spec.sarcoma is not None:
        centre = sarcoma_centre(spec, geo)
    elif spec.nodules is not None:
        centre = nodule_centres(spec, geo)[0]
    else:
        centre = np.array([1.0, 0.0, 0.5 * geo.length])
    z = float(centre[2])
    direction = math.atan2(centre[1], centre[0])
    depth = geo.radius(z) - geo.skin_thickness - 0.5 * geo.fat_thickness
    angles = [direction + math.radians(a) for a in DEFAULT_PROBE_ANGLES]
    return np.array([[depth * math.cos(a), depth * math.sin(a), z] for a in angles])


def probe_points(case: Case) -> np.ndarray:
    """The controller's probe points (m), shape (n, 3): the case's, or :func:`default_probes`."""
    control = case.protocol.temperature_control if case.protocol else None
    assert control is not None
    if control.probes is not None:
        return np.array([[float(x) for x in p] for p in control.probes])
    return default_probes(case)


def controller(case: Case, initial_output: float) -> InflowController:
    """The case's controller, starting from ``initial_output`` (K) with an empty integral."""
    control = case.protocol.temperature_control if case.protocol else None
    assert control is not None
    return InflowController(
        target=target_schedule(control),
        gain=control.gain,
        integral_time=control.integral_time,
        min_inflow=control.min_inflow,
        max_inflow=control.max_inflow,
        max_rate=control.max_rate,
        output=initial_output,
    )


__all__ = ["InflowController", "controller", "default_probes", "probe_points", "target_schedule"]
