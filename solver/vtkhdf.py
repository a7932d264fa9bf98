"""VTKHDF: one HDF5 file holding a transient unstructured grid, for pyvista and ParaView >= 5.12.

dolfinx's own ``io.vtkhdf`` writes one unnamed array per file, so this module writes the format itself
(https://docs.vtk.org/en/latest/design_documents/VTKFileFormats.html#vtkhdf-file-format, version 2.2):
the static mesh once (points and linear tetrahedra in the mesh's input order, so that the file is the same
whatever the rank count), static integer cell arrays such as ``region``, and per output time the point (P1)
and cell (DG0) arrays. :class:`VTKHDFFile` is the rank-0 side; :mod:`solver.gathered` collects the data.
The file is opened and closed at every write, so a stopped run leaves a readable file with the steps written
so far, and a resumed run cuts the file back to its checkpoint and appends.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from dolfinx import fem

VTK_TETRA = 10
# per-step arrays of the Steps group and their value for a static mesh in one part ("Values" is the time)
STEP_ARRAYS = {
    "Values": 0,
    "PartOffsets": 0,
    "NumberOfParts": 1,
    "PointOffsets": 0,
    "CellOffsets": 0,
    "ConnectivityIdOffsets": 0,
}


def node_to_dof(V: fem.FunctionSpace) -> np.ndarray:
    """Local P1 dof of each local geometry node (both numberings follow the reference vertex order)."""
    geo = V.mesh.geometry.dofmaps[0]
    n = V.mesh.geometry.x.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    out[geo.ravel()] = V.dofmap.list.ravel()
    return out


class VTKHDFFile:
    """The rank-0 writer of a transient VTKHDF file (static mesh, one part)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps = 0
        self.totals = (0, 0)

    def create(
        self,
        points: np.ndarray,
        connectivity: np.ndarray,
        statics: dict[str, np.ndarray],
        point_names: list[str],
        cell_shapes: dict[str, int],
    ) -> None:
        """A new file with the mesh, static cell arrays and empty time series (``cell_shapes``: name -> block
        size of each per-step cell array)."""
        n_pts, n_cells = points.shape[0], connectivity.shape[0]
        self.totals = (n_pts, n_cells)
        with h5py.File(self.path, "w") as h5:
            root = h5.create_group("VTKHDF")
            root.attrs["Version"] = np.array([2, 2], dtype=np.int64)
            root.attrs.create("Type", np.bytes_("UnstructuredGrid"))
            root["NumberOfPoints"] = np.array([n_pts], dtype=np.int64)
            root["NumberOfCells"] = np.array([n_cells], dtype=np.int64)
            root["NumberOfConnectivityIds"] = np.array([connectivity.size], dtype=np.int64)
            root["Points"] = points
            root["Connectivity"] = connectivity.ravel()
            root["Offsets"] = np.arange(0, 4 * n_cells + 1, 4, dtype=np.int64)
            root["Types"] = np.full(n_cells, VTK_TETRA, dtype=np.uint8)
            pd, cd = root.create_group("PointData"), root.create_group("CellData")
            steps = root.create_group("Steps")
            steps.attrs["NSteps"] = np.int64(0)
            for key in STEP_ARRAYS:
                steps.create_dataset(
                    key, shape=(0,), maxshape=(None,), dtype=np.float64 if key == "Values" else np.int64
                )
            pdo, cdo = steps.create_group("PointDataOffsets"), steps.create_group("CellDataOffsets")
            for name in point_names:
                pd.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64)
                pdo.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64)
            for name, bs in cell_shapes.items():
                shape, maxshape = ((0, bs), (None, bs)) if bs > 1 else ((0,), (None,))
                cd.create_dataset(name, shape=shape, maxshape=maxshape, dtype=np.float64)
                cdo.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64)
            for name, values in statics.items():
                cd[name] = values
                cdo.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64)

    def stored_points(self) -> np.ndarray:
        with h5py.File(self.path, "r") as h5:
            return np.asarray(h5["VTKHDF"]["Points"][:])

    def reopen(self, until: float) -> None:
        """Continue an existing file: keep the steps at times <= ``until`` (s), drop later ones."""
        with h5py.File(self.path, "a") as h5:
            root = h5["VTKHDF"]
            self.totals = (int(root["NumberOfPoints"][0]), int(root["NumberOfCells"][0]))
            steps = root["Steps"]
            keep = int(np.count_nonzero(steps["Values"][:] <= until * (1 + 1e-12) + 1e-9))
            for key in STEP_ARRAYS:
                steps[key].resize(keep, axis=0)
            n_pts, n_cells = self.totals
            for group, n in (("PointData", n_pts), ("CellData", n_cells)):
                for name, data in root[group].items():
                    if data.maxshape[0] is None:  # a per-step array (static ones are written once)
                        data.resize(keep * n, axis=0)
                    steps[f"{group}Offsets"][name].resize(keep, axis=0)
            steps.attrs["NSteps"] = np.int64(keep)
        self.steps = keep

    def append(self, t: float, points: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> None:
        """Append one step at time ``t`` (s)."""
        n_pts, n_cells = self.totals
        with h5py.File(self.path, "a") as h5:
            root = h5["VTKHDF"]
            steps = root["Steps"]
            k = self.steps
            for key, value in STEP_ARRAYS.items():  # one part; the mesh is static
                _append(steps[key], np.array([t if key == "Values" else value]))
            for name, values in points.items():
                _append(root["PointData"][name], values)
                _append(steps["PointDataOffsets"][name], np.array([k * n_pts]))
            for name, values in cells.items():
                _append(root["CellData"][name], values)
                _append(steps["CellDataOffsets"][name], np.array([k * n_cells]))
            for name in root["CellData"]:
                if name not in cells:  # static arrays: every step points at the one copy
                    _append(steps["CellDataOffsets"][name], np.array([0]))
            steps.attrs["NSteps"] = np.int64(k + 1)
        self.steps += 1


def _append(dataset, values: np.ndarray) -> None:
    n = dataset.shape[0]
    dataset.resize(n + values.shape[0], axis=0)
    dataset[n:] = values


# ----------------------------------------------------------------------------------------------- reading
class VTKHDFSeries:
    """Read access to a file written by :class:`VTKHDFFile` (serial h5py; safe on every rank at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._open() as h5:
            root = h5["VTKHDF"]
            self.times = np.asarray(root["Steps"]["Values"][:])
            self.n_points = int(root["NumberOfPoints"][0])
            self.n_cells = int(root["NumberOfCells"][0])
            self.point_names = sorted(root["PointData"])
            self.cell_names = sorted(root["CellData"])

    def _open(self):
        return h5py.File(self.path, "r", locking=False)

    def step_near(self, t: float) -> int:
        """Index of the stored time nearest ``t`` (s)."""
        if self.times.size == 0:
            raise ValueError(f"{self.path}: no time steps written")
        return int(np.argmin(np.abs(self.times - t)))

    def points(self) -> np.ndarray:
        with self._open() as h5:
            return np.asarray(h5["VTKHDF"]["Points"][:])

    def cells(self) -> np.ndarray:
        with self._open() as h5:
            return np.asarray(h5["VTKHDF"]["Connectivity"][:]).reshape(-1, 4)

    def point_data(self, name: str, step: int, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        with self._open() as h5:
            root = h5["VTKHDF"]
            start = int(root["Steps"]["PointDataOffsets"][name][step])
            block = np.asarray(root["PointData"][name][start : start + self.n_points])
        return block[rows]

    def cell_data(self, name: str, step: int, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        with self._open() as h5:
            root = h5["VTKHDF"]
            offsets = root["Steps"]["CellDataOffsets"][name]
            start = int(offsets[step]) if offsets.shape[0] else 0
            block = np.asarray(root["CellData"][name][start : start + self.n_cells])
        return block[rows]
