"""Writers: ParaView fields (VTX .bp, one writer per element family), the time-series CSV (appended
row by row) and JSON summaries (written atomically). Physics modules know nothing of file formats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from dolfinx import fem
from dolfinx.io import VTXWriter
from mpi4py import MPI

from solver import results
from solver.gathered import GatheredFieldWriter


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# Output arrays are in clinical units, named with them: key -> (unit suffix, scale, offset) from SI.
PRESENTATION: dict[str, tuple[str, float, float]] = {
    "p": ("mmHg", 1.0 / 133.322387415, 0.0),
    "u": ("um_per_s", 1e6, 0.0),
    "T": ("degC", 1.0, -273.15),
    "CEM43": ("min", 1.0, 0.0),  # already equivalent minutes at 43 C
    "C": ("mg_per_L", 1e3, 0.0),  # kg/m^3 -> mg/L
    "C_c": ("mg_per_L", 1e3, 0.0),
    "A": ("mg_per_L", 1e3, 0.0),
    "AUC": ("mg_min_per_L", 1e3 / 60.0, 0.0),  # kg s/m^3 -> mg min/L
    "kill": ("log10", 1.0, 0.0),  # log10 kill of tumour cells (-log10 of the surviving fraction)
}
FORMATS = ("vtx", "vtkhdf", "xdmf")


def clinical[V: (float, np.ndarray)](key: str, si_value: V) -> V:
    """A value in SI units in the clinical unit of quantity ``key`` (``clinical("p", 4000.0)`` -> 30 mmHg)."""
    _, scale, offset = PRESENTATION[key]
    return scale * si_value + offset


def array_name(key: str, agent: str | None = None) -> str:
    """Name of an output array with its unit, e.g. ``T_degC`` or ``AUC_melphalan_mg_min_per_L``."""
    unit = PRESENTATION[key][0]
    return f"{key}_{agent}_{unit}" if agent else f"{key}_{unit}"


class FieldOutput:
    """All field files of a run, from functions in SI units, written at each output time.

    - ``fields_<family><degree>.bp``: VTX (ADIOS2 BP4), each field at its own degree, one writer per element
      family (mixing DG0 with others in one writer is broken upstream); ParaView >= 5.12.
    - ``fields.vtkhdf``: P1 point and DG0 cell arrays plus ``region``; pyvista and ParaView >= 5.12.
    - ``fields.xdmf`` (+ ``fields.h5``): the same arrays for ParaView 5.11 and older.

    ``resume_at`` (s): continue the files of a stopped run from its checkpoint time. VTKHDF and XDMF are cut back
    to that time and appended to; ADIOS2 cannot append through dolfinx, so VTX goes on in new files
    ``fields_<family><degree>.part<k>.bp`` (k = 2, 3, ...).
    """

    def __init__(
        self,
        folder: Path,
        sources: dict[str, tuple[str, fem.Function]],
        region_tags,
        formats: tuple[str, ...] = FORMATS,
        resume_at: float | None = None,
    ) -> None:
        """``sources``: array name -> (presentation key, function in SI units)."""
        self.sources = sources
        first = next(iter(sources.values()))[1]
        mesh = first.function_space.mesh
        comm = mesh.comm
        self.native = {n: fem.Function(f.function_space, name=n) for n, (_, f) in sources.items()}
        P1 = fem.functionspace(mesh, ("Lagrange", 1))
        self.linear: dict[str, fem.Function] = {}
        for n, f in self.native.items():
            e, space = f.function_space.ufl_element(), f.function_space
            if e.discontinuous:  # cell data: DG0
                lowered = (
                    space if e.embedded_superdegree == 0 else fem.functionspace(mesh, ("DG", 0, space.value_shape))
                )
            else:  # point data: P1
                lowered = space if e.embedded_superdegree == 1 else P1
            self.linear[n] = f if lowered is f.function_space else fem.Function(lowered, name=n)
        self.writers: list = []
        if "vtx" in formats:
            families: dict[str, list[fem.Function]] = {}
            for f in self.native.values():
                e = f.function_space.ufl_element()
                families.setdefault(f"{e.family_name}{e.embedded_superdegree}", []).append(f)
            part = _next_vtx_part(comm, folder) if resume_at is not None else ""
            self.writers += [
                VTXWriter(comm, folder / f"fields_{k}{part}.bp", fs, engine="BP4") for k, fs in families.items()
            ]
        self.gathered = None
        if "vtkhdf" in formats or "xdmf" in formats:
            point = [f for f in self.linear.values() if not f.function_space.ufl_element().discontinuous]
            cell = [f for f in self.linear.values() if f.function_space.ufl_element().discontinuous]
            ids = np.zeros(mesh.topology.index_map(3).size_local + mesh.topology.index_map(3).num_ghosts, np.int32)
            ids[region_tags.indices] = region_tags.values
            self.gathered = GatheredFieldWriter(
                mesh,
                {"region": ids},
                point,
                cell,
                vtkhdf=folder / results.FIELDS_VTKHDF if "vtkhdf" in formats else None,
                xdmf=folder / results.FIELDS_XDMF if "xdmf" in formats else None,
                resume_at=resume_at,
            )

    def write(self, t: float) -> None:
        """Convert every source to its presentation unit and write all formats at time ``t`` (s)."""
        for name, (key, f) in self.sources.items():
            self.native[name].x.array[:] = clinical(key, f.x.array)
            if self.linear[name] is not self.native[name]:
                self.linear[name].interpolate(self.native[name])
        for w in self.writers:
            w.write(t)
        if self.gathered is not None:
            self.gathered.write(t)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def _next_vtx_part(comm: MPI.Comm, folder: Path) -> str:
    """Suffix of the first unused VTX part (".part2", ".part3", ...), the same on every rank."""
    k = 2
    if comm.rank == 0:
        while any(folder.glob(f"fields_*.part{k}.bp")):
            k += 1
    return f".part{comm.bcast(k, root=0)}"


class SeriesTable:
    """A CSV time series: rank 0 writes the header once, then appends and flushes one row per call."""

    def __init__(self, comm: MPI.Comm, path: Path) -> None:
        self.comm, self.path = comm, path
        self._writer: csv.DictWriter | None = None
        self._file: io.TextIOWrapper | None = None

    def _start(self, fieldnames: list[str]) -> csv.DictWriter:
        """(Re)write the file from its header (rank 0)."""
        self.close()
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._writer = csv.DictWriter(self._file, fieldnames=fieldnames)
        self._writer.writeheader()
        return self._writer

    def append(self, row: dict[str, float]) -> None:
        if self.comm.rank != 0:
            return
        writer = self._writer or self._start(list(row))
        writer.writerow(row)
        assert self._file is not None
        self._file.flush()

    def restart(self, rows: list[dict[str, float]]) -> None:
        """Rewrite the file with ``rows`` (a checkpoint's, dropping any written after it); appends follow."""
        if self.comm.rank != 0 or not rows:
            return
        self._start(list(rows[0])).writerows(rows)
        assert self._file is not None
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class OutputError(RuntimeError):
    """An outcome that cannot be written as it is (one line, naming the file and the key)."""


def non_finite(data: object, prefix: str = "") -> tuple[str, float] | None:
    """The first dotted key of a JSON tree whose number is NaN or infinite, with the number (None if none)."""
    if isinstance(data, float):
        return None if math.isfinite(data) else (prefix.rstrip(".") or "(value)", data)
    if isinstance(data, dict):
        items: list[tuple[object, object]] = list(data.items())
    elif isinstance(data, (list, tuple)):
        items = list(enumerate(data))
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{prefix}{key}.")
        if found is not None:
            return found
    return None


def write_json(comm: MPI.Comm, path: Path, data: dict) -> None:
    """Write strict JSON on rank 0. A NaN or infinite number is an :class:`OutputError` naming its key, raised on
    every rank that calls this with the same data (outcomes are the same on every rank), before anything is
    written."""
    bad = non_finite(data)
    if bad is not None:
        key, value = bad
        raise OutputError(f"{path}: {key} = {value}: not a finite number; strict JSON cannot hold it")
    if comm.rank == 0:
        write_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")
