"""Interface outcomes (MODEL.md section 2): the interstitial fluid crossing the tumour surface.

The tumour surface is the boundary of the union of the regions ``tumour`` and ``necrosis``: facets between a
tumour cell and a host cell, and exterior facets of tumour cells (a tumour that is the whole domain, as the
Baxter-Jain sphere). Two flux integrals over it, both with the outward normal:

- the balance (consistent) flux: the weak form of the pressure equation tested with a function that is 1 on
  the closed tumour and 0 beyond the first layer of host cells, which for the discrete solution equals
  INT_tumour (Jv/V - JL/V) dx. It is the flux through the surface that the discrete solution conserves
  (Hughes et al. 2000, "The continuous Galerkin method is locally conservative") and converges as fast as
  the pressure itself: on the Baxter-Jain sphere with the default tumour K it is within 0.2 % where the
  pointwise integral is 8 % low (tests/test_benchmarks.py). The headline numbers use it:
  ``tumour_net_filtration_mL_per_min`` (the net volume of fluid leaving the tumour across its surface) and
  ``tumour_rim_outflow_um_per_s`` (that flow over the surface area: the mean outward velocity);
- the direct surface integral of -K grad p . n from the tumour side, at quadrature points of the facets
  (not a cell average of u), reported beside them: its gap to the balance flux shows how well the mesh
  resolves the rim layer (0.27 mm with the default tumour K).

Steady pressure only: a transient pressure (compliance) would add -c_i dp/dt to the balance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from solver.meshing import TaggedMesh

TUMOUR_REGIONS = ("tumour", "necrosis")
M3_PER_S_TO_ML_PER_MIN = 1e6 * 60.0


@dataclass
class SurfaceFlux:
    """Outflow (m^3/s), area (m^2) and the volume integral of the source (m^3/s) of a closed surface."""

    outflow: float
    area: float
    source: float

    @property
    def velocity(self) -> float:
        """Mean outward velocity by the direct surface integral (m/s); 0 for an empty surface."""
        return self.outflow / self.area if self.area > 0 else 0.0

    @property
    def balance_velocity(self) -> float:
        """Mean outward velocity by the balance (consistent) flux, ``source`` over the area (m/s)."""
        return self.source / self.area if self.area > 0 else 0.0


def indicator(tm: TaggedMesh, regions: tuple[str, ...] = TUMOUR_REGIONS) -> fem.Function:
    """DG0 function: 1 on the cells of ``regions``, 0 elsewhere (owned and ghost cells)."""
    V0 = fem.functionspace(tm.mesh, ("DG", 0))
    chi = fem.Function(V0, name="tumour_indicator")
    ids = [tm.regions[r] for r in regions if r in tm.regions]
    cells = tm.cell_tags.indices[np.isin(tm.cell_tags.values, ids)]
    chi.x.array[V0.dofmap.list[cells, 0]] = 1.0
    chi.x.scatter_forward()
    return chi


def surface_entities(tm: TaggedMesh, regions: tuple[str, ...] = TUMOUR_REGIONS) -> np.ndarray:
    """(cell, local facet) pairs, flattened, of the facets of the surface of ``regions`` on this rank: facets
    with exactly one cell of those regions globally, listed with that (owned) cell. Each surface facet appears
    once over all ranks, with no ghost cells needed: the count of region cells per facet is summed over ranks
    through the facet index map."""
    from dolfinx import la

    msh = tm.mesh
    top = msh.topology
    top.create_entities(2)
    top.create_connectivity(3, 2)
    fmap = top.index_map(2)
    n_owned_cells = top.index_map(3).size_local
    ids = [tm.regions[r] for r in regions if r in tm.regions]
    cells = tm.cell_tags.indices[np.isin(tm.cell_tags.values, ids)]
    cells = np.unique(cells[cells < n_owned_cells]).astype(np.int32)
    c_to_f = top.connectivity(3, 2)
    facets = np.array([c_to_f.links(c) for c in cells], dtype=np.int32).reshape(-1, 4)
    count = la.vector(fmap, 1, dtype=np.int32)
    count.array[:] = 0
    np.add.at(count.array, facets.ravel(), 1)
    count.scatter_reverse(la.InsertMode.add)
    count.scatter_forward()
    on_surface = count.array[facets] == 1
    rows, local = np.nonzero(on_surface)
    return np.column_stack([cells[rows], local]).astype(np.int32).ravel()


class TumourSurface:
    """Forms for the flux of ``flux`` (a vector UFL expression, m/s) across the surface of the tumour regions,
    compiled once; ``source`` (1/s) is the net volumetric source whose tumour integral the outflow must equal
    at steady state."""

    def __init__(self, tm: TaggedMesh, flux: ufl.core.expr.Expr, source: ufl.core.expr.Expr) -> None:
        self.comm = tm.comm
        msh = tm.mesh
        chi = indicator(tm)
        n = ufl.FacetNormal(msh)
        ds = ufl.Measure("ds", domain=msh, subdomain_data=[(1, surface_entities(tm))])
        one = fem.Constant(msh, 1.0)
        self._forms = [
            fem.form(ufl.dot(flux, n) * ds(1)),
            fem.form(one * ds(1)),
            fem.form(chi * source * ufl.dx(domain=msh)),
        ]

    def __call__(self) -> SurfaceFlux:
        """The three integrals, summed over ranks in one reduction."""
        local = np.array([fem.assemble_scalar(f) for f in self._forms], dtype=float)
        outflow, area, source = self.comm.allreduce(local, op=MPI.SUM)
        return SurfaceFlux(float(outflow), float(area), float(source))


def of_model(model) -> TumourSurface | None:
    """The tumour surface of a coupled model's pressure (None when the mesh has no tumour region)."""
    if not any(r in model.tm.regions for r in TUMOUR_REGIONS):
        return None
    pressure = model.pressure
    return TumourSurface(model.tm, -pressure.K * ufl.grad(pressure.p), pressure.filtration() - pressure.lymph())


def series_columns(surface: SurfaceFlux) -> dict[str, float]:
    """Time-series columns of a tumour surface flux (clinical units in the names); the headline values are
    the balance (consistent) flux, see :func:`outcomes`."""
    return {
        "tumour_rim_outflow_um_per_s": surface.balance_velocity * 1e6,
        "tumour_net_filtration_mL_per_min": surface.source * M3_PER_S_TO_ML_PER_MIN,
        "tumour_rim_outflow_direct_um_per_s": surface.velocity * 1e6,
    }


def outcomes(surface: SurfaceFlux | None, row: dict[str, float] | None = None) -> dict[str, object]:
    """summary.json entries: the values of ``row`` (a time-series row, e.g. at the end of perfusion) where it
    has them, else those of ``surface`` (now); zeros without a tumour."""
    if surface is None:
        values = dict.fromkeys(("tumour_rim_outflow_um_per_s", "tumour_net_filtration_mL_per_min"), 0.0)
        return values | {"tumour_surface": {"area_m2": 0.0}}
    values = series_columns(surface)
    recorded = row is not None and all(k in row for k in values)
    if recorded:
        values = {k: row[k] for k in values}  # type: ignore[index]
    direct = values.pop("tumour_rim_outflow_direct_um_per_s")
    return values | {
        "tumour_surface": {
            "area_m2": surface.area,
            "rim_outflow_direct_um_per_s": direct,
            "time": "end of perfusion" if recorded else "end of run",
        }
    }
