"""XDMF time series of the output fields, for ParaView 5.11 and older readers.

``fields.xdmf`` (XML) describes one temporal collection with one grid per output time holding every array;
the heavy data lies in ``fields.h5``: ``/mesh/geometry`` (points), ``/mesh/topology`` (linear tetrahedra),
static cell arrays under ``/static`` and ``/steps/<k>/<array>`` per output time (attribute ``time``, s).
Points and cells are in the mesh's input order, the same as ``fields.vtkhdf``. The XML is rewritten atomically
after every step, so the file is valid while a run goes on and after it stops. :class:`XDMFFile` is the rank-0
side; :mod:`solver.gathered` collects the data.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np


class XDMFFile:
    """The rank-0 writer of ``<name>.xdmf`` and its ``<name>.h5``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.h5_path = path.with_suffix(".h5")
        self.times: list[float] = []
        self.shapes: dict[str, tuple[str, int]] = {}  # array -> ("Node" | "Cell", block size)
        self.statics: list[str] = []
        self.totals = (0, 0)

    def create(
        self,
        points: np.ndarray,
        connectivity: np.ndarray,
        statics: dict[str, np.ndarray],
        point_names: list[str],
        cell_shapes: dict[str, int],
    ) -> None:
        self.totals = (points.shape[0], connectivity.shape[0])
        with h5py.File(self.h5_path, "w") as h5:
            h5["mesh/geometry"] = points
            h5["mesh/topology"] = connectivity
            for name, values in statics.items():
                h5[f"static/{name}"] = values.astype(np.int64)
            h5.create_group("steps")
        self.statics = list(statics)
        self.shapes = {n: ("Node", 1) for n in point_names} | {n: ("Cell", bs) for n, bs in cell_shapes.items()}
        self.times = []
        self._write_xml()

    def stored_points(self) -> np.ndarray:
        with h5py.File(self.h5_path, "r") as h5:
            return np.asarray(h5["mesh/geometry"][:])

    def reopen(self, until: float) -> None:
        """Continue an existing series: keep steps at times <= ``until`` (s)."""
        with h5py.File(self.h5_path, "a") as h5:
            self.totals = (h5["mesh/geometry"].shape[0], h5["mesh/topology"].shape[0])
            self.statics = list(h5["static"]) if "static" in h5 else []
            steps = h5["steps"]
            kept = []
            for k in sorted(steps, key=int):
                if float(steps[k].attrs["time"]) <= until * (1 + 1e-12) + 1e-9:
                    kept.append(float(steps[k].attrs["time"]))
                else:
                    del steps[k]
            self.times = kept
            if kept:
                first = steps["0"]
                self.shapes = {
                    n: ("Node", 1) if d.shape[0] == self.totals[0] else ("Cell", d.shape[1] if d.ndim > 1 else 1)
                    for n, d in first.items()
                }
        self._write_xml()

    def append(self, t: float, points: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> None:
        k = len(self.times)
        with h5py.File(self.h5_path, "a") as h5:
            group = h5.create_group(f"steps/{k}")
            group.attrs["time"] = t
            for name, values in {**points, **cells}.items():
                group[name] = values
        self.shapes = {n: ("Node", 1) for n in points} | {
            n: ("Cell", v.shape[1] if v.ndim > 1 else 1) for n, v in cells.items()
        }
        self.times.append(t)
        self._write_xml()

    # ------------------------------------------------------------------------------------------ XML
    def _item(self, parent: ET.Element, dataset: str, dims: tuple[int, ...], number: str = "Float") -> None:
        item = ET.SubElement(
            parent,
            "DataItem",
            Dimensions=" ".join(map(str, dims)),
            NumberType=number,
            Precision="8",
            Format="HDF",
        )
        item.text = f"{self.h5_path.name}:{dataset}"

    def _write_xml(self) -> None:
        n_pts, n_cells = self.totals
        root = ET.Element("Xdmf", Version="3.0")
        domain = ET.SubElement(root, "Domain")
        series = ET.SubElement(domain, "Grid", Name="fields", GridType="Collection", CollectionType="Temporal")
        for k, t in enumerate(self.times):
            grid = ET.SubElement(series, "Grid", Name="fields", GridType="Uniform")
            ET.SubElement(grid, "Time", Value=repr(t))
            topology = ET.SubElement(grid, "Topology", TopologyType="Tetrahedron", NumberOfElements=str(n_cells))
            self._item(topology, "/mesh/topology", (n_cells, 4), "Int")
            geometry = ET.SubElement(grid, "Geometry", GeometryType="XYZ")
            self._item(geometry, "/mesh/geometry", (n_pts, 3))
            for name in self.statics:
                attr = ET.SubElement(grid, "Attribute", Name=name, AttributeType="Scalar", Center="Cell")
                self._item(attr, f"/static/{name}", (n_cells,), "Int")
            for name, (center, bs) in self.shapes.items():
                n = n_pts if center == "Node" else n_cells
                kind = "Scalar" if bs == 1 else "Vector"
                attr = ET.SubElement(grid, "Attribute", Name=name, AttributeType=kind, Center=center)
                self._item(attr, f"/steps/{k}/{name}", (n,) if bs == 1 else (n, bs))
        ET.indent(root)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text('<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
        os.replace(tmp, self.path)
