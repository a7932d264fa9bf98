"""Meshes from surfaces: one closed surface per region (STL, OBJ, PLY, VTK or anything meshio reads), meshed with gmsh.

A region is what its surface encloses, less what the surfaces of other regions enclose inside it: regions may be
nested (a tumour surface inside the muscle surface makes a cavity in the muscle) or touch along triangles they share
exactly (conforming interfaces, as a multi-label surface extraction writes them). Surfaces that cross or that overlap
without sharing their triangles are an error before meshing, as are open surfaces.

All routes (``surfaces``, and ``labels`` through :mod:`solver.mesh_labels`) meet in a :class:`LabelledSurface`: one
triangulation of every interface, each triangle knowing the region on either side. gmsh keeps these triangles as the
boundary mesh and fills every region with tetrahedra graded like the limb generator's (the preset's skin size near the
skin, subcutis and bone, its tumour size near the tumour, coarse elsewhere); the surface resolution is the input's
(the voxel size of an image), so coarsen an STL before if it is finer than needed. Exterior triangles
are the cuts where they lie flat across the limb axis at its ends (``distal`` at the low end, ``proximal`` at the
high end), or where they lie on a surface file named for the cut (``mesh.cuts``), and ``skin_surface`` elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from solver.case import LabelsMesh, SurfacesMesh
from solver.meshing import MeshError

EXTERIOR, DISTAL, PROXIMAL = 0, -1, -2  # neighbour codes of exterior triangles
CUT_NORMAL = math.cos(math.radians(35))  # a cut triangle's normal is within 35 degrees of the limb axis


class SurfaceError(MeshError):
    """Surfaces that cannot make a mesh. The message is one line."""


@dataclass
class LabelledSurface:
    """Conforming triangles of all region boundaries, in metres.

    ``sides[i] = (a, b)``: region ids on either side of triangle i, ``a > 0``; ``b`` is a region id, or
    ``EXTERIOR``, ``DISTAL`` or ``PROXIMAL`` for the outer boundary.
    """

    points: np.ndarray  # (n, 3) float
    triangles: np.ndarray  # (m, 3) int
    sides: np.ndarray  # (m, 2) int
    names: dict[int, str]  # region id -> name

    def region_surface(self, region: int):
        """The closed boundary of one region as pyvista PolyData."""
        import pyvista as pv

        keep = np.any(self.sides == region, axis=1) & (self.sides[:, 0] > 0)
        faces = np.c_[np.full(keep.sum(), 3), self.triangles[keep]].ravel()
        return pv.PolyData(self.points, faces).clean()


# --------------------------------------------------------------------------------------------------- cuts
def tag_cuts(surface: LabelledSurface, axis: np.ndarray, tolerance: float) -> LabelledSurface:
    """Mark exterior triangles lying across the limb axis at its ends as distal (low) or proximal (high) cuts."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x = surface.points[surface.triangles]
    normal = np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1), 1e-300)[:, None]
    s = x @ axis  # (m, 3) axial positions of the corners
    s_all = surface.points[np.unique(surface.triangles)] @ axis
    lo, hi = s_all.min(), s_all.max()
    across = np.abs(normal @ axis) >= CUT_NORMAL
    outer = surface.sides[:, 1] == EXTERIOR
    sides = surface.sides.copy()
    sides[outer & across & (s.max(axis=1) <= lo + tolerance), 1] = DISTAL
    sides[outer & across & (s.min(axis=1) >= hi - tolerance), 1] = PROXIMAL
    return LabelledSurface(surface.points, surface.triangles, sides, surface.names)


# ------------------------------------------------------------------------------------------------ reading
def read_surface(path: Path, scale: float, key: str, closed: bool = True):
    """One surface file as triangulated, cleaned pyvista PolyData in metres (SurfaceError naming ``key``)."""
    import pyvista as pv

    try:
        if path.suffix.lower() in (".stl", ".obj", ".ply", ".vtk", ".vtp"):
            poly = pv.read(str(path))
        else:
            import meshio

            m = meshio.read(path)
            tris = [b.data for b in m.cells if b.type == "triangle"]
            if not tris:
                raise SurfaceError(f"{key} = {str(path)!r}: the file holds no triangles")
            tri = np.concatenate(tris)
            poly = pv.PolyData(np.asarray(m.points, float)[:, :3], np.c_[np.full(len(tri), 3), tri].ravel())
    except SurfaceError:
        raise
    except Exception as err:  # readers raise anything on a bad file
        text = " ".join(str(err).split()) or type(err).__name__
        raise SurfaceError(f"{key} = {str(path)!r}: cannot read the surface ({text[:200]})") from None
    poly = poly.extract_surface(algorithm=None).triangulate().clean()
    if poly.n_cells == 0:
        raise SurfaceError(f"{key} = {str(path)!r}: the file holds no surface triangles")
    poly.points = poly.points * scale
    if not closed:
        return poly
    if poly.n_open_edges:
        raise SurfaceError(
            f"{key} = {str(path)!r}: the surface is open ({poly.n_open_edges} edges belong to one triangle only);"
            " expected one closed surface per region (fill holes in the segmentation tool, or cap the cut ends)"
        )
    if not poly.is_manifold:
        raise SurfaceError(f"{key} = {str(path)!r}: the surface is not manifold; expected a closed surface")
    return poly


def surfaces_from_files(spec: SurfacesMesh) -> LabelledSurface:
    """Merge the case's surface files into one conforming :class:`LabelledSurface` (SurfaceError on bad input)."""
    from solver.meshing import REGION_IDS

    files = [(name, Path(p)) for name, paths in spec.surfaces.items() for p in _listed(paths)]
    polys = [read_surface(path, spec.scale, f"mesh.surfaces.{name}") for name, path in files]
    # one point set: corners closer than a millionth of the model's size are the same point
    allpts = np.concatenate([p.points for p in polys])
    size = float(np.ptp(allpts, axis=0).max())
    key = np.round(allpts / (1e-6 * size)).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    points = allpts[first]
    offsets = np.cumsum([0] + [p.n_points for p in polys])
    owner: dict[tuple[int, int, int], list[int]] = {}
    tri_of: dict[tuple[int, int, int], np.ndarray] = {}
    for k, p in enumerate(polys):
        tri = inverse.ravel()[p.regular_faces + offsets[k]]
        for t in tri:
            t_key = tuple(sorted(t.tolist()))
            owner.setdefault(t_key, []).append(k)  # type: ignore[arg-type]
            tri_of.setdefault(t_key, t)  # type: ignore[arg-type]
    shared: dict[tuple[int, int], int] = {}
    for files_of in owner.values():
        if len(files_of) > 2:
            names = sorted({files[k][0] for k in files_of})
            raise SurfaceError(f"mesh.surfaces: {names} share the same triangles; a triangle can separate two regions")
        if len(files_of) == 2:
            a, b = sorted(files_of)
            if files[a][0] == files[b][0]:
                raise SurfaceError(f"mesh.surfaces.{files[a][0]}: two of its files share triangles; merge them")
            shared[(a, b)] = shared.get((a, b), 0) + 1
    point_ids = [np.unique(inverse.ravel()[offsets[k] : offsets[k + 1]]) for k in range(len(polys))]
    parent = _nesting(polys, files, shared, points, point_ids)
    region = [REGION_IDS[name] for name, _ in files]
    triangles, sides = [], []
    for t_key, files_of in owner.items():
        triangles.append(tri_of[t_key])
        if len(files_of) == 2:
            sides.append((region[files_of[0]], region[files_of[1]]))
        else:
            up = parent[files_of[0]]
            sides.append((region[files_of[0]], region[up] if up is not None else EXTERIOR))
    return LabelledSurface(points, np.array(triangles), np.array(sides), {REGION_IDS[n]: n for n, _ in files})


def _listed(paths: str | list[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def _nesting(polys, files, shared, points, point_ids) -> list[int | None]:
    """For each surface, the surface that directly encloses it (None: none). Raise on crossing surfaces.

    Two surfaces must be nested (one strictly inside the other) or apart (touching only along shared triangles):
    the corners of one that are not corners of the other must be all inside it or all outside it.
    """
    import pyvista as pv

    n = len(polys)
    inside = np.zeros((n, n), bool)  # inside[i, j]: surface i lies inside surface j
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            free = points[np.setdiff1d(point_ids[i], point_ids[j])]  # corners of i that are not corners of j
            if free.shape[0] == 0:  # every corner on j: a region filling a cavity of j, sharing its triangles
                common = shared.get((min(i, j), max(i, j)), 0)
                if common == 0 or common == polys[j].n_cells:
                    raise SurfaceError(f"mesh.surfaces: {files[i][0]} and {files[j][0]} are the same surface")
                continue
            probe = pv.PolyData(free)
            enclosed = probe.select_interior_points(polys[j], method="cell_locator", check_surface=False)[
                "selected_points"
            ].astype(bool)
            fraction = float(enclosed.mean())
            if 0.0 < fraction < 1.0:
                raise SurfaceError(
                    f"mesh.surfaces: {files[i][0]} ({files[i][1].name}) and {files[j][0]} ({files[j][1].name}) overlap:"
                    f" {fraction:.0%} of the corners of the first lie inside the second; expected nested surfaces or"
                    " regions that touch only along shared triangles"
                )
            inside[i, j] = fraction == 1.0
            if inside[i, j] and (min(i, j), max(i, j)) in shared:
                raise SurfaceError(
                    f"mesh.surfaces: {files[i][0]} lies inside {files[j][0]} and shares triangles with it: the regions"
                    " overlap; give each region its own volume (a region's surface bounds only that region)"
                )
    parent: list[int | None] = []
    for i in range(n):
        around = [j for j in range(n) if inside[i, j]]
        # the directly enclosing surface is the one that lies inside all the others
        direct = [j for j in around if all(inside[j, k] for k in around if k != j)]
        parent.append(direct[0] if direct else None)
    return parent


# ------------------------------------------------------------------------------------------------- sizes
def sizes(spec: SurfacesMesh | LabelsMesh) -> tuple[float, float, float]:
    """(coarse, skin, tumour) cell sizes in metres: the limb preset's, times ``size_factor``."""
    from solver.meshing import PRESETS

    p = PRESETS[spec.preset]
    return (
        float(p["size_coarse"]) * spec.size_factor,
        float(p["size_skin"]) * spec.size_factor,
        float(p["size_tumour"]) * spec.size_factor,
    )


# -------------------------------------------------------------------------------------------------- gmsh
def build(gmsh, surface: LabelledSurface, spec: SurfacesMesh | LabelsMesh) -> None:
    """Make gmsh volumes, physical groups and size fields from a labelled surface (rank 0)."""
    from solver import meshing

    pts, tri, sides = surface.points, surface.triangles, surface.sides
    codes = sorted({tuple(s) for s in sides.tolist()})
    gmsh.model.add("isolimb-surfaces")
    node_tags = np.arange(1, len(pts) + 1, dtype=np.uint64)
    for k, code in enumerate(codes):
        tag = gmsh.model.addDiscreteEntity(2)
        if k == 0:
            gmsh.model.mesh.addNodes(2, tag, node_tags, pts.ravel())
        sel = np.flatnonzero(np.all(sides == code, axis=1))
        # element tag = 1 + the triangle's index: the patches gmsh makes below are traced back by it
        gmsh.model.mesh.addElementsByType(tag, 2, (sel + 1).astype(np.uint64), (tri[sel] + 1).astype(np.uint64).ravel())
    # The input triangles are kept as the boundary mesh (the interior is graded from them). Reparametrising the
    # patches (classifySurfaces/createGeometry) to remesh them at the preset sizes failed on smoothed surface nets of
    # a leg ("Wrong topology of boundary mesh for parametrization", or hung): coarsen the image or the STL instead.
    gmsh.model.mesh.createTopology()
    # which interface each new patch lies on
    patch_sides: dict[int, tuple[int, int]] = {}
    for _, tag in gmsh.model.getEntities(2):
        _, elements, _ = gmsh.model.mesh.getElements(2, tag)
        if not len(elements):
            continue
        found = {tuple(code) for code in sides[np.asarray(elements[0], np.int64) - 1].tolist()}
        if len(found) != 1:
            raise SurfaceError(f"mesh: gmsh merged the interfaces {sorted(found)}; refine the input surfaces")
        patch_sides[tag] = found.pop()  # type: ignore[assignment]
    volumes = _volumes(gmsh, surface, patch_sides)
    coarse, h_skin, h_tumour = sizes(spec)
    for name, outside in (("skin_surface", EXTERIOR), ("proximal", PROXIMAL), ("distal", DISTAL)):
        tags = sorted(t for t, s in patch_sides.items() if s[1] == outside)
        if tags:
            gmsh.model.addPhysicalGroup(2, tags, meshing.BOUNDARY_IDS[name], name=name)
    for region, tags in volumes.items():
        name = surface.names[region]
        gmsh.model.addPhysicalGroup(3, tags, meshing.REGION_IDS[name], name=name)
    ids = meshing.REGION_IDS
    layer = {ids["skin"], ids["fat"], ids["bone"]}
    tumour = {ids["tumour"], ids["necrosis"]}
    fields = []
    fine = sorted(t for t, s in patch_sides.items() if set(s) & layer or s[1] == EXTERIOR)
    if fine:
        fields.append(meshing._size_field(gmsh, fine, h_skin, coarse, coarse))
    near_tumour = sorted(t for t, s in patch_sides.items() if set(s) & tumour)
    if near_tumour:
        fields.append(meshing._size_field(gmsh, near_tumour, h_tumour, coarse, 1.5 * coarse))
    meshing._apply_fields(gmsh, fields, coarse)


def _volumes(gmsh, surface: LabelledSurface, patch_sides: dict[int, tuple[int, int]]) -> dict[int, list[int]]:
    """gmsh volumes per region: each closed shell of a region's patches, with the shells inside it as holes."""
    import pyvista as pv

    volumes: dict[int, list[int]] = {}
    for region in sorted(surface.names):
        patches = [t for t, s in patch_sides.items() if region in s]
        shells = _shells(gmsh, patches)
        polys = [_patch_poly(gmsh, shell) for shell in shells]
        inside = np.zeros((len(shells), len(shells)), bool)
        for i in range(len(shells)):
            for j in range(len(shells)):
                if i != j:
                    probe = pv.PolyData(polys[i].points[:1])
                    inside[i, j] = bool(
                        probe.select_interior_points(polys[j], method="cell_locator", check_surface=False)[
                            "selected_points"
                        ][0]
                    )
        for i, shell in enumerate(shells):
            if inside[i].sum() % 2:  # a hole of this region (inside an odd number of its shells)
                continue
            holes = [j for j in range(len(shells)) if inside[j, i] and inside[j].sum() == inside[i].sum() + 1]
            loops = [gmsh.model.geo.addSurfaceLoop(shell)] + [gmsh.model.geo.addSurfaceLoop(shells[j]) for j in holes]
            volumes.setdefault(region, []).append(gmsh.model.geo.addVolume(loops))
    gmsh.model.geo.synchronize()
    return volumes


def _shells(gmsh, patches: list[int]) -> list[list[int]]:
    """Connected sets of patches (sharing a curve)."""
    curves = {t: {abs(c) for _, c in gmsh.model.getBoundary([(2, t)], oriented=False)} for t in patches}
    left, out = set(patches), []
    while left:
        stack, shell = [left.pop()], []
        while stack:
            t = stack.pop()
            shell.append(t)
            near = [u for u in left if curves[u] & curves[t]]
            left.difference_update(near)
            stack += near
        out.append(sorted(shell))
    return out


def _patch_poly(gmsh, patches: list[int]):
    """The (input) triangles of some gmsh patches as pyvista PolyData."""
    import pyvista as pv

    tags, coords, _ = gmsh.model.mesh.getNodes()
    index = np.zeros(int(tags.max()) + 1, np.int64)
    index[tags.astype(np.int64)] = np.arange(len(tags))
    xyz = coords.reshape(-1, 3)
    tris = []
    for t in patches:
        _, _, nodes = gmsh.model.mesh.getElements(2, t)
        tris.append(index[np.asarray(nodes[0], np.int64)].reshape(-1, 3))
    tri = np.concatenate(tris)
    return pv.PolyData(xyz, np.c_[np.full(len(tri), 3), tri].ravel()).clean()


def check(spec: SurfacesMesh) -> LabelledSurface:
    """Read and check the surfaces and the named cuts (one rank, no gmsh); raise SurfaceError."""
    surface = surfaces_from_files(spec)
    return tag_named_cuts(surface, spec, 1e-4 * float(np.ptp(surface.points, axis=0).max()))


def tag_named_cuts(surface: LabelledSurface, spec: SurfacesMesh, tolerance: float) -> LabelledSurface:
    """Mark the exterior triangles lying on a cut's named surface (``mesh.cuts``) as that cut."""
    import pyvista as pv

    sides = surface.sides.copy()
    for name, path in spec.cuts.items():
        code = PROXIMAL if name == "proximal" else DISTAL
        cut = read_surface(Path(path), spec.scale, f"mesh.cuts.{name}", closed=False)
        sides[sides[:, 1] == code, 1] = EXTERIOR  # the named surface replaces the position rule
        outer = np.flatnonzero(sides[:, 1] == EXTERIOR)
        corners = pv.PolyData(surface.points[surface.triangles[outer]].reshape(-1, 3))
        distance = np.abs(corners.compute_implicit_distance(cut)["implicit_distance"]).reshape(-1, 3)
        on = outer[np.all(distance <= tolerance, axis=1)]
        if on.size == 0:
            raise SurfaceError(f"mesh.cuts.{name} = {path!r}: no exterior face of the regions lies on this surface")
        sides[on, 1] = code
    return LabelledSurface(surface.points, surface.triangles, sides, surface.names)


def build_surfaces(gmsh, spec: Any) -> None:
    """The ``surfaces`` generator (rank 0)."""
    surface = surfaces_from_files(spec)
    size = float(np.ptp(surface.points, axis=0).max())
    surface = tag_cuts(surface, np.asarray(spec.axis), 1e-4 * size)
    build(gmsh, tag_named_cuts(surface, spec, 1e-4 * size), spec)
