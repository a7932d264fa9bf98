"""Field files written through rank 0: VTKHDF and XDMF share one gather per output time.

h5py on the wheel stack has no MPI, so ranks send their owned vertices and cells to rank 0, which writes.
Points and cells are put in the mesh's input order (the order the mesh generator or mesh file gave them), so
the files do not depend on the rank count: a run resumed on another number of ranks continues the same files.
Rank 0 holds one time step of the output in memory (about 8 bytes x arrays x vertices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from dolfinx import fem
from mpi4py import MPI

from solver.vtkhdf import VTKHDFFile, node_to_dof
from solver.xdmf import XDMFFile


class Sink(Protocol):
    def create(self, points, connectivity, statics, point_names, cell_shapes) -> None: ...

    path: Path

    def stored_points(self) -> np.ndarray: ...
    def reopen(self, until: float) -> None: ...
    def append(self, t: float, points: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> None: ...


def _gather(comm: MPI.Comm, local: np.ndarray) -> np.ndarray | None:
    """Concatenate rank-ordered pieces on rank 0 (None elsewhere)."""
    pieces = comm.gather(local, root=0)
    return np.concatenate(pieces) if pieces is not None else None


class GatheredFieldWriter:
    """P1 point fields and DG0 cell fields on a linear tetrahedral mesh, written by rank 0 to VTKHDF and/or XDMF.

    ``resume_at``: continue existing files, keeping their steps up to this time (s) instead of creating them.
    """

    def __init__(
        self,
        mesh,
        cell_values: dict[str, np.ndarray],
        point_fields: list[fem.Function],
        cell_fields: list[fem.Function],
        vtkhdf: Path | None = None,
        xdmf: Path | None = None,
        resume_at: float | None = None,
    ) -> None:
        """``cell_values``: static integer cell arrays (per local cell, e.g. the region id)."""
        self.comm: MPI.Comm = mesh.comm
        self.point_fields, self.cell_fields = point_fields, cell_fields
        if mesh.geometry.cmaps[0].degree != 1 or mesh.topology.cell_name() != "tetrahedron":
            raise ValueError("VTKHDF/XDMF output supports linear tetrahedral meshes only")
        for f in point_fields:
            e = f.function_space.ufl_element()
            if e.embedded_superdegree != 1 or e.discontinuous or f.function_space.dofmap.index_map_bs != 1:
                raise ValueError(f"{f.name}: point fields must be scalar P1")
        imap = mesh.geometry.index_map()
        self.n_nodes = imap.size_local
        self.n_cells = mesh.topology.index_map(3).size_local
        self.node_dofs = {id(f.function_space): node_to_dof(f.function_space) for f in point_fields}
        cells = imap.local_to_global(mesh.geometry.dofmaps[0][: self.n_cells].ravel()).astype(np.int64)
        points = _gather(self.comm, mesh.geometry.x[: self.n_nodes])
        conn = _gather(self.comm, cells)
        node_ids = _gather(self.comm, np.asarray(mesh.geometry.input_global_indices[: self.n_nodes], dtype=np.int64))
        cell_ids = _gather(self.comm, np.asarray(mesh.topology.original_cell_index[: self.n_cells], dtype=np.int64))
        statics = {k: _gather(self.comm, v[: self.n_cells]) for k, v in cell_values.items()}
        self.sinks: list[Sink] = []
        problem = None
        if self.comm.rank == 0:
            assert points is not None and conn is not None and node_ids is not None and cell_ids is not None
            # gathered rows are in global index order; put them in input order
            self.node_order, self.cell_order = np.argsort(node_ids), np.argsort(cell_ids)
            position = np.empty_like(self.node_order)
            position[self.node_order] = np.arange(self.node_order.size)
            points = points[self.node_order]
            conn = position[conn.reshape(-1, 4)[self.cell_order]]
            statics = {k: v[self.cell_order] for k, v in statics.items() if v is not None}
            if vtkhdf is not None:
                self.sinks.append(VTKHDFFile(vtkhdf))
            if xdmf is not None:
                self.sinks.append(XDMFFile(xdmf))
            names = [f.name for f in point_fields]
            shapes = {f.name: f.function_space.dofmap.index_map_bs for f in cell_fields}
            try:
                for sink in self.sinks:
                    if resume_at is None:
                        sink.create(points, conn, statics, names, shapes)
                        continue
                    stored = sink.stored_points()
                    if stored.shape != points.shape or not np.allclose(stored, points, rtol=0, atol=1e-12):
                        problem = f"{sink.path}: written on another mesh ({stored.shape[0]} points, now {len(points)})"
                        break
                    sink.reopen(resume_at)
            except (OSError, KeyError) as err:  # a missing or damaged file: every rank must hear of it
                problem = f"{err}"
        problem = self.comm.bcast(problem, root=0)
        if problem is not None:
            raise ValueError(problem)

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
            ordered_points = {k: v[self.node_order] for k, v in points.items() if v is not None}
            ordered_cells = {k: v[self.cell_order] for k, v in cells.items() if v is not None}
            for sink in self.sinks:
                sink.append(t, ordered_points, ordered_cells)
