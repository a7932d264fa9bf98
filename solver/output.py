"""Writers: ParaView fields (VTX .bp, one writer per element family), the time-series CSV (appended
row by row) and JSON summaries (written atomically). Physics modules know nothing of file formats.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from dolfinx import fem
from dolfinx.io import VTXWriter
from mpi4py import MPI


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class FieldWriter:
    """VTX series: one ``.bp`` folder per element family (mixing DG0 with others is broken upstream)."""

    def __init__(self, comm: MPI.Comm, folder: Path, functions: list[fem.Function]) -> None:
        families: dict[str, list[fem.Function]] = {}
        for f in functions:
            e = f.function_space.ufl_element()
            key = f"{e.family_name}{e.embedded_superdegree}"
            families.setdefault(key, []).append(f)
        self.writers = [VTXWriter(comm, folder / f"fields_{key}.bp", fs, engine="BP4") for key, fs in families.items()]

    def write(self, t: float) -> None:
        for w in self.writers:
            w.write(t)

    def close(self) -> None:
        for w in self.writers:
            w.close()


class SeriesTable:
    """A CSV time series: rank 0 writes the header once, then appends and flushes one row per call."""

    def __init__(self, comm: MPI.Comm, path: Path) -> None:
        self.comm, self.path = comm, path
        self._writer: csv.DictWriter | None = None
        self._file: io.TextIOWrapper | None = None

    def append(self, row: dict[str, float]) -> None:
        if self.comm.rank != 0:
            return
        if self._writer is None:
            self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        assert self._file is not None
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def write_json(comm: MPI.Comm, path: Path, data: dict) -> None:
    if comm.rank == 0:
        write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
