"""Recorders: what the time loop hands each recorded time to (the initial state and every accepted step).

The loop computes one row of observations per time (solver.simulation) and passes ``(t, row, output_time)``
to each recorder; a recorder decides what to keep: the time series (``timeseries.csv``), the fields
(VTX/VTKHDF/XDMF at output times), the progress on the terminal and in ``run.log``. A new output is a new
recorder, not an edit of the loop. Checkpoints are the loop's stop policy, not a recorder.
"""

from __future__ import annotations

import time
from pathlib import Path

from dolfinx import fem

from solver.coupling import CoupledModel
from solver.output import FieldOutput, SeriesTable, array_name
from solver.progress import RunLog


class Recorder:
    """Receives every recorded time; ``seconds`` is the wall time it spent (s)."""

    seconds = 0.0

    def record(self, t: float, row: dict[str, float], output_time: bool) -> None:
        raise NotImplementedError

    def restart(self, rows: list[dict[str, float]]) -> None:
        """Continue after the rows already recorded before a checkpoint."""

    def close(self) -> None:
        """The run ended or stopped: flush and close files."""


class SeriesRecorder(Recorder):
    """Every row into ``timeseries.csv``."""

    def __init__(self, comm, path: Path) -> None:
        self.table = SeriesTable(comm, path)

    def record(self, t: float, row: dict[str, float], output_time: bool) -> None:
        self.table.append(row)

    def restart(self, rows: list[dict[str, float]]) -> None:
        self.table.restart(rows)

    def close(self) -> None:
        self.table.close()


class FieldRecorder(Recorder):
    """The case's output fields, in clinical units, at t = 0 and at output times (solver.output)."""

    def __init__(self, model: CoupledModel, folder: Path, resume_at: float | None) -> None:
        self.model = model
        self.sources = self.output_sources(model)
        formats = tuple(model.case.output.formats)
        self.writer = (
            FieldOutput(folder, self.sources, model.tm.cell_tags, formats, resume_at=resume_at)
            if self.sources
            else None
        )

    @staticmethod
    def output_sources(model: CoupledModel) -> dict[str, tuple[str, fem.Function]]:
        """Output array name -> (presentation key, function in SI units) for the case's output fields."""
        wanted = set(model.case.output.fields)
        shared = (("p", model.pressure.p), ("u", model.pressure.u), ("T", model.T))
        out: dict[str, tuple[str, fem.Function]] = {array_name(k): (k, f) for k, f in shared if k in wanted}
        if "CEM43" in wanted:
            out[array_name("CEM43")] = ("CEM43", fem.Function(model.V))
        for a in model.agents:
            for key in ("C", "C_c", "A", "AUC"):
                if key in wanted:
                    out[array_name(key, a.name)] = (key, fem.Function(model.V))
            if "log10_kill" in wanted:  # optional output field "log10_kill": array kill_<agent>_log10
                out[array_name("kill", a.name)] = ("kill", fem.Function(model.V))
        return out

    def _refresh(self) -> None:
        """Copy the model's nodal outcomes into the output Functions."""
        o, m = self.sources, self.model
        if array_name("CEM43") in o:
            o[array_name("CEM43")][1].x.array[:] = m.cem43
        for a in m.agents:
            C, C_c, A = a.transport.fields()
            for key, values in (("C", C), ("C_c", C_c), ("A", A), ("AUC", a.auc_free)):
                if array_name(key, a.name) in o:
                    o[array_name(key, a.name)][1].x.array[:] = values
            if array_name("kill", a.name) in o:
                o[array_name("kill", a.name)][1].x.array[:] = m.log10_kill(a)

    def record(self, t: float, row: dict[str, float], output_time: bool) -> None:
        if self.writer is None or not (t == 0.0 or output_time):
            return
        start = time.perf_counter()
        self._refresh()
        self.writer.write(t)
        self.seconds += time.perf_counter() - start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressRecorder(Recorder):
    """The progress bar and, at output times, a line with the perfusate and tumour headline."""

    def __init__(self, log: RunLog, model: CoupledModel) -> None:
        self.log, self.model = log, model

    def record(self, t: float, row: dict[str, float], output_time: bool) -> None:
        m, extra = self.model, ""
        if m.agents:
            name = m.agents[0].name
            extra = f"perfusate {name} {row[f'{name}_perfusate_mg_per_L']:.3g} mg/L"
        if "tumour" in m.tm.regions:
            extra += f"  tumour {row['T_tumour_mean_degC']:.1f} degC"
        self.log.advance(t, extra)
        if output_time:
            self.log.say(f"  t = {t / 60:6.1f} min  {extra}")


__all__ = ["FieldRecorder", "ProgressRecorder", "Recorder", "SeriesRecorder"]
