"""What a run tells its user: a progress bar with ETA on rank 0 when standard output is a terminal, plain
lines otherwise, and every line also in the results folder's ``run.log``. ``quiet`` silences the terminal,
never the log. Other ranks say nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from mpi4py import MPI
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunLog:
    """Rank-0 messages of one run: terminal (unless quiet) and ``run.log`` (when a folder is given)."""

    def __init__(self, comm: MPI.Comm, log_path: Path | None = None, quiet: bool = False, storage=None) -> None:
        """``storage`` (solver.storage.Storage): where an error writing ``run.log`` is noted, to end every rank at
        its next check; without one the error is raised here."""
        self.active = comm.rank == 0
        self.quiet = quiet
        self.storage = storage
        self._log: TextIO | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.active and log_path is not None:
            try:
                self._log = open(log_path, "a", buffering=1)  # noqa: SIM115 (closed in close())
            except OSError as err:
                if storage is None:
                    raise
                storage.note(err, "run.log")

    def say(self, text: str) -> None:
        """A line for the user and the log."""
        if not self.active:
            return
        if self._log is not None:
            try:
                self._log.write(text + "\n")
            except OSError as err:  # a full disk: the terminal still gets the line, the run stops at its next check
                self._drop_log(err)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def start(self, end_time: float) -> None:
        """Begin the bar over simulated time 0 .. ``end_time`` (s), on a terminal only."""
        if not self.active or self.quiet or not sys.stdout.isatty():
            return
        self._bar = Progress(
            TextColumn("  simulating"),
            BarColumn(),
            TextColumn("{task.completed:.1f}/{task.total:.1f} min"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stdout),
            transient=True,
        )
        self._task = self._bar.add_task("run", total=end_time / 60.0, info="")
        self._bar.start()

    def advance(self, t: float, info: str = "") -> None:
        """Simulated time reached ``t`` (s)."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=t / 60.0, info=info)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _drop_log(self, err: OSError) -> None:
        log, self._log = self._log, None
        try:
            if log is not None:
                log.close()
        except OSError:
            pass
        if self.storage is None:
            raise err
        self.storage.note(err, "run.log")

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            try:
                self._log.close()
            except OSError as err:
                self._log = None
                if self.storage is None:
                    raise
                self.storage.note(err, "run.log")
            self._log = None
