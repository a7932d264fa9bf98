"""Meshes: gmsh generators for limbs with tumours and benchmark shapes, external import, XDMF I/O.

Geometry is built with gmsh's OpenCASCADE kernel on rank 0 and distributed by dolfinx. Region and
boundary names are those of MODEL.md section 1; their integer ids are fixed (``REGION_IDS``,
``BOUNDARY_IDS``) so that every mesh, generated or imported, carries the same tags.
The limb axis is z, from the distal cut (z = 0) to the proximal tourniquet section (z = L).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from solver import checkpoint, results
from solver.case import (
    Case,
    CylinderMesh,
    FileMesh,
    LabelsMesh,
    LimbMesh,
    SlabMesh,
    SphereMesh,
    SurfacesMesh,
    boundary_names,
    region_names,
)

REGION_IDS = {"tumour": 1, "necrosis": 2, "muscle": 3, "fat": 4, "skin": 5, "bone": 6}
BOUNDARY_IDS = {
    "skin_surface": 11,
    "proximal": 12,
    "distal": 13,
    "outer": 14,
    "x0": 15,
    "x1": 16,
    "sides": 17,
}

# Realistic adult limb presets (volumes: leg about 8.8 L, arm about 2.6 L; Beasley 2012 quotes
# 8.6 L and 2.5 L limb volumes for ILI). Cell sizes (at size_factor 1) from the layers of MODEL.md section 1:
# 1 mm at the tumour surfaces (drug penetration into avascular tissue about 1 mm over 60 min; the tumour-rim
# pressure layer, 0.27 mm, is carried by the flux integrals rather than resolved), kept 1 mm on each side;
# 4 mm (leg) or 3 mm (arm) through the 12 mm of skin and subcutis; the bulk grows to size_coarse at 0.3 mm
# per mm of distance.
PRESETS = {
    "leg": dict(
        length=0.70,
        proximal_radius=0.080,
        distal_radius=0.045,
        bone_radius=0.014,
        fat_thickness=0.010,
        skin_thickness=0.002,
        size_coarse=0.025,
        size_skin=0.004,
        size_tumour=0.001,
        tumour_layer=0.001,
    ),
    "arm": dict(
        length=0.55,
        proximal_radius=0.050,
        distal_radius=0.027,
        bone_radius=0.010,
        fat_thickness=0.006,
        skin_thickness=0.002,
        size_coarse=0.015,
        size_skin=0.003,
        size_tumour=0.001,
        tumour_layer=0.001,
    ),
}


class MeshError(ValueError):
    """A mesh cannot be built or read. The message is one line."""


@dataclass
class LimbGeometry:
    """Resolved limb dimensions in metres."""

    length: float
    proximal_radius: float
    distal_radius: float
    bone_radius: float
    fat_thickness: float
    skin_thickness: float
    size_coarse: float
    size_skin: float
    size_tumour: float
    tumour_layer: float
    grading: float

    def radius(self, z: float) -> float:
        """Outer (skin surface) radius at axial coordinate z."""
        return self.distal_radius + (self.proximal_radius - self.distal_radius) * z / self.length

    def frustum_volume(self, inset: float) -> float:
        """Volume inside the cone whose radii are the outer radii minus ``inset``."""
        r1, r2 = self.distal_radius - inset, self.proximal_radius - inset
        return math.pi * self.length * (r1 * r1 + r1 * r2 + r2 * r2) / 3.0


def limb_geometry(spec: LimbMesh) -> LimbGeometry:
    values = dict(PRESETS[spec.preset])
    for key in (
        "length",
        "proximal_radius",
        "distal_radius",
        "bone_radius",
        "fat_thickness",
        "skin_thickness",
        "size_coarse",
        "size_skin",
        "size_tumour",
        "tumour_layer",
    ):
        if getattr(spec, key) is not None:
            values[key] = getattr(spec, key)
    # h(x) = size_factor * h_1(x) everywhere (self-similar levels for refinement studies): the sizes and the
    # growth per unit distance scale with size_factor, the distances of the layers do not
    for key in ("size_coarse", "size_skin", "size_tumour"):
        values[key] *= spec.size_factor
    values["size_skin"] = min(values["size_skin"], values["size_coarse"])
    values["size_tumour"] = min(values["size_tumour"], values["size_coarse"])
    geo = LimbGeometry(**values, grading=spec.grading * spec.size_factor)
    inner = min(geo.proximal_radius, geo.distal_radius) - geo.skin_thickness - geo.fat_thickness
    if inner <= geo.bone_radius * 1.2:
        raise MeshError(f"limb: bone radius {geo.bone_radius} m leaves no muscle (muscle radius {inner:.4g} m)")
    return geo


def sarcoma_centre(spec: LimbMesh, geo: LimbGeometry) -> np.ndarray:
    s = spec.sarcoma
    assert s is not None
    z = s.axial_position * geo.length
    return np.array([s.radial_offset * math.cos(s.angle), s.radial_offset * math.sin(s.angle), z])


def check_limb(spec: LimbMesh) -> None:
    """Geometric checks done before meshing: the sarcoma must lie inside the muscle, off the bone."""
    geo = limb_geometry(spec)
    s = spec.sarcoma
    if s is None:
        return
    c = sarcoma_centre(spec, geo)
    a = max(s.semi_axes[:2])
    if c[2] - s.semi_axes[2] <= 0 or c[2] + s.semi_axes[2] >= geo.length:
        raise MeshError("mesh.sarcoma: the tumour crosses the proximal or distal cut; move or shrink it")
    for z in (c[2] - s.semi_axes[2], c[2], c[2] + s.semi_axes[2]):
        muscle_r = geo.radius(z) - geo.skin_thickness - geo.fat_thickness
        if s.radial_offset + a > muscle_r:
            raise MeshError(
                f"mesh.sarcoma: tumour reaches radius {s.radial_offset + a:.4g} m, beyond the muscle "
                f"({muscle_r:.4g} m at z = {z:.3g} m); reduce radial_offset or semi_axes"
            )
    if s.radial_offset - a < geo.bone_radius:
        raise MeshError(
            f"mesh.sarcoma: tumour reaches the bone (inner radius {s.radial_offset - a:.4g} m < bone "
            f"{geo.bone_radius:.4g} m); increase radial_offset"
        )


# ------------------------------------------------------------------------------------------- gmsh
MAX_LIMB_RADIUS = 0.25  # m: a limb wider than this is a unit slip
MAX_LIMB_LENGTH = 1.5  # m
MAX_CELLS = 2e7  # estimated tetrahedra of a benchmark mesh (cell_size): more is a unit slip
MIN_LAYER = 5e-4  # m: thinner skin or fat cannot be meshed at the subcutis cell size
MIN_TUMOUR_RADIUS = 1e-3  # m: smallest curvature radius of a tumour or necrotic core surface
MIN_LIMB_LENGTH = 0.05  # m
MIN_FEATURE = 1e-4  # m: a benchmark dimension below this is a unit slip (and OpenCASCADE's shapes go void near 1e-7)


def check_geometry(case: Case) -> None:
    """Everything gmsh needs to build the case's shape, checked without gmsh (MeshError, one line).

    Limbs: dimensions within a limb's range, layers that leave muscle, tumour and nodules inside (see
    :func:`check_limb`). Benchmarks: nested radii, and a cell size that gives a mesh of sane size.
    """
    spec = case.mesh
    if isinstance(spec, LimbMesh):
        geo = limb_geometry(spec)
        for key in ("proximal_radius", "distal_radius"):
            if getattr(geo, key) > MAX_LIMB_RADIUS:
                raise MeshError(
                    f"mesh.{key} = {getattr(geo, key):g} m: expected a limb radius up to {MAX_LIMB_RADIUS:g} m"
                )
        if not MIN_LIMB_LENGTH <= geo.length <= MAX_LIMB_LENGTH:
            raise MeshError(
                f"mesh.length = {geo.length:g} m: expected a limb length between {MIN_LIMB_LENGTH:g} m and"
                f" {MAX_LIMB_LENGTH:g} m"
            )
        if geo.bone_radius < 2 * MIN_LAYER:
            raise MeshError(
                f"mesh.bone_radius = {geo.bone_radius:g} m: expected a bone radius of at least"
                f" {2 * MIN_LAYER * 1e3:g} mm"
            )
        for key in ("skin_thickness", "fat_thickness"):
            if getattr(geo, key) < MIN_LAYER:
                raise MeshError(
                    f"mesh.{key} = {getattr(geo, key):g} m: expected a layer at least {MIN_LAYER * 1e3:g} mm thick"
                )
        for name, radius in _tumour_radii(spec).items():  # the smallest curvature radius sets the cell size there
            if radius < MIN_TUMOUR_RADIUS:
                what = "mesh.nodules.radius" if spec.nodules and radius == spec.nodules.radius else "mesh.sarcoma"
                raise MeshError(
                    f"{what}: the {name} surface curves with a radius of {radius * 1e3:.3g} mm; expected at least"
                    f" {MIN_TUMOUR_RADIUS * 1e3:g} mm (semi-axes b^2/a, times necrotic_fraction for the core)"
                )
        check_limb(spec)
        if spec.nodules is not None:
            nodule_centres(spec, geo)
        return
    if isinstance(spec, FileMesh):
        check_file_mesh(spec)
        return
    if isinstance(spec, (SurfacesMesh, LabelsMesh)):  # surfaces and images: solver.mesh_surfaces, mesh_labels
        _check_imported_surfaces(spec)
        return
    h = spec.cell_size * spec.size_factor
    if isinstance(spec, SphereMesh):
        if spec.outer_radius is not None and spec.outer_radius <= spec.radius:
            raise MeshError(f"mesh.outer_radius = {spec.outer_radius:g} m: must exceed mesh.radius = {spec.radius:g} m")
        lengths = {"mesh.radius": spec.radius}
        if spec.outer_radius is not None:
            lengths["mesh.outer_radius - mesh.radius"] = spec.outer_radius - spec.radius
        curved = {"mesh.radius": spec.radius}
        fine = spec.rim_size
    elif isinstance(spec, SlabMesh):
        lengths = {f"mesh.size[{i}]": x for i, x in enumerate(spec.size)}
        curved, fine = {}, spec.boundary_size
    else:
        lengths = {"mesh.radius": spec.radius, "mesh.length": spec.length}
        curved, fine = {"mesh.radius": spec.radius}, spec.boundary_size
    for key, length in lengths.items():  # gmsh and OpenCASCADE fail on them with messages that name nothing
        if length < MIN_FEATURE:
            raise MeshError(f"{key} = {length:g} m: expected at least {MIN_FEATURE * 1e3:g} mm (a unit slip?)")
    h_surface = min(fine * spec.size_factor, h) if fine is not None else h  # the graded size at the surface
    for key, radius in curved.items():  # a circle needs a few cells around it
        if h_surface > radius:
            raise MeshError(
                f"mesh.cell_size = {spec.cell_size:g} m (size_factor {spec.size_factor:g}): cells of"
                f" {h_surface:g} m at a surface larger than {key} = {radius:g} m; a curved surface needs cells"
                " smaller than its radius"
            )
    cells = estimated_cells(spec)
    if cells > MAX_CELLS:
        raise MeshError(
            f"mesh.cell_size = {spec.cell_size:g} m (size_factor {spec.size_factor:g}): about {cells:.2g} cells,"
            f" expected at most {MAX_CELLS:.0e}; use a larger cell_size"
        )


def estimated_cells(spec: SphereMesh | SlabMesh | CylinderMesh) -> float:
    """About six tetrahedra per cube of the local cell size h(d), integrated over the distance d from the
    graded surface (the sphere's r = radius, the slab's x0, the cylinder's curved surface)."""
    coarse = spec.cell_size * spec.size_factor
    if isinstance(spec, SphereMesh):
        outer = spec.outer_radius or spec.radius
        r = np.linspace(0.0, outer, 4001)
        area, d, fine, layer = 4 * np.pi * r**2, np.abs(r - spec.radius), spec.rim_size, spec.rim_layer
    elif isinstance(spec, SlabMesh):
        r = np.linspace(0.0, spec.size[0], 4001)
        area, d = np.full_like(r, spec.size[1] * spec.size[2]), r
        fine, layer = spec.boundary_size, spec.boundary_layer
    else:
        r = np.linspace(0.0, spec.radius, 4001)
        area, d = 2 * np.pi * r * spec.length, spec.radius - r
        fine, layer = spec.boundary_size, spec.boundary_layer
    if fine is None:
        h = np.full_like(r, coarse)
    else:
        h0 = min(fine * spec.size_factor, coarse)
        h = np.minimum(h0 + spec.grading * spec.size_factor * np.maximum(d - layer, 0.0), coarse)
    return float(np.trapezoid(6.0 * area / h**3, r)) * 8.0**spec.refine


def check_file_mesh(spec: FileMesh) -> None:
    """The mesh file opens, has tetrahedra, and holds every region and boundary id the case names (one rank)."""
    path = Path(spec.path)
    try:
        regions, boundaries, tets = _file_ids(path)
    except MeshError:
        raise
    except Exception as err:  # gmsh and meshio raise plain exceptions for bad files
        text = " ".join(str(err).split()) or type(err).__name__
        raise MeshError(f"mesh.path = {str(path)!r}: cannot read the mesh ({text[:200]})") from None
    if tets == 0:
        raise MeshError(f"mesh.path = {str(path)!r}: the file holds no tetrahedra")
    for kind, mapping, present in (("region", spec.regions, regions), ("boundary", spec.boundaries, boundaries)):
        for name, file_id in mapping.items():
            if file_id not in present:
                key = "regions" if kind == "region" else "boundaries"
                raise MeshError(
                    f"mesh.{key}.{name} = {file_id}: {kind} {name!r} has id {file_id}, which the file does not contain"
                    f" ({kind} ids in {path.name}: {sorted(present)})"
                )
    unnamed = sorted(regions - set(spec.regions.values()))
    if unnamed:  # their cells would carry no region tag: every cell must belong to a named region
        raise MeshError(
            f"mesh.regions = {dict(spec.regions)}: {path.name} has tetrahedra with region ids {unnamed} that no region"
            " names; name every region id of the file"
        )


def _file_ids(path: Path) -> tuple[set[int], set[int], int]:
    """(region ids of tetrahedra, boundary ids of triangles, number of tetrahedra) of a mesh file."""
    if path.suffix == ".msh":  # read as dolfinx will, through gmsh: physical groups
        import gmsh

        started = not gmsh.isInitialized()
        if started:
            gmsh.initialize(interruptible=False)
            checkpoint.reassert_stop_handlers()  # gmsh resets SIGTERM to its default action
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("isolimb-check")
        try:
            gmsh.merge(str(path))
            groups = gmsh.model.getPhysicalGroups()
            tets = int(gmsh.model.mesh.getElementsByType(4)[0].size)
        finally:
            gmsh.model.remove()
            if started:
                gmsh.finalize()
        return {t for d, t in groups if d == 3}, {t for d, t in groups if d == 2}, tets
    import meshio

    m = meshio.read(path)
    names = [k for k in m.cell_data if k not in ("gmsh:geometrical",)]
    if not names:
        raise MeshError(f"mesh.path = {str(path)!r}: no cell data with region ids")
    key = "gmsh:physical" if "gmsh:physical" in names else names[0]
    ids: dict[str, set[int]] = {"tetra": set(), "triangle": set()}
    tets = 0
    for block, data in zip(m.cells, m.cell_data[key], strict=False):
        if block.type in ids:
            ids[block.type].update(np.unique(np.asarray(data, dtype=int)).tolist())
            tets += len(block.data) if block.type == "tetra" else 0
    return ids["tetra"], ids["triangle"], tets


def _fragment_and_tag(gmsh, pieces: list[tuple[str, list[tuple[int, int]]]]) -> dict[str, list[int]]:
    """Fragment all pieces; give each resulting volume the name of the last piece that contains it.

    ``pieces`` are ordered from outermost (lowest priority) to innermost (highest priority).
    """
    occ = gmsh.model.occ
    flat = [dt for _, dts in pieces for dt in dts]
    _, children = occ.fragment(flat[:1], flat[1:])
    occ.synchronize()
    owner: dict[int, str] = {}
    i = 0
    for name, dts in pieces:
        for _ in dts:
            for dim, tag in children[i]:
                if dim == 3:
                    owner[tag] = name
            i += 1
    groups: dict[str, list[int]] = {}
    for tag, name in owner.items():
        groups.setdefault(name, []).append(tag)
    return groups


def _tag_groups(gmsh, volumes: dict[str, list[int]], classify) -> None:
    """Add physical groups: regions by name, boundary faces by ``classify(centre) -> name``."""
    for name, tags in volumes.items():
        gmsh.model.addPhysicalGroup(3, sorted(tags), REGION_IDS[name], name=name)
    all_vols = [(3, t) for tags in volumes.values() for t in tags]
    faces: dict[str, list[int]] = {}
    for _, tag in gmsh.model.getBoundary(all_vols, combined=True, oriented=False):
        centre = gmsh.model.occ.getCenterOfMass(2, abs(tag))
        faces.setdefault(classify(np.array(centre)), []).append(abs(tag))
    for name, tags in faces.items():
        gmsh.model.addPhysicalGroup(2, sorted(tags), BOUNDARY_IDS[name], name=name)


def _size_field(gmsh, surfaces_fine: list[int], fine: float, coarse: float, spread: float) -> int:
    """Cell size ``fine`` on the given surfaces, growing linearly to ``coarse`` at distance ``spread`` (a sampled
    Distance field: the surfaces and labels generators, whose surfaces have no closed-form distance)."""
    dist = gmsh.model.mesh.field.add("Distance")
    gmsh.model.mesh.field.setNumbers(dist, "SurfacesList", surfaces_fine)
    gmsh.model.mesh.field.setNumber(dist, "Sampling", 100)
    return _threshold(gmsh, dist, fine, coarse, spread)


def _math_field(gmsh, expression: str) -> int:
    field = gmsh.model.mesh.field.add("MathEval")
    gmsh.model.mesh.field.setString(field, "F", expression)
    return field


def _threshold(gmsh, dist: int, fine: float, coarse: float, spread: float, flat: float = 0.0) -> int:
    """Size ``fine`` up to distance ``flat``, growing linearly to ``coarse`` at ``flat + spread``."""
    f = gmsh.model.mesh.field
    thr = f.add("Threshold")
    f.setNumber(thr, "InField", dist)
    f.setNumber(thr, "SizeMin", fine)
    f.setNumber(thr, "SizeMax", coarse)
    f.setNumber(thr, "DistMin", flat)
    f.setNumber(thr, "DistMax", flat + spread)
    return thr


def _apply_fields(gmsh, fields: list[int], coarse: float) -> None:
    f = gmsh.model.mesh.field
    m = f.add("Min")
    f.setNumbers(m, "FieldsList", fields)
    f.setAsBackgroundMesh(m)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.MeshSizeMax", coarse)


def build_limb(gmsh, spec: LimbMesh) -> None:
    check_limb(spec)
    geo = limb_geometry(spec)
    occ = gmsh.model.occ
    L = geo.length

    def cone(inset: float) -> int:
        return occ.addCone(0, 0, 0, 0, 0, L, geo.distal_radius - inset, geo.proximal_radius - inset)

    pieces: list[tuple[str, list[tuple[int, int]]]] = [
        ("skin", [(3, cone(0.0))]),
        ("fat", [(3, cone(geo.skin_thickness))]),
        ("muscle", [(3, cone(geo.skin_thickness + geo.fat_thickness))]),
        ("bone", [(3, occ.addCylinder(0, 0, 0, 0, 0, L, geo.bone_radius))]),
    ]
    tumours: list[tuple[int, int]] = []
    core: list[tuple[int, int]] = []
    if spec.sarcoma is not None:
        s = spec.sarcoma
        c = sarcoma_centre(spec, geo)

        def ellipsoid(scale: float) -> tuple[int, int]:
            tag = occ.addSphere(*c, 1.0)
            occ.dilate([(3, tag)], *c, *(scale * a for a in s.semi_axes))
            return (3, tag)

        tumours.append(ellipsoid(1.0))
        if s.necrotic_fraction > 0:
            core.append(ellipsoid(s.necrotic_fraction))
    if spec.nodules is not None:
        tumours += [(3, occ.addSphere(*c, spec.nodules.radius)) for c in nodule_centres(spec, geo)]
    if tumours:
        pieces.append(("tumour", tumours))
    if core:
        pieces.append(("necrosis", core))
    volumes = _fragment_and_tag(gmsh, pieces)

    tol = 1e-6 * L

    def classify(x: np.ndarray) -> str:
        if abs(x[2]) < tol:
            return "distal"
        if abs(x[2] - L) < tol:
            return "proximal"
        return "skin_surface"

    _tag_groups(gmsh, volumes, classify)
    # Layers by exact (or first-order) distances: a sampled Distance field is too sparse along a 0.7 m limb.
    taper = (geo.proximal_radius - geo.distal_radius) / L
    from_skin = f"Fabs({geo.distal_radius} + ({taper})*z - Sqrt(x*x + y*y))"  # a negative taper: no "+ -"
    from_bone = f"Fabs(Sqrt(x*x + y*y) - {geo.bone_radius})"
    h_bone = _facet_size(geo.bone_radius, geo.size_skin, spec.size_factor)
    h_skin = _facet_size(geo.distal_radius, geo.size_skin, spec.size_factor)
    fields = [
        # the whole subcutis at one size: facet volume deficits (about pi h^2/6 per length) then cancel
        # between the skin surface, the skin/fat and the fat/muscle interfaces
        _graded(gmsh, from_skin, h_skin, geo, flat=geo.skin_thickness + geo.fat_thickness),
        _graded(gmsh, from_bone, h_bone, geo),
    ]
    for name, radius, distance in _tumour_surfaces(spec, geo):
        if name in volumes:
            h = _facet_size(radius, geo.size_tumour, spec.size_factor)
            fields.append(_graded(gmsh, distance, h, geo, flat=geo.tumour_layer))
    _apply_fields(gmsh, fields, geo.size_coarse)


def _graded(gmsh, distance: str, fine: float, geo: LimbGeometry, flat: float = 0.0) -> int:
    """Size ``fine`` within ``flat`` of a surface (``distance``, a MathEval expression), then growing by
    ``geo.grading`` per unit distance up to ``geo.size_coarse``."""
    spread = max(geo.size_coarse - fine, 0.0) / geo.grading
    return _threshold(gmsh, _math_field(gmsh, distance), fine, geo.size_coarse, max(spread, 1e-9), flat=flat)


def _tumour_surfaces(spec: LimbMesh, geo: LimbGeometry) -> list[tuple[str, float, str]]:
    """(region, smallest curvature radius, distance expression) of each tumour surface of a limb: the
    sarcoma ellipsoid and its necrotic core (first-order distance |rho - 1| / |grad rho|, exact on spheres and
    at the surface), and each nodule (exact)."""
    out = []
    if spec.sarcoma is not None:
        s = spec.sarcoma
        c = sarcoma_centre(spec, geo)
        scales = [("tumour", 1.0)] + ([("necrosis", s.necrotic_fraction)] if s.necrotic_fraction > 0 else [])
        for name, scale in scales:
            a = [scale * v for v in s.semi_axes]
            q = [f"(({x} - ({ci}))/{ai})" for x, ci, ai in zip("xyz", c, a, strict=True)]
            g = [f"(({x} - ({ci}))/{ai * ai})" for x, ci, ai in zip("xyz", c, a, strict=True)]
            rho = "Sqrt(" + " + ".join(f"{t}*{t}" for t in q) + ")"
            grad = "Sqrt(" + " + ".join(f"{t}*{t}" for t in g) + ")"
            b = sorted(a)
            out.append((name, b[0] ** 2 / b[2], f"Fabs({rho} - 1) * {rho} / ({grad} + 1e-12)"))
    if spec.nodules is not None:
        r = spec.nodules.radius
        for c in nodule_centres(spec, geo):
            d = f"Fabs(Sqrt((x - ({c[0]}))^2 + (y - ({c[1]}))^2 + (z - ({c[2]}))^2) - {r})"
            out.append(("tumour", r, d))
    return out


FACETS_PER_TURN = 32  # polygonal facets around a circle: keeps faceting volume error under 1 %


def _facet_size(radius: float, size: float, size_factor: float) -> float:
    """Cell size on a curved surface of curvature radius ``radius``: at most ``size``, and at most
    ``size_factor`` x 1/FACETS_PER_TURN of a turn, but never below a quarter of ``size`` (a thin bone in a
    small limb would otherwise ask for cells a hundred times finer than its neighbours)."""
    return min(size, max(size_factor * 2 * math.pi * radius / FACETS_PER_TURN, size / 4))


def _tumour_radii(spec: LimbMesh) -> dict[str, float]:
    """Smallest curvature radius of the tumour surfaces (ellipsoid: b^2/a), by region name."""
    radii = {}
    if spec.sarcoma is not None:
        a = sorted(spec.sarcoma.semi_axes)
        r = a[0] ** 2 / a[2]
        radii["tumour"] = r
        if spec.sarcoma.necrotic_fraction > 0:
            radii["necrosis"] = r * spec.sarcoma.necrotic_fraction
    if spec.nodules is not None:
        radii["tumour"] = min(radii.get("tumour", np.inf), spec.nodules.radius)
    return radii


def nodule_centres(spec: LimbMesh, geo: LimbGeometry) -> list[np.ndarray]:
    """Deterministic nodule centres in the subcutis, spread in angle and within ``axial_range``."""
    n = spec.nodules
    assert n is not None
    rng = np.random.default_rng(n.seed)
    lo, hi = n.axial_range
    z = geo.length * np.linspace(lo, hi, n.count) if n.count > 1 else [geo.length * 0.5 * (lo + hi)]
    out = []
    for i, zi in enumerate(z):
        theta = 2 * math.pi * i / n.count + rng.uniform(0, 0.5)
        depth = 0.5 * geo.skin_thickness + n.radius  # top in mid-dermis: crosses the skin/fat interface
        r = geo.radius(zi) - depth
        if n.radius >= geo.radius(zi) - geo.bone_radius - depth:
            raise MeshError("mesh.nodules: nodule radius too large for the limb")
        out.append(np.array([r * math.cos(theta), r * math.sin(theta), zi]))
    return out


def _uniform_size(gmsh, h: float) -> None:
    gmsh.option.setNumber("Mesh.MeshSizeMax", h)
    gmsh.option.setNumber("Mesh.MeshSizeMin", h)


def _benchmark_size(gmsh, spec, distance: str, fine: float | None, layer: float) -> None:
    """Uniform ``cell_size``, or graded: ``fine`` within ``layer`` of a surface (``distance``, exact), growing by
    ``grading`` per unit distance to ``cell_size``; all sizes and the growth times ``size_factor``."""
    coarse = spec.cell_size * spec.size_factor
    if fine is None:
        _uniform_size(gmsh, coarse)
        return
    h = min(fine * spec.size_factor, coarse)
    spread = max(coarse - h, 0.0) / (spec.grading * spec.size_factor)
    field = _threshold(gmsh, _math_field(gmsh, distance), h, coarse, max(spread, 1e-9), flat=layer)
    _apply_fields(gmsh, [field], coarse)


def build_sphere(gmsh, spec: SphereMesh) -> None:
    occ = gmsh.model.occ
    if spec.outer_radius is not None and spec.outer_radius <= spec.radius:
        raise MeshError("mesh: outer_radius must exceed radius")
    pieces = []
    if spec.outer_radius:
        pieces.append(("muscle", [(3, occ.addSphere(0, 0, 0, spec.outer_radius))]))
    pieces.append(("tumour", [(3, occ.addSphere(0, 0, 0, spec.radius))]))
    if len(pieces) == 1:
        occ.synchronize()
        volumes = {"tumour": [pieces[0][1][0][1]]}
    else:
        volumes = _fragment_and_tag(gmsh, pieces)
    _tag_groups(gmsh, volumes, lambda x: "outer")
    _benchmark_size(gmsh, spec, f"Fabs(Sqrt(x*x + y*y + z*z) - {spec.radius})", spec.rim_size, spec.rim_layer)


def build_slab(gmsh, spec: SlabMesh) -> None:
    lx, ly, lz = spec.size
    tag = gmsh.model.occ.addBox(0, 0, 0, lx, ly, lz)
    gmsh.model.occ.synchronize()
    tol = 1e-9 * lx
    _tag_groups(gmsh, {spec.region: [tag]}, lambda x: "x0" if x[0] < tol else "x1" if x[0] > lx - tol else "sides")
    _benchmark_size(gmsh, spec, "Fabs(x)", spec.boundary_size, spec.boundary_layer)


def build_cylinder(gmsh, spec: CylinderMesh) -> None:
    L = spec.length
    tag = gmsh.model.occ.addCylinder(0, 0, 0, 0, 0, L, spec.radius)
    gmsh.model.occ.synchronize()
    tol = 1e-9 * L
    _tag_groups(
        gmsh,
        {spec.region: [tag]},
        lambda x: "distal" if abs(x[2]) < tol else "proximal" if abs(x[2] - L) < tol else "skin_surface",
    )
    distance = f"Fabs({spec.radius} - Sqrt(x*x + y*y))"
    _benchmark_size(gmsh, spec, distance, spec.boundary_size, spec.boundary_layer)


def _check_imported_surfaces(spec: SurfacesMesh | LabelsMesh) -> None:
    from solver import mesh_labels, mesh_surfaces

    mesh_surfaces.check(spec) if isinstance(spec, SurfacesMesh) else mesh_labels.check(spec)


def build_surfaces(gmsh, spec: SurfacesMesh) -> None:
    from solver import mesh_surfaces

    mesh_surfaces.build_surfaces(gmsh, spec)


def build_labels(gmsh, spec: LabelsMesh) -> None:
    from solver import mesh_labels

    mesh_labels.build_labels(gmsh, spec)


BUILDERS = {
    LimbMesh: build_limb,
    SphereMesh: build_sphere,
    SlabMesh: build_slab,
    CylinderMesh: build_cylinder,
    SurfacesMesh: build_surfaces,
    LabelsMesh: build_labels,
}


# ------------------------------------------------------------------------------------ dolfinx meshes
@dataclass
class TaggedMesh:
    """A distributed dolfinx mesh with region (cell) and boundary (facet) tags."""

    mesh: Any  # dolfinx.mesh.Mesh
    cell_tags: Any  # dolfinx.mesh.MeshTags, values REGION_IDS
    facet_tags: Any  # dolfinx.mesh.MeshTags, values BOUNDARY_IDS
    regions: dict[str, int]  # present regions -> id
    boundaries: dict[str, int]  # present boundaries -> id

    @property
    def comm(self) -> MPI.Comm:
        return self.mesh.comm  # type: ignore[attr-defined]


def _run_gmsh(comm: MPI.Comm, case: Case, build) -> TaggedMesh:
    """Build with gmsh on rank 0 (errors broadcast), mesh, and distribute."""
    import gmsh
    from dolfinx.io import gmsh as gmshio

    error = None
    if comm.rank == 0:
        gmsh.initialize(interruptible=False)
        checkpoint.reassert_stop_handlers()  # gmsh resets SIGTERM to its default action
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("isolimb")
        try:
            build(gmsh, case.mesh)
            gmsh.option.setNumber("Mesh.Algorithm3D", 1)  # Delaunay: HXT was 50x slower here
            gmsh.option.setNumber("Mesh.Optimize", 1)
            gmsh.model.mesh.generate(3)
        except MeshError as err:
            error = str(err)
        except Exception as err:  # gmsh raises plain Exceptions, sometimes without a message
            text = " ".join(str(err).split()) or _gmsh_last_error(gmsh) or type(err).__name__
            error = f"mesh (generator {case.mesh.generator!r}): gmsh could not build the shape: {text}"
    error = comm.bcast(error, root=0)
    if error:
        if comm.rank == 0:
            gmsh.finalize()
        raise MeshError(error)
    try:
        data = gmshio.model_to_mesh(gmsh.model if comm.rank == 0 else None, comm, 0, gdim=3)
    finally:
        if comm.rank == 0:
            gmsh.finalize()
    return _tagged(data, case)


def _gmsh_last_error(gmsh) -> str:
    try:
        return " ".join(str(gmsh.logger.getLastError()).split())
    except Exception:  # an older gmsh without a logger
        return ""


def _tagged(data, case: Case) -> TaggedMesh:
    mesh = data.mesh
    mesh.topology.create_connectivity(2, 3)
    groups = data.physical_groups
    regions = {n: REGION_IDS[n] for n in region_names(case) if n in groups}
    boundaries = {n: BOUNDARY_IDS[n] for n in boundary_names(case) if n in groups}
    missing = [n for n in region_names(case) if n not in regions] + [
        n for n in boundary_names(case) if n not in boundaries
    ]
    if missing:
        raise MeshError(
            f"mesh (generator {case.mesh.generator!r}): no cells or faces of {', '.join(missing)} after meshing"
            " (a region or layer thinner than the cell size?)"
        )
    return TaggedMesh(mesh, data.cell_tags, data.facet_tags, regions, boundaries)


def generate(case: Case, comm: MPI.Comm) -> TaggedMesh:
    """Build the case's mesh on rank 0, distribute it over ``comm``, then refine it ``mesh.refine`` times."""
    if isinstance(case.mesh, FileMesh):
        tm = import_mesh(case, comm)
    else:
        tm = _run_gmsh(comm, case, BUILDERS[type(case.mesh)])
    for _ in range(getattr(case.mesh, "refine", 0)):  # surfaces and labels meshes have no refine option yet
        tm = refine(tm)
    return tm


def refine(tm: TaggedMesh) -> TaggedMesh:
    """Uniform refinement (each tetrahedron into 8) where the mesh lies: no serial step, no redistribution.

    Children stay on their parent's rank (``partitioner=None``) and inherit its region tag; boundary facets pass
    their tag to their children. With the default partitioner (which rebuilds a ghost layer) the transferred tags
    gave wrong region volumes at 2 ranks in dolfinx 0.11; without redistribution they are exact at any rank
    count (tests/test_meshes.py). The new vertices lie on the old facets: curved surfaces keep the faceting of
    the generated mesh, so region volumes do not change.
    """
    import dolfinx.mesh as dmesh

    msh = tm.mesh
    msh.topology.create_entities(1)
    new, parent_cell, parent_facet = dmesh.refine(
        msh, partitioner=None, option=dmesh.RefinementOption.parent_cell_and_facet
    )
    new.topology.create_connectivity(2, 3)
    cell_tags = dmesh.transfer_meshtag(tm.cell_tags, new, parent_cell, parent_facet)
    facet_tags = dmesh.transfer_meshtag(tm.facet_tags, new, parent_cell, parent_facet)
    return TaggedMesh(new, cell_tags, facet_tags, tm.regions, tm.boundaries)


def import_mesh(case: Case, comm: MPI.Comm) -> TaggedMesh:
    """Read an external mesh (.msh directly, other formats through meshio) and map ids to names.

    The file's region ids (cell data, or gmsh physical tags) are renumbered to ``REGION_IDS``; boundary
    ids to ``BOUNDARY_IDS``. A region or boundary named in the case but absent from the file is an error.
    """
    import dolfinx.mesh as dmesh
    from dolfinx.io import gmsh as gmshio

    spec = case.mesh
    assert isinstance(spec, FileMesh)
    path = Path(spec.path)
    error, msh_path = None, path
    tmp = tempfile.TemporaryDirectory() if comm.rank == 0 else None
    if comm.rank == 0:
        try:
            msh_path = path if path.suffix == ".msh" else _convert_to_msh(path, Path(tmp.name))  # type: ignore[union-attr]
        except Exception as err:
            error = f"{path}: cannot read mesh: {err}"
    error = comm.bcast(error, root=0)
    if error:
        raise MeshError(error)
    try:
        data = gmshio.read_from_msh(str(msh_path), comm, 0, gdim=3)
    finally:
        if tmp is not None:
            tmp.cleanup()
    mesh = data.mesh
    if spec.scale != 1.0:
        mesh.geometry.x[:] *= spec.scale
    mesh.topology.create_connectivity(2, 3)
    out = []
    for tags, mapping, ids, kind in (
        (data.cell_tags, spec.regions, REGION_IDS, "region"),
        (data.facet_tags, spec.boundaries, BOUNDARY_IDS, "boundary"),
    ):
        values = tags.values if tags is not None else np.zeros(0, np.int32)
        present = set().union(*comm.allgather(set(np.unique(values).tolist())))
        for name, file_id in mapping.items():
            if file_id not in present:
                raise MeshError(f"{path}: {kind} {name!r} has id {file_id}, which the file does not contain")
        new = np.full_like(values, -1)
        for name, file_id in mapping.items():
            new[values == file_id] = ids[name]
        keep = new >= 0
        dim = 3 if kind == "region" else 2
        indices = tags.indices[keep] if tags is not None else np.zeros(0, np.int32)
        out.append(dmesh.meshtags(mesh, dim, indices, new[keep].astype(np.int32)))
    regions = {n: REGION_IDS[n] for n in spec.regions}
    boundaries = {n: BOUNDARY_IDS[n] for n in spec.boundaries}
    return TaggedMesh(mesh, out[0], out[1], regions, boundaries)


def _convert_to_msh(path: Path, folder: Path) -> Path:
    """Convert a meshio-readable mesh with cell-data region ids to gmsh 2.2 format."""
    import meshio

    m = meshio.read(path)
    names = [k for k in m.cell_data if k not in ("gmsh:geometrical",)]
    if not names:
        raise MeshError(f"{path}: no cell data with region ids")
    key = "gmsh:physical" if "gmsh:physical" in names else names[0]
    blocks, phys = [], []
    for block, data in zip(m.cells, m.cell_data[key], strict=False):
        if block.type in ("tetra", "triangle"):
            blocks.append(block)
            phys.append(np.asarray(data, dtype=int))
    out = meshio.Mesh(m.points, blocks, cell_data={"gmsh:physical": phys, "gmsh:geometrical": phys})
    target = folder / "mesh.msh"
    meshio.write(target, out, file_format="gmsh22", binary=False)
    return target


# ---------------------------------------------------------------------------------------- XDMF I/O
def write_mesh(tm: TaggedMesh, folder: Path) -> Path:
    """Write ``mesh.xdmf`` (mesh, tags ``regions`` and ``boundaries``) and ``mesh.json`` (names)."""
    from dolfinx.io import XDMFFile

    folder = Path(folder)
    if tm.comm.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
    tm.comm.barrier()
    path = folder / results.MESH
    with XDMFFile(tm.comm, path, "w") as f:
        f.write_mesh(tm.mesh)
        tm.cell_tags.name = "regions"  # type: ignore[attr-defined]
        tm.facet_tags.name = "boundaries"  # type: ignore[attr-defined]
        f.write_meshtags(tm.cell_tags, tm.mesh.geometry)  # type: ignore[attr-defined]
        f.write_meshtags(tm.facet_tags, tm.mesh.geometry)  # type: ignore[attr-defined]
    if tm.comm.rank == 0:
        names = {"regions": tm.regions, "boundaries": tm.boundaries}
        (folder / results.MESH_META).write_text(json.dumps(names, indent=2) + "\n")
    tm.comm.barrier()
    return path


def read_mesh(folder: Path, comm: MPI.Comm) -> TaggedMesh:
    """Read a mesh written by :func:`write_mesh` at any rank count."""
    from dolfinx.io import XDMFFile

    folder = Path(folder)
    names = json.loads((folder / results.MESH_META).read_text()) if comm.rank == 0 else None
    names = comm.bcast(names, root=0)
    with XDMFFile(comm, folder / results.MESH, "r") as f:
        mesh = f.read_mesh(name="mesh")
        mesh.topology.create_connectivity(2, 3)
        cell_tags = f.read_meshtags(mesh, name="regions")
        facet_tags = f.read_meshtags(mesh, name="boundaries")
    return TaggedMesh(mesh, cell_tags, facet_tags, names["regions"], names["boundaries"])


# ----------------------------------------------------------------------------------------- statistics
def _tag_measures(tm: TaggedMesh, integral: str) -> dict[str, float]:
    """Measure (volume "dx" or area "ds", SI) of each named region or boundary, summed over ranks."""
    import ufl
    from dolfinx import fem

    tags, names = (tm.cell_tags, tm.regions) if integral == "dx" else (tm.facet_tags, tm.boundaries)
    measure = ufl.Measure(integral, domain=tm.mesh, subdomain_data=tags)
    one = fem.Constant(tm.mesh, 1.0)
    return {
        name: tm.comm.allreduce(fem.assemble_scalar(fem.form(one * measure(i))), op=MPI.SUM)
        for name, i in names.items()
    }


def region_volumes(tm: TaggedMesh) -> dict[str, float]:
    """Volume of each region in m^3 (global, allreduced)."""
    return _tag_measures(tm, "dx")


def boundary_areas(tm: TaggedMesh) -> dict[str, float]:
    """Area of each named boundary in m^2 (global)."""
    return _tag_measures(tm, "ds")


def mesh_statistics(tm: TaggedMesh) -> dict[str, object]:
    """Global cell and vertex counts, h_min/h_max and region volumes."""
    mesh = tm.mesh
    tdim = 3
    cells = mesh.topology.index_map(tdim).size_global  # type: ignore[attr-defined]
    vertices = mesh.topology.index_map(0).size_global  # type: ignore[attr-defined]
    n_local = mesh.topology.index_map(tdim).size_local  # type: ignore[attr-defined]
    h = mesh.h(tdim, np.arange(n_local, dtype=np.int32))  # type: ignore[attr-defined]
    hmin = tm.comm.allreduce(float(h.min()) if n_local else np.inf, op=MPI.MIN)
    hmax = tm.comm.allreduce(float(h.max()) if n_local else 0.0, op=MPI.MAX)
    per_region = {}
    owned = tm.cell_tags.indices < n_local
    for name, tag in tm.regions.items():
        hr = h[tm.cell_tags.indices[owned & (tm.cell_tags.values == tag)]]
        per_region[name] = {
            "cells": tm.comm.allreduce(int(hr.size), op=MPI.SUM),
            "h_min_m": tm.comm.allreduce(float(hr.min()) if hr.size else np.inf, op=MPI.MIN),
            "h_max_m": tm.comm.allreduce(float(hr.max()) if hr.size else 0.0, op=MPI.MAX),
        }
    return {
        "cells": cells,
        "vertices": vertices,
        "h_min_m": hmin,
        "h_max_m": hmax,
        "region_volumes_m3": region_volumes(tm),
        "regions": per_region,
    }
