"""The time loop: protocol events as exact step milestones, step cut-back on failure, checkpoints and
stops, and what is recorded of each accepted step (time series, fields, the drug balance, the summary).

The order of operations of one step lives in :meth:`solver.coupling.CoupledModel.advance`; this module
keeps only time. A step from t to t + dt:
  1. boluses due at t into the perfusate;
  2. ``model.advance(t, dt)``; on a failed or non-finite solve the model is restored to its state before
     the step and the step retried with half of dt (at most ``MAX_CUTS`` times);
  3. ``model.accept(dt)`` (AUC, CEM43), then the step is recorded, and a checkpoint written when due.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from solver import checkpoint, interface, meshing, paraview, provenance, results
from solver.case import Case
from solver.checkpoint import NodalSpace, RunStopped, StopFlag
from solver.coupling import Agent, CoupledModel, ModelState
from solver.output import clinical, write_json
from solver.physics import effects
from solver.physics.heat import cem43_increment
from solver.physics.linear import SolveError
from solver.progress import RunLog
from solver.recorders import FieldRecorder, ProgressRecorder, Recorder, SeriesRecorder
from solver.storage import Storage, mesh_bytes

MAX_CUTS = 5
HISTOGRAM_LEVELS = 41  # levels of log10 kill of the survival-volume histogram, from 0 to the region's maximum
__all__ = ["MAX_CUTS", "RunResult", "Simulation", "Stopping", "cem43_increment", "run_case"]


@dataclass
class RunResult:
    summary: dict  # what summary.json holds
    series: list[dict[str, float]]  # the time-series rows


@dataclass
class Stopping:
    """When a run writes checkpoints and when it stops early (times in s of simulated time). Checkpoints and
    stops fall on the first step end at or after the time asked for: the step sequence is the same as without."""

    checkpoint_interval: float | None = None
    stop_at: float | None = None
    signals: StopFlag | None = None  # stop with a checkpoint when SIGUSR1/SIGTERM arrives


PROBE_SETTLING = 15 * 60.0  # s: probe_temperature_degC counts from 15 min after the start of perfusion


class Simulation:
    """Runs a :class:`CoupledModel` through its protocol, from the start or from a checkpoint (``restart``:
    a checkpoint folder; the field files and time series in ``folder`` are continued from its time)."""

    def __init__(
        self,
        model: CoupledModel,
        folder: Path | None = None,
        log: RunLog | None = None,
        stopping: Stopping | None = None,
        restart: Path | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.model, self.folder = model, folder
        self.storage = storage  # checks room before each write, and ends every rank on an I/O error
        self.log = log if log is not None else RunLog(model.comm, quiet=True)
        self.comm = model.comm
        self.schedule = model.schedule
        self.end = self.schedule.end
        self.stopping = stopping or Stopping()
        self.restart = restart
        self.restart_state = checkpoint.read_state(restart) if restart is not None else None
        resume_at = self.restart_state["time"] if self.restart_state else None
        self.recorders: list[Recorder] = [ProgressRecorder(self.log, model)]
        if folder is not None:
            self.recorders += [
                SeriesRecorder(self.comm, folder / results.SERIES),
                FieldRecorder(model, folder, resume_at),
            ]
        self.region_dofs = self._region_dofs()
        self.tumour_surface = interface.of_model(model)
        self.pressure_history: list[tuple[float, float]] = []
        self.rows: list[dict[str, float]] = []
        self.earlier_wall_seconds = 0.0  # of the runs before a restart
        self.earlier_phase_seconds: dict[str, float] = {}
        self.t, self.steps, self.doses_done = 0.0, 0, set[int]()
        # the pieces of a run stopped and resumed: ranks and simulated time span of each
        self.segments: list[dict] = list(self.restart_state["segments"]) if self.restart_state else []
        self._spaces: dict[str, NodalSpace] = {}

    # --------------------------------------------------------------------------------------- outputs
    def _region_dofs(self) -> dict[str, np.ndarray]:
        dofmap = self.model.V.dofmap
        return {r: np.unique(dofmap.list[cells].ravel()) for r, cells in self.model.mat.cells.items()}

    def region_max(self, region: str, values: np.ndarray) -> float:
        dofs = self.region_dofs[region]
        local = float(values[dofs].max()) if dofs.size else -np.inf
        return self.comm.allreduce(local, op=MPI.MAX)

    def run(self) -> RunResult:
        """Run to the end of the protocol (raises :class:`RunStopped` when stopped early with a checkpoint)."""
        m = self.model
        wall = time.perf_counter()
        if self.restart_state is None:
            m.start()
            self._record(0.0)
        else:
            self._resume(self.restart_state)
        next_checkpoint = self._next_checkpoint(self.t)
        if self.stopping.signals is not None and self.stopping.signals.any_rank(self.comm):
            # a stop asked for while meshing, compiling or starting: checkpoint the initial state and stop
            next_checkpoint = self._checkpoint_or_stop(next_checkpoint, wall)
        while self.t < self.end * (1 - 1e-12):
            t = self.t
            m.events(t, self.doses_done)
            target = self.schedule.next_milestone(t)
            dt = self.schedule.step_to(t, m.case.numerics.dt)
            before = m.state()
            for cut in range(MAX_CUTS + 1):
                try:
                    m.advance(t, dt)
                    break
                except SolveError as err:
                    m.restore(before)
                    if cut == MAX_CUTS:
                        raise SolveError(f"t = {t / 60:.2f} min: {err}; gave up after {MAX_CUTS} cut-backs") from None
                    dt *= 0.5
                    self.log.say(f"  t = {t / 60:.2f} min: {err}; retrying with dt = {dt:.3g} s")
            m.accept(dt)
            t += dt
            self.steps += 1
            if abs(t - target) < 1e-9 * max(1.0, target):
                t = target
            self.t = t
            self._record(t)
            if self.t < self.end * (1 - 1e-12):
                next_checkpoint = self._checkpoint_or_stop(next_checkpoint, wall)
        self._close_outputs()
        summary = self.summary()
        summary["steps"] = self.steps
        summary["wall_seconds"] = self.earlier_wall_seconds + time.perf_counter() - wall
        summary["phase_seconds"] = self.phase_seconds
        summary["peak_memory_GB"] = self.peak_memory_GB()
        summary["krylov_iterations"] = self.iterations()
        summary["segments"] = self._segments()
        return RunResult(summary, self.rows)

    def peak_memory_GB(self) -> dict[str, float]:
        """Peak resident memory of the processes so far (GB): the largest rank's and the sum over ranks (Linux
        ru_maxrss; this segment's processes only, after a restart)."""
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        return {"largest_rank": self.comm.allreduce(rss, op=MPI.MAX), "all_ranks": self.comm.allreduce(rss, op=MPI.SUM)}

    @property
    def phase_seconds(self) -> dict[str, float]:
        """Wall time per equation and for output (s), this run's segment and those before a restart."""
        own = {**self.model.seconds, "output": sum(r.seconds for r in self.recorders)}
        return {k: self.earlier_phase_seconds.get(k, 0.0) + v for k, v in own.items()}

    def _segments(self) -> list[dict]:
        start = self.restart_state["time"] if self.restart_state else 0.0
        return [*self.segments, {"ranks": self.comm.size, "from_min": start / 60.0, "to_min": self.t / 60.0}]

    def _close_outputs(self) -> None:
        for recorder in self.recorders:
            recorder.close()

    # ------------------------------------------------------------------------------------ checkpoints
    def _next_checkpoint(self, t: float) -> float:
        interval = self.stopping.checkpoint_interval
        return math.inf if interval is None else interval * (math.floor(t / interval * (1 + 1e-12)) + 1)

    def _checkpoint_or_stop(self, next_checkpoint: float, wall_start: float) -> float:
        """After a step: write a checkpoint when one is due; stop (raise RunStopped) when asked to."""
        t, stop = self.t, self.stopping
        reason = None
        if stop.signals is not None:
            received = stop.signals.any_rank(self.comm)
            reason = f"signal {received}" if received else None
        if reason is None and stop.stop_at is not None and t >= stop.stop_at * (1 - 1e-12):
            reason = f"--stop-at {stop.stop_at / 60:g} min"
        if reason is None and t < next_checkpoint * (1 - 1e-12):
            return next_checkpoint
        if self.folder is None:
            raise ValueError("checkpoints need a results folder")
        path = self.write_checkpoint(self.earlier_wall_seconds + time.perf_counter() - wall_start)
        self.log.say(f"  t = {t / 60:6.1f} min  checkpoint written ({reason or 'interval'})")
        if reason is not None:
            self._close_outputs()
            raise RunStopped(t, reason, path)
        return self._next_checkpoint(t)

    def _space_of(self, name: str) -> NodalSpace:
        """The scalar space of a nodal state array: an agent's ("<agent>.C", ...) or the model's V."""
        if not self._spaces:
            self._spaces["V"] = NodalSpace(self.model.V)
            for a in self.model.agents:
                self._spaces[a.name] = NodalSpace(a.space)
        agent = name.split(".", 1)[0] if "." in name else "V"
        return self._spaces[agent]

    def write_checkpoint(self, wall_seconds: float) -> Path:
        """Write the state after the current step into ``<folder>/checkpoint`` (collective): the model's
        :meth:`~solver.coupling.CoupledModel.state` and the loop's own (time, steps, doses, records)."""
        assert self.folder is not None
        m = self.model
        model_state = m.state()
        if self.storage is not None:  # arrays, keys and coordinates, and the rows in state.json
            dofs = m.V.dofmap.index_map.size_global
            rows = 32 * len(self.rows) * len(self.rows[0]) if self.rows else 0
            estimate = (len(model_state.nodal) + 4) * 8 * dofs + rows + 64 * 1024
            self.storage.check(self.storage.need("checkpoint", estimate), "the checkpoint")
        state = {
            "time": self.t,
            "steps": self.steps,
            "doses_done": sorted(self.doses_done),
            "wall_seconds": wall_seconds,
            "case": json.loads(m.case.model_dump_json()),
            "model": model_state.scalars,
            "rows": self.rows,
            "pressure_history": self.pressure_history,
            "phase_seconds": self.phase_seconds,
            "iterations": {k: list(map(int, s.iterations)) for k, s in m.linear_systems().items()},
            "segments": self._segments(),
        }
        nodal = {name: (self._space_of(name), values) for name, values in model_state.nodal.items()}
        if self.storage is None:
            return checkpoint.write(self.folder, self.comm, state, nodal)
        with self.storage.measured("checkpoint"):
            return checkpoint.write(self.folder, self.comm, state, nodal)

    def _resume(self, state: dict) -> None:
        """Put the model and the loop back in the state of the checkpoint ``self.restart``."""
        assert self.restart is not None
        m = self.model
        # the arrays this model's state holds, of those the checkpoint has (one written before T_peak was kept
        # lacks it; restore() then starts the peak from the temperature)
        names = [name for name in m.state().nodal if (self.restart / f"{name}.npy").exists()]
        spaces = {name: self._space_of(name) for name in names}
        reader = checkpoint.Reader(self.restart, self.comm, list({id(sp): sp for sp in spaces.values()}.values()))
        m.restore(ModelState(state["model"], {name: reader.values(name, spaces[name]) for name in names}))
        self.t, self.steps, self.doses_done = state["time"], state["steps"], set(state["doses_done"])
        self.rows = state["rows"]
        self.pressure_history = [tuple(x) for x in state["pressure_history"]]
        self.earlier_phase_seconds = dict(state["phase_seconds"])
        self.earlier_wall_seconds = state["wall_seconds"]
        for name, system in m.linear_systems().items():
            system.iterations[:] = state["iterations"].get(name, [])
        for recorder in self.recorders:
            recorder.restart(self.rows)
        self.log.say(f"  resumed at t = {self.t / 60:.1f} min (step {self.steps}) from {self.restart}")

    def iterations(self) -> dict[str, dict[str, float]]:
        return {
            k: {
                "solves": len(s.iterations),
                "mean": float(np.mean(s.iterations)) if s.iterations else 0.0,
                "max": int(max(s.iterations)) if s.iterations else 0,
            }
            for k, s in self.model.linear_systems().items()
        }

    # --------------------------------------------------------------------------------------- records
    def balance(self, a: Agent) -> dict[str, float]:
        """Where the dose of agent ``a`` is now (kg), and the relative balance error."""
        inv = a.transport.inventory()
        c = a.circuit
        parts = {
            **c.amounts(),
            "tissue_free": inv["free"],
            "tissue_albumin_bound": inv["albumin_bound"],
            "tissue_cellular": inv["cellular"],
            "tissue_bound": inv["bound"],
            "hydrolysed_tissue": a.hydrolysed_tissue,
            "hydrolysed_perfusate": c.totals["perfusate_hydrolysed"],
            "cleared": c.totals["cleared"],
            "washed_out": c.totals["washed_out"],
            "boundary_out": a.boundary_out,
        }
        dosed = c.totals["dosed"]
        accounted = sum(parts.values())
        parts["dosed"] = dosed
        parts["relative_error"] = abs(dosed - accounted) / dosed if dosed > 0 else 0.0
        return parts

    def _record(self, t: float) -> None:
        m = self.model
        regions = list(m.tm.regions)
        row: dict[str, float] = {"time_min": t / 60.0}
        row["inflow_temperature_degC"] = m.inflow_temperature(t) - 273.15
        if m.probes is not None:
            row["probe_mean_degC"] = m.probe_temperature() - 273.15
        for region, T in m.region_temperatures().items():
            row[f"T_{region}_mean_degC"] = T - 273.15
        if "tumour" in regions:
            (p_total,) = m.integrals(("tumour", "one", m.pressure.p.x.array))
            row["p_tumour_mean_Pa"] = p_total / m.volumes["tumour"]
            self.pressure_history.append((t, row["p_tumour_mean_Pa"]))
        if self.tumour_surface is not None:  # interstitial fluid across the tumour surface (flux integrals)
            row.update(interface.series_columns(self.tumour_surface()))
        if m.metabolism is not None:
            mb = m.metabolism
            row["limb_pH"] = mb.ph
            row["lactate_rise_mmol_per_L"] = mb.lactate_rise
            row["oxygen_left_mL"] = mb.oxygen * 1e6
        for a in m.agents:
            b = self.balance(a)
            C, C_c, A = a.transport.fields()
            row[f"{a.name}_perfusate_mg_per_L"] = a.circuit.C_p * 1e3
            row[f"{a.name}_systemic_mg_per_L"] = a.circuit.C_s * 1e3
            dosed = b["dosed"]
            row[f"{a.name}_leak_fraction"] = a.circuit.totals["leaked"] / dosed if dosed > 0 else 0.0
            row[f"{a.name}_lymph_pool_mg"] = a.circuit.lymph_pool * 1e6
            free_regions = [r for r in ("tumour", "muscle", "skin") if r in regions]
            for region, total in zip(free_regions, m.integrals(*((r, "one", C) for r in free_regions)), strict=True):
                row[f"{a.name}_C_{region}_mean_mg_per_L"] = total / m.volumes[region] * 1e3
            # parent drug per gram of wet tissue as the clinic measures it (Klaase 1994): free, albumin-bound and
            # cellular drug, and the drug in the tissue's own blood; adducts apart (MODEL.md section 8)
            total_regions = [r for r in ("tumour", "muscle", "fat", "skin") if r in regions]
            storage = f"storage_{a.name}"
            terms = [(r, w, f) for r in total_regions for w, f in ((storage, C), ("phi_c", C_c), ("one", A))]
            parts = np.reshape(m.integrals(*terms), (len(total_regions), 3))
            for region, (held, cellular, adducts) in zip(total_regions, parts, strict=True):
                tissue, vol = m.tissue[region], m.volumes[region]
                parent = held + cellular + tissue.blood_volume * a.circuit.plasma * vol
                row[f"{a.name}_tissue_{region}_ug_per_g"] = parent / (tissue.density * vol) * 1e6
                row[f"{a.name}_adducts_{region}_mean_mg_per_L"] = adducts / vol * 1e3
            row[f"{a.name}_balance_relative_error"] = b["relative_error"]
        if m.agents:  # the clinic's leak: systemic tracer against complete mixing (one circuit: the first's)
            row["tracer_leak_fraction"] = m.agents[0].circuit.tracer_leak
        self.rows.append(row)
        output_time = self._is_output_time(t)
        if self.storage is None:
            for recorder in self.recorders:
                recorder.record(t, row, output_time)
            return
        fields = t == 0.0 or output_time  # the field files grow: room for them is checked first
        self.storage.check(
            self.storage.need("fields", self._field_bytes()) if fields else 0, f"the fields at t = {t / 60:g} min"
        )
        with self.storage.measured("fields" if fields else "row"):
            for recorder in self.recorders:  # one at a time: a failed write on rank 0 skips no collective call
                with self.storage.caught(f"the outputs at t = {t / 60:g} min"):
                    recorder.record(t, row, output_time)

    def _field_bytes(self) -> int:
        """About what one output time adds to the field files before one was measured: every field (agent fields
        per agent, the velocity as 3, the region ids) in every format, 8 bytes a value."""
        dofs = self.model.V.dofmap.index_map.size_global
        arrays = len(self.model.case.output.fields) * max(1, len(self.model.agents)) + 4
        return 8 * arrays * dofs * max(1, len(self.model.case.output.formats)) + 256 * 1024

    def _is_output_time(self, t: float) -> bool:
        interval = self.model.case.output.interval
        if interval is None:
            return abs(t - self.end) < 1e-9
        k = round(t / interval)
        return abs(t - k * interval) < 1e-6 * interval or abs(t - self.end) < 1e-9

    def _row_at(self, t: float) -> dict[str, float] | None:
        """The recorded row at time t (s), if there is one."""
        return next((r for r in self.rows if abs(r["time_min"] * 60.0 - t) < 1e-6 * max(t, 1.0)), None)

    def _perfusate_curve(self, a: Agent) -> dict[str, float]:
        """The perfusate curve as the clinic reads it: peak, AUC while isolated, the half-life of its fall
        from the peak to the end of perfusion (log-linear least squares), and perfusate/systemic AUC."""
        p = self.model.case.protocol
        key = f"{a.name}_perfusate_mg_per_L"
        values = [(r["time_min"], r[key]) for r in self.rows if key in r]
        peak_time, peak = max(values, key=lambda tv: tv[1], default=(0.0, 0.0))
        end = p.perfusion_duration / 60.0 if p else 0.0
        fall = np.array([(t, v) for t, v in values if peak_time <= t <= end and v > 0])
        half_life = float("nan")
        if len(fall) >= 3:
            slope = np.polyfit(fall[:, 0], np.log(fall[:, 1]), 1)[0]
            half_life = float(np.log(2) / -slope) if slope < 0 else float("inf")
        systemic = clinical("AUC", a.auc_systemic)
        perfusate = clinical("AUC", a.auc_perfusate)
        out = {
            "peak_perfusate_mg_per_L": peak,
            "perfusate_auc_mg_min_per_L": perfusate,
            "perfusate_systemic_auc_ratio": perfusate / systemic if systemic > 0 else 0.0,
        }
        if np.isfinite(half_life):
            out["perfusate_half_life_min"] = half_life
        return out

    def summary(self) -> dict:
        m = self.model
        s: dict = {"title": m.case.title, "limb_volume_m3": m.limb_volume, "agents": {}, "regions": {}}
        primary = m.agents[0] if m.agents else None
        for a in m.agents:
            b = self.balance(a)
            s["agents"][a.name] = {
                "dose_kg": b["dosed"],
                "balance_kg": b,
                "drug_balance_relative_error": b["relative_error"],
                # drug leaked to the body through the tourniquet while isolated, as a fraction of the dose
                "systemic_leak_fraction": a.circuit.totals["leaked"] / b["dosed"] if b["dosed"] else 0.0,
                "peak_systemic_mg_per_L": max(r.get(f"{a.name}_systemic_mg_per_L", 0.0) for r in self.rows),
                "systemic_auc_mg_min_per_L": clinical("AUC", a.auc_systemic),  # release and after included
                "released_to_body_kg": a.circuit.totals["released"],  # blood and lymph pool at release
                **self._perfusate_curve(a),
            }
            c = a.circuit
            if c.clearance > 0:  # extrapolated to infinite time with the body's elimination; the drug still in
                # the limb returning to blood after the run is not counted (a lower bound), for PK comparisons
                tail = c.C_s * c.V_s / c.clearance
                s["agents"][a.name]["systemic_auc_inf_mg_min_per_L"] = clinical("AUC", a.auc_systemic + tail)
            s["agents"][a.name]["marrow_surviving_fraction"] = self._marrow(a)
        s["drug_balance_relative_error"] = max(
            (v["drug_balance_relative_error"] for v in s["agents"].values()), default=0.0
        )
        s["systemic_leak_fraction"] = s["agents"][primary.name]["systemic_leak_fraction"] if primary else 0.0
        isolation = [r for r in self.rows if r["time_min"] * 60.0 <= self.schedule.release_time * (1 + 1e-12)]
        s["tracer_leak_fraction"] = max((r.get("tracer_leak_fraction", 0.0) for r in isolation), default=0.0)
        end_of_perfusion = self._row_at(m.case.protocol.perfusion_duration) if m.case.protocol else None
        if m.probes is not None and m.case.protocol is not None:  # the clinic's band, once the limb is warm
            settled = [
                r["probe_mean_degC"]
                for r in self.rows
                if PROBE_SETTLING <= r["time_min"] * 60.0 <= m.case.protocol.perfusion_duration * (1 + 1e-12)
            ]
            if settled:
                s["probe_temperature_degC"] = {"min": min(settled), "max": max(settled)}
        # fluid across the tumour surface at the end of perfusion (ILP's raised capillary pressure), else now
        surface = self.tumour_surface() if self.tumour_surface is not None else None
        s.update(interface.outcomes(surface, end_of_perfusion))
        for region, vol in m.volumes.items():
            (p_total,) = m.integrals((region, "one", m.pressure.p.x.array))
            entry = {
                "volume_m3": vol,
                "mass_kg": m.tissue[region].density * vol,
                "pressure_mean_Pa": p_total / vol,
                "temperature_max_degC": self.region_max(region, m.T_peak) - 273.15,
                "cem43_max_min": self.region_max(region, m.cem43),
                "time_above_40C_max_min": self.region_max(region, m.time_above_40C) / 60.0,
            }
            if primary is not None:
                nodal = (primary.auc_free, primary.auc_cell, primary.transport.fields()[2])
                totals = m.integrals(*((region, "one", values) for values in nodal))
                for key, total in zip(("auc_free_mean", "auc_cell_mean", "adducts_mean"), totals, strict=True):
                    entry[key] = total / vol
                entry["peak_free_max"] = self.region_max(region, primary.peak_free)
                key = f"{primary.name}_tissue_{region}_ug_per_g"
                if end_of_perfusion is not None and key in end_of_perfusion:
                    entry["tissue_drug_ug_per_g"] = end_of_perfusion[key]
                entry.update(self._kill(region, m.log10_kill(primary)))
            s["regions"][region] = entry
        if m.metabolism is not None:
            mb = m.metabolism
            s["metabolism"] = {
                "pH": mb.ph,
                "base_excess_mmol_per_L": mb.base_excess,
                "lactate_made_mmol": mb.lactate * 1e3,
                "lactate_rise_mmol_per_L": mb.lactate_rise,
                "oxygen_used_mL": mb.oxygen_used * 1e6,
                "uptake_factor": mb.uptake_factor,
            }
        if primary is not None:
            s["primary_agent"] = primary.name
            s["marrow_surviving_fraction"] = s["agents"][primary.name]["marrow_surviving_fraction"]
            s["units"] = {
                "auc_free_mean": "kg s/m^3",
                "auc_cell_mean": "kg s/m^3",
                "adducts_mean": "kg/m^3",
                "peak_free_max": "kg/m^3",
                "log10_kill_mean": "1: -log10 of the surviving fraction",
                "kill_coverage": "1: volume fraction with surviving fraction < 0.01",
            }
        return s

    def _kill(self, region: str, kill: np.ndarray) -> dict:
        """Tumour-kill outcomes of a region from the nodal log10 kill (MODEL.md section 8): its volume mean, the
        volume fraction with SF < 0.01 (coverage) and the survival-volume histogram (volume fraction with at least
        each log10 kill), all reduced over ranks."""
        m = self.model
        (total,) = m.integrals((region, "one", kill))
        top = self.region_max(region, kill)
        levels = np.linspace(0.0, top, HISTOGRAM_LEVELS) if top > 0 else np.zeros(1)
        covered = np.nextafter(effects.LOG10_KILL_COVERED, np.inf)  # strictly above 2 logs: SF < 0.01
        coverage, *reached = m.fractions(region, kill, np.array([covered, *levels]))
        return {
            "log10_kill_mean": total / m.volumes[region],
            "kill_coverage": float(coverage),
            "kill_volume_histogram": {"log10_kill": levels.tolist(), "volume_fraction": list(map(float, reached))},
        }

    def _marrow(self, a: Agent) -> float:
        """Marrow progenitor surviving fraction: exp(-k_marrow f_u AUC) with the systemic AUC of the body's
        plasma (total drug, extrapolated to infinity with the body's clearance where it has one: the marrow's
        exposure goes on after the run) times the plasma's unbound fraction (docs/model.md, Effects)."""
        c = a.circuit
        auc = a.auc_systemic + (c.C_s * c.V_s / c.clearance if c.clearance > 0 else 0.0)
        return effects.marrow_surviving_fraction(auc, a.params.f_u, a.params.marrow_kill_constant)


def run_case(
    case: Case,
    folder: Path,
    comm: MPI.Comm,
    quiet: bool = False,
    argv: list[str] | None = None,
    source: Path | None = None,
    stopping: Stopping | None = None,
    restart: Path | None = None,
) -> RunResult:
    """Mesh, build, run and write a case into ``folder`` (the caller decides whether it may be written).

    Writes the fields, ``case.toml`` (a copy of ``source``), ``timeseries.csv``, ``summary.json``,
    ``case_resolved.json`` (SI), ``provenance.json``, ``run.log`` and ``open_in_paraview.py``. With
    ``restart`` (a checkpoint folder inside ``folder``) the run continues from it and its files are continued.
    Raises :class:`RunStopped` when ``stopping`` ends the run early; a finished run removes its checkpoint.
    """
    started = provenance.now()
    storage = Storage(comm, folder)  # an I/O error on any rank, or too little room, ends every rank in one line
    if comm.rank == 0:
        with storage.caught("case.toml"):
            folder.mkdir(parents=True, exist_ok=True)
            if source is not None and restart is None:  # the case file as given, beside case_resolved.json (SI)
                shutil.copyfile(source, folder / "case.toml")
    storage.check(0, "case.toml")
    log = RunLog(comm, folder / results.RUN_LOG, quiet, storage)
    say = log.say
    start = time.perf_counter()
    say(f"isolimb: {case.title} on {comm.size} rank(s)")
    tm = meshing.generate(case, comm)
    stats = meshing.mesh_statistics(tm)
    size = mesh_bytes(int(stats["cells"]), int(stats["vertices"]))  # type: ignore[call-overload]
    if restart is None:
        storage.check(size, "mesh.xdmf")
        meshing.write_mesh(tm, folder)
    mesh_seconds = time.perf_counter() - start
    say(f"  mesh: {stats['cells']} cells, {stats['vertices']} vertices ({mesh_seconds:.1f} s)")
    model = CoupledModel(case, tm)
    dofs = {"pressure": model.V.dofmap.index_map.size_global}
    for a in model.agents:
        dofs[f"transport_{a.name}"] = a.transport.unknowns
    say(f"  dofs: {dofs}")
    stopping = stopping or Stopping()
    storage.check(2 * size, "the field files")  # VTKHDF and XDMF begin with the mesh
    sim = Simulation(model, folder, log, stopping, restart, storage)
    log.start(sim.end)
    if stopping.signals is not None:
        stopping.signals.install()
    try:
        result = sim.run()
    except RunStopped as stopped:
        log.stop()
        say(f"isolimb: {stopped}")
        say(f"  continue with: isolimb run <case> --resume {folder}  (on any number of ranks)")
        log.close()
        model.destroy()
        raise
    except SolveError as err:  # raised on every rank alike: the last line of run.log says why
        log.stop()
        say(f"isolimb: the solver gave up: {err}")
        log.close()
        model.destroy()
        raise
    finally:
        log.stop()
        if stopping.signals is not None:
            stopping.signals.uninstall()
    result.summary["mesh"] = {**stats, "seconds": mesh_seconds}
    result.summary["dofs"] = dofs
    result.summary["ranks"] = comm.size
    storage.check(256 * 1024, "summary.json")
    with storage.caught("summary.json"):
        write_json(comm, folder / results.SUMMARY, result.summary)
    with storage.caught("case_resolved.json"):
        write_json(comm, folder / results.CASE_RESOLVED, json.loads(case.model_dump_json()))
    if comm.rank == 0:
        facts = {
            "mesh": result.summary["mesh"],
            "dofs": dofs,
            "steps": result.summary["steps"],
            "wall_seconds": time.perf_counter() - start,
            "phase_seconds": result.summary["phase_seconds"],
            "krylov_iterations": result.summary["krylov_iterations"],
        }
        solvers = {name: system.describe() for name, system in model.linear_systems().items()}
        with storage.caught("provenance.json"):
            record = provenance.provenance(comm, started, argv or [], solvers, facts)
            write_json(comm, folder / results.PROVENANCE, record)
        with storage.caught(results.PARAVIEW_SCRIPT):
            if (folder / results.FIELDS_VTKHDF).exists():
                paraview.write_script(folder)
        for stale in (checkpoint.NAME, f".{checkpoint.NAME}.old"):  # a finished run has nothing to resume
            shutil.rmtree(folder / stale, ignore_errors=True)
    model.destroy()  # PETSc solvers, matrices and their options: nothing leaks into a next run in this process
    storage.check(0, "the results")  # every rank returns with every file in place, or every rank fails alike
    s = result.summary
    headline = f"balance error {s['drug_balance_relative_error']:.1e}"
    if model.agents:
        tracer, drug = 100 * s["tracer_leak_fraction"], 100 * s["systemic_leak_fraction"]
        headline += f", tracer leak {tracer:.2f} % (drug leaked {drug:.2f} %)"
    if "tumour" in s["regions"] and model.agents:
        auc = clinical("AUC", s["regions"]["tumour"]["auc_free_mean"])
        headline += f", tumour free-drug AUC {auc:.1f} mg min/L"
    say(f"isolimb: done in {time.perf_counter() - start:.0f} s; {headline}; results in {folder}/")
    say(f"  next: isolimb report {folder}  (or open {folder}/open_in_paraview.py with pvpython)")
    log.close()
    return result
