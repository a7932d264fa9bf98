"""Probe-controlled inflow temperature (MODEL.md section 5, issue 13): the PI controller against a plant whose
steady state is known in closed form, and the engine's leg holding its subcutaneous probes at the target."""

from __future__ import annotations

import copy
import math
import tomllib
from itertools import pairwise

import numpy as np
import pytest

from solver import meshing
from solver.case import CaseError, parse_case_tree
from solver.coupling import CoupledModel
from solver.physics.control import InflowController
from solver.simulation import Simulation

from .conftest import CASES

C0 = 273.15


def _controller(target: float, output: float, **kw) -> InflowController:
    params = {"gain": 3.0, "integral_time": 600.0, "min_inflow": C0 + 35, "max_inflow": C0 + 42, "max_rate": 1 / 60}
    params.update(kw)
    return InflowController(target=lambda t: target, output=output, **params)  # type: ignore[arg-type]


def test_controller_settles_a_lossy_plant_on_its_target_with_the_inflow_the_heat_balance_needs():
    """Plant: dT/dt = a (T_a - T) - b (T - T_room), a lumped limb heated by its inflow and cooled by the room.
    Its steady state at T = target needs T_a = target + (b/a)(target - T_room) exactly: a proportional
    controller alone would stop short of the target; the integral must find this inflow."""
    a, b, room, target = 1 / 900.0, 1 / 9000.0, C0 + 24, C0 + 39
    pi = _controller(target, output=C0 + 39.5)
    T, dt = C0 + 35.0, 30.0
    history = []
    for k in range(int(4 * 3600 / dt)):
        T_a = pi.update(k * dt, dt, T)
        T += dt * (a * (T_a - T) - b * (T - room))  # explicit Euler of the plant, separately from the controller
        history.append((T_a, T))
    assert T == pytest.approx(target, abs=1e-3)
    assert pi.output == pytest.approx(target + b / a * (target - room), abs=1e-2)  # 40.5 C
    inflows = np.array([h[0] for h in history])
    assert inflows.max() <= C0 + 42 + 1e-12 and inflows.min() >= C0 + 35 - 1e-12
    assert np.abs(np.diff(inflows)).max() <= dt / 60 + 1e-12  # at most 1 K per minute


def test_controller_limits_and_anti_windup():
    """Saturated at max_inflow, the integral does not grow: once the probes pass the target, the inflow comes
    down at once instead of staying at the limit while a wound-up integral unwinds."""
    pi = _controller(C0 + 39, output=C0 + 42)
    for k in range(60):  # an hour far below the target: saturated high all along
        assert pi.update(60.0 * k, 60.0, C0 + 30) == pytest.approx(C0 + 42)
    assert pi.integral == 0.0
    assert pi.update(3600.0, 60.0, C0 + 39.5) < C0 + 42  # over the target: the inflow falls at the next step


def test_controller_converges_at_first_order_to_the_continuous_pi_loop_away_from_its_limits():
    """The sampled PI law (probe read at the start of each step, inflow held over the step) against the
    continuous PI loop on the lumped plant above, solved separately by scipy: away from the clamp and the rate
    limit the sampling error halves with the step (docs/convergence.md, "The kill over dt": it is the limits'
    switching that makes the engine's kill converge irregularly in dt)."""
    from scipy.integrate import solve_ivp

    a, b, room, target, gain, integral_time = 1 / 900.0, 1 / 9000.0, C0 + 24, C0 + 39, 3.0, 600.0
    T0, end = C0 + 38.5, 3600.0

    def loop(t: float, y: np.ndarray) -> list[float]:
        T, integral, _ = y
        error = target - T
        inflow = target + gain * (error + integral / integral_time)
        return [a * (inflow - T) - b * (T - room), error, T - C0]  # the last: INT (T - 0 C) dt, K s

    exact_area = float(solve_ivp(loop, (0.0, end), [T0, 0.0, 0.0], rtol=1e-12, atol=1e-9).y[2, -1])

    def sampled_area(dt: float) -> float:
        """INT (T - 0 C) dt with the controller sampled every dt and the plant stepped exactly under the held
        inflow (so that the only step error is the controller's)."""
        pi = _controller(target, output=target + gain * (target - T0), min_inflow=C0 + 30, max_inflow=C0 + 50,
                         max_rate=1.0)  # fmt: skip
        T, area, rate = T0, 0.0, a + b
        for k in range(round(end / dt)):
            settle = (a * pi.update(k * dt, dt, T) + b * room) / rate  # where T heads under this inflow
            decay = math.exp(-rate * dt)
            area += (settle - C0) * dt + (T - settle) * (1 - decay) / rate
            T = settle + (T - settle) * decay
        return area

    errors = [sampled_area(dt) - exact_area for dt in (120.0, 60.0, 30.0, 15.0)]
    assert abs(errors[-1]) < 1e-4 * exact_area  # about 4 K s against 1.4e5
    ratios = [e0 / e1 for e0, e1 in pairwise(errors)]
    assert ratios == pytest.approx([2.0, 2.0, 2.0], abs=0.05)


def _leg_heat_only(minutes: float) -> dict:
    raw = tomllib.loads((CASES / "ilp-tm-sarcoma-leg" / "case.toml").read_text())
    raw = copy.deepcopy(raw)
    p = raw["protocol"]
    p.update(perfusion_duration=f"{minutes} min", washout_duration="0 min", end_time=f"{minutes} min")
    p["inflow_temperature"] = [{"time": "0 min", "value": "39.5 degC"}]
    p.pop("tnf")
    p["doses"] = []
    raw["physics"] = {"drug": False}
    raw["agents"] = {}
    return raw


def test_leg_probes_follow_the_target_after_the_rise(comm):
    """The default leg (coarse mesh, heat only): after 30 min the four subcutaneous probes' mean is within
    0.3 C of the 39 C target (seed 003 holds 38-39.5 C), with the inflow at most 42 C; the probes lie in the fat."""
    raw = _leg_heat_only(45.0)
    case = parse_case_tree(raw, CASES / "ilp-tm-sarcoma-leg" / "case.toml")
    model = CoupledModel(case, meshing.generate(case, comm))
    fat = model.tm.regions["fat"]
    probes = model.probes
    assert probes is not None
    in_fat = np.isin(probes.cells[probes.mine], model.tm.cell_tags.find(fat))
    assert all(comm.allgather(bool(in_fat.all())))
    rows = Simulation(model).run().series
    after = [r for r in rows if r["time_min"] >= 30.0]
    assert after and all(abs(r["probe_mean_degC"] - 39.0) <= 0.3 for r in after)
    assert max(r["inflow_temperature_degC"] for r in rows) <= 42.0 + 1e-9
    assert rows[0]["probe_mean_degC"] == pytest.approx(35.0, abs=1e-9)  # the limb starts at 35 C


def test_probes_need_a_limb_or_points(tmp_path):
    raw = _leg_heat_only(10.0)
    raw["mesh"] = {"generator": "cylinder", "radius": "2 cm", "length": "6 cm", "cell_size": "1.2 cm"}
    raw["boundaries"] = {}
    raw["protocol"]["temperature_control"] = {"target": [{"time": "0 min", "value": "39 degC"}]}
    with pytest.raises(CaseError, match="temperature_control.probes"):
        parse_case_tree(raw, tmp_path / "case.toml")
    raw["protocol"]["temperature_control"]["target"] = [
        {"time": "10 min", "value": "39 degC"},
        {"time": "5 min", "value": "39 degC"},
    ]
    raw["protocol"]["temperature_control"]["probes"] = [["0 cm", "0 cm", "3 cm"]]
    with pytest.raises(CaseError, match=r"temperature_control.target\[1\].time"):
        parse_case_tree(raw, tmp_path / "case.toml")


@pytest.mark.serial
def test_probes_in_summary_timeseries_and_report(tmp_path):
    """summary.json's probe_temperature_degC is the min and max of the time series' probe mean from 15 min to
    the end of perfusion; the report shows them."""
    from mpi4py import MPI

    from solver import report
    from solver.simulation import run_case

    raw = _leg_heat_only(25.0)
    raw["output"] = {"interval": "25 min", "fields": ["T"], "formats": ["vtkhdf"]}
    result = run_case(parse_case_tree(raw, CASES / "ilp-tm-sarcoma-leg" / "case.toml"), tmp_path, MPI.COMM_WORLD)
    settled = [r["probe_mean_degC"] for r in result.series if 15.0 <= r["time_min"] <= 25.0]
    assert result.summary["probe_temperature_degC"] == {"min": min(settled), "max": max(settled)}
    page = report.build(tmp_path).read_text()
    assert "<h2>Probe-controlled temperature</h2>" in page and f"{min(settled):.2f}" in page


def test_a_probe_outside_the_mesh_is_one_clear_error(comm):
    """Every rank raises the same MeshError (the command prints it as one line, exit 2)."""
    from solver.meshing import MeshError

    raw = _leg_heat_only(5.0)
    raw["protocol"]["temperature_control"]["probes"] = [["0 cm", "0 cm", "30 cm"], ["50 cm", "0 cm", "30 cm"]]
    case = parse_case_tree(raw, CASES / "ilp-tm-sarcoma-leg" / "case.toml")
    tm = meshing.generate(case.model_copy(update={"mesh": case.mesh.model_copy(update={"size_factor": 3.0})}), comm)
    with pytest.raises(MeshError, match=r"probes\[1\] = \(500 mm, 0 mm, 300 mm\): outside the mesh"):
        CoupledModel(case, tm)
