"""Tissue parameters as piecewise-constant (DG0) fields over the tagged regions.

Each parameter is one DG0 Function, filled from the case's per-region values; forms are compiled once
against these Functions, and changes in time (TNF on tumour vessels) update the Function values in place.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from dolfinx import fem

from solver.case import TissueParams
from solver.meshing import MeshError, TaggedMesh


class RegionFields:
    """DG0 fields of tissue parameters; ``fields[name]`` is a Function, ``cells[region]`` its cells."""

    def __init__(self, tm: TaggedMesh, tissue: Mapping[str, TissueParams]) -> None:
        self.tm = tm
        self.V0 = fem.functionspace(tm.mesh, ("DG", 0))
        n_local = tm.mesh.topology.index_map(3).size_local + tm.mesh.topology.index_map(3).num_ghosts
        tags = np.full(n_local, -1, dtype=np.int32)
        tags[tm.cell_tags.indices] = tm.cell_tags.values
        self.cells = {name: np.flatnonzero(tags == rid).astype(np.int32) for name, rid in tm.regions.items()}
        untagged = tm.comm.allreduce(int(np.count_nonzero(tags < 0)))  # collective on every rank
        if untagged:
            raise MeshError(f"{untagged} cells carry no region tag: every cell must belong to a named region")
        self.tissue = {name: tissue[name] for name in tm.regions}
        self.fields: dict[str, fem.Function] = {}
        for key in TissueParams.model_fields:
            self.fields[key] = self.make({r: getattr(p, key) for r, p in self.tissue.items()}, key)

    def make(self, values: Mapping[str, float], name: str) -> fem.Function:
        """A DG0 Function with ``values[region]`` on each region's cells."""
        f = fem.Function(self.V0, name=name)
        for region, cells in self.cells.items():
            f.x.array[cells] = values[region]
        return f

    def set(self, name: str, region: str, value: float) -> None:
        """Set parameter ``name`` on one region (DG0 dofs are cell-local, ghosts included)."""
        if region in self.cells:
            self.fields[name].x.array[self.cells[region]] = value

    def __getitem__(self, name: str) -> fem.Function:
        return self.fields[name]
