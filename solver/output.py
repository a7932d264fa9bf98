"""Writers: ParaView fields (VTX .bp, one writer per element family), the time-series CSV (appended
row by row) and JSON summaries (written atomically). Physics modules know nothing of file formats.
"""

from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from dolfinx import fem
from dolfinx.io import VTXWriter, XDMFFile
from mpi4py import MPI

from solver.vtkhdf import VTKHDFWriter


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
}
FORMATS = ("vtx", "vtkhdf", "xdmf")
XINCLUDE = "https://www.w3.org/2001/XInclude"


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
    - ``fields.xdmf`` (+ ``.h5``): the same arrays for ParaView 5.11 and older.
    """

    def __init__(
        self,
        folder: Path,
        sources: dict[str, tuple[str, fem.Function]],
        region_tags,
        formats: tuple[str, ...] = FORMATS,
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
        region = fem.Function(fem.functionspace(mesh, ("DG", 0)), name="region")
        region.x.array[region_tags.indices] = region_tags.values
        self.region = region
        self.writers: list = []
        if "vtx" in formats:
            families: dict[str, list[fem.Function]] = {}
            for f in self.native.values():
                e = f.function_space.ufl_element()
                families.setdefault(f"{e.family_name}{e.embedded_superdegree}", []).append(f)
            self.writers += [VTXWriter(comm, folder / f"fields_{k}.bp", fs, engine="BP4") for k, fs in families.items()]
        point = [f for f in self.linear.values() if not f.function_space.ufl_element().discontinuous]
        cell = [f for f in self.linear.values() if f.function_space.ufl_element().discontinuous]
        self.vtkhdf = None
        if "vtkhdf" in formats:
            ids = region.x.array.astype(np.int32)
            self.vtkhdf = VTKHDFWriter(folder / "fields.vtkhdf", mesh, {"region": ids}, point, cell)
        self.xdmf = None
        if "xdmf" in formats:
            self.xdmf_path = folder / "fields.xdmf"
            self.xdmf = XDMFFile(comm, self.xdmf_path, "w")
            self.xdmf.write_mesh(mesh)
        self.xdmf_fields = point + cell

    def write(self, t: float) -> None:
        """Convert every source to its presentation unit and write all formats at time ``t`` (s)."""
        for name, (key, f) in self.sources.items():
            self.native[name].x.array[:] = clinical(key, f.x.array)
            if self.linear[name] is not self.native[name]:
                self.linear[name].interpolate(self.native[name])
        for w in self.writers:
            w.write(t)
        if self.vtkhdf is not None:
            self.vtkhdf.write(t)
        if self.xdmf is not None:
            for f in [*self.xdmf_fields, self.region]:
                self.xdmf.write_function(f, t)

    def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.xdmf is not None:
            self.xdmf.close()
            if self.region.function_space.mesh.comm.rank == 0:
                merge_xdmf_fields(self.xdmf_path)


def merge_xdmf_fields(path: Path) -> None:
    """Rewrite dolfinx's XDMF (one temporal collection per function) as one collection with one grid per time
    holding every array, so that ParaView shows one dataset with all fields instead of one block per field."""
    ET.register_namespace("xi", XINCLUDE)
    tree = ET.parse(path)
    domain = tree.getroot().find("Domain")
    assert domain is not None
    collections = [g for g in domain.findall("Grid") if g.get("GridType") == "Collection"]
    by_time: dict[str, ET.Element] = {}
    for collection in collections:
        for grid in collection.findall("Grid"):
            time_ = grid.find("Time")
            assert time_ is not None
            key = time_.get("Value", "0")
            if key not in by_time:
                merged = ET.Element("Grid", Name="fields", GridType="Uniform")
                merged.extend([e for e in grid if e.tag != "Attribute"])
                by_time[key] = merged
            by_time[key].extend(grid.findall("Attribute"))
        domain.remove(collection)
    series = ET.SubElement(domain, "Grid", Name="fields", GridType="Collection", CollectionType="Temporal")
    series.extend(by_time[k] for k in sorted(by_time, key=float))
    ET.indent(tree)
    write_atomic(path, '<?xml version="1.0"?>\n' + ET.tostring(tree.getroot(), encoding="unicode") + "\n")


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
