"""``isolimb probe``: field values at points or along a line, from a results folder, at any rank count.

The mesh is read from ``fields.vtkhdf`` and distributed over the communicator; every rank reads the values of
its own vertices (cells, for cell arrays) from the same file, so the field is the one that was written,
whatever rank count wrote it. Each point is evaluated on the lowest rank whose cells contain it (P1
interpolation inside the cell) and the values are summed over ranks. Points outside the mesh give NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dolfinx import fem, geometry
from dolfinx.io import vtkhdf
from mpi4py import MPI

from solver import results
from solver.vtkhdf import VTKHDFSeries, node_to_dof


class ProbeError(ValueError):
    """A probe request that cannot be answered (unknown field, no such file, bad coordinates)."""


def parse_point(text: str) -> np.ndarray:
    """``"x,y,z"`` in metres -> array of 3."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise ProbeError(f"point {text!r}: expected three comma-separated numbers x,y,z in metres")
    return np.array(values)


def line_points(text: str, n: int) -> np.ndarray:
    """``"x0,y0,z0:x1,y1,z1"`` -> n points from the first to the second, ends included."""
    ends = text.split(":")
    if len(ends) != 2:
        raise ProbeError(f"line {text!r}: expected x0,y0,z0:x1,y1,z1 (metres)")
    if n < 2:
        raise ProbeError(f"--n {n}: a line needs at least 2 points")
    a, b = parse_point(ends[0]), parse_point(ends[1])
    return a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)


class PointValues:
    """Values of Functions at fixed points, on any number of ranks: each point is evaluated on the lowest rank
    whose cells contain it and summed over ranks, so every rank gets every value. ``found`` marks the points
    inside the mesh (the others give NaN). Located once; evaluating is cheap (the controller's probes use it
    every step)."""

    def __init__(self, mesh, points: np.ndarray) -> None:
        self.comm = mesh.comm
        self.points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        tree = geometry.bb_tree(mesh, mesh.topology.dim)
        candidates = geometry.compute_collisions_points(tree, self.points)
        colliding = geometry.compute_colliding_cells(mesh, candidates, self.points)
        cells = np.full(self.points.shape[0], -1, dtype=np.int32)
        for i in range(self.points.shape[0]):
            hit = colliding.links(i)
            if hit.size:
                cells[i] = hit[0]
        owner = np.empty(self.points.shape[0], dtype=np.int32)
        self.comm.Allreduce(np.where(cells >= 0, self.comm.rank, self.comm.size).astype(np.int32), owner, op=MPI.MIN)
        self.found = owner < self.comm.size
        self.mine = np.flatnonzero((owner == self.comm.rank) & (cells >= 0))
        self.cells = cells

    def __call__(self, f: fem.Function) -> np.ndarray:
        """Values of ``f`` at the points, shape (n, components), the same on every rank."""
        ncomp = f.function_space.dofmap.index_map_bs
        local = np.zeros((self.points.shape[0], ncomp))
        if self.mine.size:
            local[self.mine] = f.eval(self.points[self.mine], self.cells[self.mine]).reshape(self.mine.size, ncomp)
        values = np.empty_like(local)
        self.comm.Allreduce(local, values, op=MPI.SUM)
        values[~self.found] = np.nan
        return values


TIME_TOLERANCE = 1e-6  # s: a --time this far outside the output times still counts as inside


def probe(comm: MPI.Comm, folder: Path, field: str, points: np.ndarray, time: float | None) -> tuple[float, np.ndarray]:
    """Values of ``field`` at ``points`` (m) at the stored time nearest ``time`` (s; None: the last).

    Returns (time used, values of shape (n, components)), the same on every rank.
    """
    path = folder / results.FIELDS_VTKHDF
    problem = None
    if comm.rank == 0:
        if not path.exists():
            problem = f"{path}: no such file (the run wrote no VTKHDF output; see output.formats)"
        else:
            try:
                series = VTKHDFSeries(path)
            except (OSError, KeyError, ValueError, IndexError) as err:  # truncated or damaged HDF5
                problem = f"{path}: cannot read it (truncated or damaged: {err})"
            else:
                names = series.point_names + series.cell_names
                times = series.times
                if field not in names:
                    problem = f"{path}: no field {field!r}; fields: {', '.join(names)}"
                elif times.size == 0:
                    problem = f"{path}: no time steps written"
                elif time is not None and not times[0] - TIME_TOLERANCE <= time <= times[-1] + TIME_TOLERANCE:
                    problem = (
                        f"--time {time / 60:g} min: outside the run's output times"
                        f" ({times[0] / 60:g} to {times[-1] / 60:g} min)"
                    )
    problem = comm.bcast(problem, root=0)
    if problem:
        raise ProbeError(problem)
    series = VTKHDFSeries(path)
    step = series.times.size - 1 if time is None else series.step_near(time)
    mesh = vtkhdf.read_mesh(comm, str(path))
    if field in series.point_names:
        V = fem.functionspace(mesh, ("Lagrange", 1))
        f = fem.Function(V)
        rows = np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)
        node_dofs = node_to_dof(V)
        f.x.array[node_dofs] = series.point_data(field, step, rows)
    else:
        data = series.cell_data(field, step)
        shape = () if data.ndim == 1 else (data.shape[1],)
        V = fem.functionspace(mesh, ("DG", 0, shape))
        f = fem.Function(V)
        n_cells = mesh.topology.index_map(3).size_local + mesh.topology.index_map(3).num_ghosts
        original = np.asarray(mesh.topology.original_cell_index, dtype=np.int64)[:n_cells]
        bs = V.dofmap.index_map_bs
        f.x.array.reshape(-1, bs)[V.dofmap.list[:n_cells, 0]] = data[original].reshape(n_cells, bs)
    return float(series.times[step]), PointValues(mesh, points)(f)
