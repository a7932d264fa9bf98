"""Writers: ParaView fields (VTX .bp, one writer per element family), the time-series CSV and JSON
summaries, written atomically. Physics modules know nothing of file formats.
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
    """A CSV time series written by rank 0, rewritten atomically after every row."""

    def __init__(self, comm: MPI.Comm, path: Path) -> None:
        self.comm, self.path = comm, path
        self.rows: list[dict[str, float]] = []

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.comm.rank == 0:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
            write_atomic(self.path, buffer.getvalue())


def write_json(comm: MPI.Comm, path: Path, data: dict) -> None:
    if comm.rank == 0:
        write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
