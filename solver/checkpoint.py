"""Checkpoints of a running simulation, and restart from them on any number of ranks.

A checkpoint is the folder ``<results>/checkpoint``:

- ``state.json``: time, step count, the scalar state (circuits, balance totals, metabolism, TNF state,
  perfusion per region), the time-series rows so far, solver iteration counts, and the case it belongs to;
- ``<field>.npy``: every nodal field (temperature, thermal dose, and per agent C, C_c, A and the running AUCs
  and peak), one value per degree of freedom, sorted by a key that names the dof by the mesh's *input*
  vertices (a vertex dof by its vertex, a P2 edge dof by its two end vertices); ``keys.npy`` holds the keys
  and ``x.npy`` the dof coordinates, to check that the mesh is the same one.

The mesh is generated on one rank and distributed, so input numbering does not depend on the rank count: a run
stopped on N ranks resumes on M. Ranks send their owned values to rank 0, which writes with numpy (h5py and
PyPI's adios2 on the wheel stack have no MPI); on restart every rank reads the arrays memory-mapped and picks
its dofs by binary search. A new checkpoint is written beside the old one and swapped in by renames, so a job
killed while writing leaves the previous checkpoint intact. Pressure is not stored: it is re-solved from the
restored TNF state (its equation has no time derivative).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import basix
import numpy as np
from dolfinx import fem
from mpi4py import MPI

from solver import results

NAME = "checkpoint"
FORMAT = 2  # 2: the model's state under "model" (CoupledModel.state)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (reported in one line on every rank)."""


class RunStopped(Exception):
    """The run stopped early, on request, after writing a checkpoint."""

    def __init__(self, t: float, reason: str, folder: Path) -> None:
        super().__init__(f"stopped at t = {t / 60:.2f} min ({reason}); checkpoint in {folder}")
        self.t, self.reason, self.folder = t, reason, folder


def dof_keys(V: fem.FunctionSpace) -> np.ndarray:
    """A key per local dof (owned and ghost) of a scalar Lagrange space of degree 1 or 2 on a linear
    tetrahedral mesh, independent of the partition: ``lo * n + hi`` with lo, hi the input indices of the
    dof's vertex (lo = hi) or of its edge's end vertices, n the number of input vertices."""
    mesh = V.mesh
    degree = V.ufl_element().embedded_superdegree
    if degree > 2 or mesh.geometry.cmaps[0].degree != 1 or V.dofmap.index_map_bs != 1:
        raise CheckpointError("checkpoints support scalar P1/P2 fields on linear meshes only")
    nodes = mesh.geometry.dofmaps[0]  # local geometry nodes of each cell in reference vertex order
    ids = np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)[nodes]
    n = mesh.comm.allreduce(int(ids.max(initial=-1)) + 1, op=MPI.MAX)
    layout, cell_dofs = V.dofmap.dof_layout, V.dofmap.list
    imap = V.dofmap.index_map
    keys = np.full(imap.size_local + imap.num_ghosts, -1, dtype=np.int64)
    for v in range(4):
        keys[cell_dofs[:, layout.entity_dofs(0, v)[0]]] = ids[:, v] * n + ids[:, v]
    if degree == 2:
        for e, (a, b) in enumerate(basix.topology(basix.CellType.tetrahedron)[1]):
            lo, hi = np.minimum(ids[:, a], ids[:, b]), np.maximum(ids[:, a], ids[:, b])
            keys[cell_dofs[:, layout.entity_dofs(1, e)[0]]] = lo * n + hi
    assert (keys >= 0).all()
    return keys


@dataclass
class NodalSpace:
    """A scalar space whose fields are checkpointed, with its keys and coordinates (local dofs)."""

    V: fem.FunctionSpace
    keys: np.ndarray = field(init=False)
    x: np.ndarray = field(init=False)
    owned: int = field(init=False)

    def __post_init__(self) -> None:
        self.keys = dof_keys(self.V)
        self.x = self.V.tabulate_dof_coordinates()
        self.owned = self.V.dofmap.index_map.size_local


def write(
    folder: Path, comm: MPI.Comm, state: dict[str, Any], fields: dict[str, tuple[NodalSpace, np.ndarray]]
) -> Path:
    """Write ``folder/checkpoint`` (collective): ``state`` as JSON, ``fields`` (name -> (space, local values))
    as arrays in key order. Returns the checkpoint folder."""
    target, tmp, old = folder / NAME, folder / f".{NAME}.tmp", folder / f".{NAME}.old"
    state = {"format": FORMAT, "ranks": comm.size, "fields": sorted(fields), **state}
    try:  # strict JSON, decided on every rank alike before anything is written
        text, problem = json.dumps(state, indent=1, allow_nan=False) + "\n", ""
    except ValueError as err:
        text, problem = "", str(err)
    problems = comm.allgather(problem)
    if any(problems):
        raise CheckpointError(f"{folder}: the run's state is not finite ({next(p for p in problems if p)})")
    failed = ""  # rank 0's I/O error (a full disk, a read-only folder): the others go on gathering, then hear it

    def on_rank_0(write, *args) -> None:
        nonlocal failed
        if comm.rank == 0 and not failed:
            try:
                write(*args)
            except OSError as err:
                from solver.storage import describe

                failed = describe(err)

    def fresh() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    on_rank_0(fresh)
    order = None
    spaces: dict[int, np.ndarray | None] = {}  # id(space) -> permutation putting gathered values in key order
    for name, (space, values) in fields.items():
        gathered = comm.gather(values[: space.owned], root=0)
        if id(space) not in spaces:
            keys = comm.gather(space.keys[: space.owned], root=0)
            x = comm.gather(space.x[: space.owned], root=0)
            if comm.rank == 0:
                assert keys is not None and x is not None
                all_keys = np.concatenate(keys)
                order = np.argsort(all_keys, kind="stable")
                if not spaces:  # one key set for all spaces (same degree, same mesh): write it once
                    on_rank_0(np.save, tmp / "keys.npy", all_keys[order])
                    on_rank_0(np.save, tmp / "x.npy", np.concatenate(x)[order])
            spaces[id(space)] = order
        if comm.rank == 0:
            assert gathered is not None
            perm = spaces[id(space)]
            on_rank_0(np.save, tmp / f"{name}.npy", np.concatenate(gathered)[perm])

    def swap() -> None:
        (tmp / results.CHECKPOINT_STATE).write_text(text)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)

    on_rank_0(swap)
    failed = comm.bcast(failed, root=0)
    if failed:
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # the last whole checkpoint stays as it was
        raise CheckpointError(f"{folder}: cannot write the checkpoint: {failed}")
    comm.barrier()
    return target


def find(folder: Path) -> Path | None:
    """The checkpoint of a results folder: ``checkpoint``, or the previous one when a swap was cut short."""
    for name in (NAME, f".{NAME}.old"):
        if (folder / name / results.CHECKPOINT_STATE).exists():
            return folder / name
    return None


def read_state(path: Path) -> dict[str, Any]:
    state = json.loads((path / results.CHECKPOINT_STATE).read_text())
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')}, this isolimb reads {FORMAT}")
    return state


class Reader:
    """Reads fields of a checkpoint onto this run's distribution (collective constructor checks the mesh)."""

    def __init__(self, path: Path, comm: MPI.Comm, spaces: list[NodalSpace]) -> None:
        self.path = path
        keys = np.load(path / "keys.npy", mmap_mode="r")
        x = np.load(path / "x.npy", mmap_mode="r")
        self.index: dict[int, np.ndarray] = {}
        problem = ""
        for space in spaces:
            pos = np.searchsorted(keys, space.keys)
            pos = np.minimum(pos, keys.shape[0] - 1)
            if not np.array_equal(keys[pos], space.keys):
                problem = "its dofs are not this mesh's"
            elif not np.allclose(x[pos], space.x, rtol=0, atol=1e-9 * max(1.0, float(np.abs(space.x).max()))):
                problem = "its dof coordinates differ from this mesh's"
            self.index[id(space)] = pos
        problems = comm.allgather(problem)
        if any(problems):
            raise CheckpointError(f"{path}: written for another mesh ({next(p for p in problems if p)})")

    def values(self, name: str, space: NodalSpace) -> np.ndarray:
        return np.asarray(np.load(self.path / f"{name}.npy", mmap_mode="r")[self.index[id(space)]])


_ACTIVE: list[StopFlag] = []  # installed stop flags, whose handlers a library may have reset


def reassert_stop_handlers() -> None:
    """After ``gmsh.initialize()``: it puts SIGTERM (and SIGINT) back to the default action at C level, so a
    stop request while meshing, or at any time after, killed the run instead of stopping it."""
    for flag in _ACTIVE:
        flag.reassert()


class StopFlag:
    """SIGUSR1 and SIGTERM set a flag instead of killing the process; the time loop reads it between steps
    (all ranks together) and stops there with a checkpoint. SLURM sends USR1 (``--signal``) before the wall
    time and TERM at it."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._installs = 0  # nested installs: the handlers stay until the outermost uninstall

    def _handle(self, signum: int, _frame) -> None:
        self.received = signal.Signals(signum).name

    def install(self) -> StopFlag:
        """Catch the signals. Installs nest: the command installs before it reads the case (a stop asked for
        while meshing or compiling is kept), the run installs again, and a repeated signal during the run's
        end still finds the handler."""
        self._installs += 1
        if self._installs > 1:
            return self
        _ACTIVE.append(self)
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners): no signal handling
            self._previous.clear()
        from solver import _early

        if _early.received and self.received is None:  # asked for while the command was starting
            self.received = signal.Signals(_early.received[-1]).name
            _early.received.clear()
        for signum, previous in self._previous.items():
            if previous is _early._note:  # what the handlers go back to at the end: the default action
                self._previous[signum] = signal.SIG_DFL
        return self

    def reassert(self) -> None:
        """Register the handlers again (a library reset them at C level without Python knowing)."""
        if self._installs and self._previous:
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def uninstall(self) -> None:
        self._installs = max(self._installs - 1, 0)
        if self._installs:
            return
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def any_rank(self, comm: MPI.Comm) -> str | None:
        """The signal received by any rank (the name), the same answer on every rank."""
        names = comm.allgather(self.received)
        return next((n for n in names if n), None)
