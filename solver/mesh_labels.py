"""Meshes from labelled images: a segmentation saved as NIfTI (3D Slicer, ITK-SNAP) with a map from label values to
region names.

The image is read with nibabel (the optional ``imaging`` extra); VTK's surface nets (pyvista's
``ImageData.contour_labels``) extract one conforming, smoothed triangulation of every interface between labels and
between labels and the background, and :mod:`solver.mesh_surfaces` meshes it. Voxel spacing, orientation and units
come from the image header (its sform, else its qform), so the mesh lies where the scanner put the patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from solver.case import LabelsMesh
from solver.mesh_surfaces import EXTERIOR, LabelledSurface, SurfaceError, build, tag_cuts

# how far surface nets may move a point while smoothing, in VTK's units (1: its default): at 1 the cut ends fold and
# thin layers cross; 0.3 keeps them apart (tests/test_imported_meshes.py)
SMOOTHING_SCALE = 0.3
UNIT_TO_METRES = {"meter": 1.0, "mm": 1e-3, "micron": 1e-6, "unknown": 1e-3}  # NIfTI's default unit is mm


def read_image(spec: LabelsMesh) -> tuple[np.ndarray, np.ndarray]:
    """(integer labels, affine from voxel indices to metres) of the case's image; SurfaceError on bad input."""
    path = Path(spec.path)
    try:
        import nibabel
    except ImportError:
        raise SurfaceError(
            "mesh.generator = 'labels': needs nibabel (pip install 'isolimb[imaging]' or pip install nibabel)"
        ) from None
    try:
        image = nibabel.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises many kinds on a bad file
        text = " ".join(str(err).split()) or type(err).__name__
        raise SurfaceError(f"mesh.path = {str(path)!r}: cannot read the image ({text[:200]})") from None
    data = np.squeeze(data)
    if data.ndim != 3:
        raise SurfaceError(f"mesh.path = {str(path)!r}: expected a 3D label image, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise SurfaceError(f"mesh.path = {str(path)!r}: the voxels are not integer labels ({data.dtype})")
        data = rounded
    unit = image.header.get_xyzt_units()[0] or "unknown"
    affine = np.array(image.affine, float)
    affine[:3, :] *= UNIT_TO_METRES.get(unit, 1e-3)
    return data.astype(np.int32), affine


def check_labels(spec: LabelsMesh, data: np.ndarray) -> None:
    """Every named label is in the image and every labelled voxel is named."""
    present = set(np.unique(data).tolist()) - {0}
    named: dict[int, str] = {}
    for name, value in spec.labels.items():
        if value in named:
            raise SurfaceError(f"mesh.labels.{name} = {value}: label {value} is already {named[value]!r}")
        named[value] = name
        if value not in present:
            raise SurfaceError(
                f"mesh.labels.{name} = {value}: the image has no voxel with label {value}"
                f" (labels in {Path(spec.path).name}: {sorted(present)})"
            )
    unnamed = sorted(present - set(named))
    if unnamed:
        raise SurfaceError(
            f"mesh.labels = {dict(spec.labels)}: {Path(spec.path).name} has voxels labelled {unnamed} that no region"
            " names; name every label (0 is the background)"
        )


def labelled_surface(spec: LabelsMesh, data: np.ndarray, affine: np.ndarray) -> LabelledSurface:
    """Surface nets of every label (with its neighbours), in metres."""
    import pyvista as pv

    from solver.meshing import REGION_IDS

    grid = pv.ImageData(dimensions=data.shape)  # voxel centres at their integer indices
    grid.point_data["labels"] = data.ravel(order="F")
    smooth = spec.smoothing_iterations > 0
    surf = grid.contour_labels(
        boundary_style="all",
        output_mesh_type="triangles",
        scalars="labels",
        smoothing=smooth,
        smoothing_iterations=max(spec.smoothing_iterations, 1),
        smoothing_scale=SMOOTHING_SCALE,
    )
    pairs = np.asarray(surf.cell_data["boundary_labels"], dtype=np.int64)
    to_region = {value: REGION_IDS[name] for name, value in spec.labels.items()}
    to_region[0] = EXTERIOR
    lookup = np.vectorize(to_region.__getitem__, otypes=[np.int64])
    sides = lookup(pairs)
    sides = np.where((sides[:, :1] == EXTERIOR), sides[:, ::-1], sides)  # the region first, exterior second
    points = np.c_[surf.points, np.ones(surf.n_points)] @ affine.T
    names = {REGION_IDS[name]: name for name in spec.labels}
    return LabelledSurface(points[:, :3], surf.regular_faces.copy(), sides, names)


def read(spec: LabelsMesh) -> tuple[LabelledSurface, float]:
    """The labelled surface of the case's image, and its voxel size (m)."""
    data, affine = read_image(spec)
    check_labels(spec, data)
    voxel = float(np.cbrt(abs(np.linalg.det(affine[:3, :3]))))
    return labelled_surface(spec, data, affine), voxel


def check(spec: LabelsMesh) -> None:
    """The checks made before meshing (one rank): the image reads, labels named and present."""
    data, _ = read_image(spec)
    check_labels(spec, data)


def build_labels(gmsh, spec: Any) -> None:
    """The ``labels`` generator (rank 0)."""
    surface, voxel = read(spec)
    build(gmsh, tag_cuts(surface, np.asarray(spec.axis), 0.5 * voxel), spec)


def voxel_volumes(spec: LabelsMesh) -> dict[str, float]:
    """Volume (m^3) of each named region counted in voxels: what a segmentation tool reports."""
    data, affine = read_image(spec)
    voxel = abs(np.linalg.det(affine[:3, :3]))
    return {name: float((data == value).sum() * voxel) for name, value in spec.labels.items()}
