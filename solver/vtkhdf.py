"""VTKHDF: one HDF5 file holding a transient unstructured grid, for pyvista and ParaView >= 5.12.

dolfinx's own ``io.vtkhdf`` writes one unnamed array per file, so this module writes the format itself
(https://docs.vtk.org/en/latest/design_documents/VTKFileFormats.html#vtkhdf-file-format, version 2.2):
the static mesh once (points in the global order of the geometry index map, the order ``mesh.xdmf`` has too,
linear tetrahedra), a ``region`` cell array, and per output time the point (P1) and cell (DG0) arrays.

h5py on the wheel stack has no MPI: ranks send their owned vertices and cells to rank 0, which writes. That
costs rank 0 memory of one time step of the output (about 8 bytes x fields x vertices); the file is opened and
closed at every write, so a stopped run leaves a readable file with the steps written so far.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from dolfinx import fem
from mpi4py import MPI

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


def _gather(comm: MPI.Comm, local: np.ndarray) -> np.ndarray | None:
    """Concatenate rank-ordered pieces on rank 0 (None elsewhere)."""
    pieces = comm.gather(local, root=0)
    return np.concatenate(pieces) if pieces is not None else None


def node_to_dof(V: fem.FunctionSpace) -> np.ndarray:
    """Local P1 dof of each local geometry node (both numberings follow the reference vertex order)."""
    geo = V.mesh.geometry.dofmaps[0]
    n = V.mesh.geometry.x.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    out[geo.ravel()] = V.dofmap.list.ravel()
    return out


class VTKHDFWriter:
    """Transient VTKHDF file of P1 point fields and DG0 cell fields on a linear tetrahedral mesh."""

    def __init__(
        self,
        path: Path,
        mesh,
        cell_values: dict[str, np.ndarray],
        point_fields: list[fem.Function],
        cell_fields: list[fem.Function],
    ) -> None:
        """``cell_values``: static integer cell arrays (per local cell, e.g. the region id)."""
        self.comm: MPI.Comm = mesh.comm
        self.path = path
        self.point_fields, self.cell_fields = point_fields, cell_fields
        if mesh.geometry.cmaps[0].degree != 1 or mesh.topology.cell_name() != "tetrahedron":
            raise ValueError("VTKHDF output supports linear tetrahedral meshes only")
        for f in point_fields:
            e = f.function_space.ufl_element()
            if e.embedded_superdegree != 1 or e.discontinuous or f.function_space.dofmap.index_map_bs != 1:
                raise ValueError(f"{f.name}: point fields must be scalar P1")
        imap = mesh.geometry.index_map()
        self.n_nodes = imap.size_local
        self.n_cells = mesh.topology.index_map(3).size_local
        self.node_dofs = {id(f.function_space): node_to_dof(f.function_space) for f in point_fields}
        cells = imap.local_to_global(mesh.geometry.dofmaps[0][: self.n_cells].ravel())
        points = _gather(self.comm, mesh.geometry.x[: self.n_nodes])
        conn = _gather(self.comm, cells.astype(np.int64))
        statics = {k: _gather(self.comm, v[: self.n_cells]) for k, v in cell_values.items()}
        self.steps = 0
        if self.comm.rank != 0:
            return
        assert points is not None and conn is not None
        n_pts, n_cells = points.shape[0], conn.size // 4
        self.totals = (n_pts, n_cells)
        with h5py.File(path, "w") as h5:
            root = h5.create_group("VTKHDF")
            root.attrs["Version"] = np.array([2, 2], dtype=np.int64)
            root.attrs.create("Type", np.bytes_("UnstructuredGrid"))
            root["NumberOfPoints"] = np.array([n_pts], dtype=np.int64)
            root["NumberOfCells"] = np.array([n_cells], dtype=np.int64)
            root["NumberOfConnectivityIds"] = np.array([conn.size], dtype=np.int64)
            root["Points"] = points
            root["Connectivity"] = conn
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
            for f in point_fields:
                pd.create_dataset(f.name, shape=(0,), maxshape=(None,), dtype=np.float64)
                pdo.create_dataset(f.name, shape=(0,), maxshape=(None,), dtype=np.int64)
            for f in cell_fields:
                bs = f.function_space.dofmap.index_map_bs
                shape, maxshape = ((0, bs), (None, bs)) if bs > 1 else ((0,), (None,))
                cd.create_dataset(f.name, shape=shape, maxshape=maxshape, dtype=np.float64)
                cdo.create_dataset(f.name, shape=(0,), maxshape=(None,), dtype=np.int64)
            for name, values in statics.items():
                cd[name] = values
                cdo.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64)

    def _point_values(self, f: fem.Function) -> np.ndarray:
        dofs = self.node_dofs[id(f.function_space)][: self.n_nodes]
        return f.x.array[dofs]

    def _cell_values(self, f: fem.Function) -> np.ndarray:
        bs = f.function_space.dofmap.index_map_bs
        dofs = f.function_space.dofmap.list[: self.n_cells, 0]
        values = f.x.array.reshape(-1, bs)[dofs]
        return values if bs > 1 else values.ravel()

    def write(self, t: float) -> None:
        """Append every field at time ``t`` (s) as one step (collective)."""
        points = {f.name: _gather(self.comm, self._point_values(f)) for f in self.point_fields}
        cells = {f.name: _gather(self.comm, self._cell_values(f)) for f in self.cell_fields}
        if self.comm.rank == 0:
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


def _append(dataset, values: np.ndarray | None) -> None:
    assert values is not None  # gathered on rank 0, the only caller
    n = dataset.shape[0]
    dataset.resize(n + values.shape[0], axis=0)
    dataset[n:] = values


# ----------------------------------------------------------------------------------------------- reading
class VTKHDFSeries:
    """Read access to a file written by :class:`VTKHDFWriter` (serial h5py; safe on every rank at once)."""

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
