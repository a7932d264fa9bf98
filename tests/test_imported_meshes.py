"""Meshes from a modeller's inputs (issue 17): one closed surface per region, and a labelled image (NIfTI)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from solver import mesh_labels, meshing
from solver.case import CaseError, parse_case
from solver.parameters import BOUNDARIES

from .conftest import CASES, ROOT, write_case

BIN = Path(sys.executable).parent
LABELS = "{ bone = 1, muscle = 2, fat = 3, skin = 4, tumour = 5 }"


def synthetic_leg(folder: Path, voxel: float = 2.0) -> Path:
    """The example's labelled image, written on rank 0."""
    path = folder / "leg.nii.gz"
    if MPI.COMM_WORLD.rank == 0:
        sys.path.insert(0, str(ROOT / "meshes"))
        try:
            import synthetic_leg
        finally:
            sys.path.pop(0)
        synthetic_leg.main(["-o", str(path), "--voxel", str(voxel)])
    MPI.COMM_WORLD.barrier()
    return path


def labels_case(folder: Path, image: Path, labels: str = LABELS, extra: str = ""):
    return parse_case(
        write_case(
            folder,
            f'title = "t"\n[mesh]\ngenerator = "labels"\npath = "{image}"\nlabels = {labels}\n{extra}'
            '[numerics]\ndt = "1 min"\n',
        )
    )


@pytest.fixture(scope="module")
def leg_image():
    comm = MPI.COMM_WORLD
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="isolimb-image-")) if comm.rank == 0 else None
    folder = comm.bcast(folder, root=0)
    yield synthetic_leg(folder)
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)


# -------------------------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def leg_mesh(leg_image):
    """The example's image meshed on this run's ranks: (case folder, region volumes, boundary areas, boundaries)."""
    comm = MPI.COMM_WORLD
    folder = leg_image.parent / "case"
    case = labels_case(folder, leg_image)
    tm = meshing.generate(case, comm)
    return case, meshing.region_volumes(tm), meshing.boundary_areas(tm), tm.regions, tm.boundaries


@pytest.mark.slow
def test_labelled_image_gives_tagged_regions_with_the_voxel_volumes(leg_mesh):
    case, got, areas, regions, boundaries = leg_mesh
    assert set(regions) == {"bone", "muscle", "fat", "skin", "tumour"}
    assert set(boundaries) == set(BOUNDARIES)
    voxels = mesh_labels.voxel_volumes(case.mesh)
    # surface nets place the surface half way between voxel centres; smoothing shrinks convex shapes a little
    for name, tolerance in {"muscle": 0.02, "fat": 0.02, "skin": 0.03, "tumour": 0.04, "bone": 0.08}.items():
        assert got[name] == pytest.approx(voxels[name], rel=tolerance), name
    assert sum(got.values()) == pytest.approx(sum(voxels.values()), rel=0.01)
    # the cuts: the elliptic skin outline of meshes/synthetic_leg.py at the first and last voxel centres
    for name, z in (("distal", 1.0), ("proximal", 119.0)):
        s = z / 120.0
        bulge = math.exp(-(((s - 0.75) / 0.35) ** 2))
        a, b = 38.0 + 10.0 * s + 7.0 * bulge, 33.0 + 8.0 * s + 6.0 * bulge
        assert areas[name] == pytest.approx(math.pi * a * b * 1e-6, rel=0.05), name
    assert areas["skin_surface"] > 4 * areas["proximal"]


def test_image_spacing_orientation_and_units_come_from_the_header(comm, shared_tmp):
    """One small labelled cylinder (tumour ball in muscle), stored twice: along k with 2 mm voxels, and along i with
    the voxel axes flipped and permuted and the spacing in metres; the same mesh, where the headers put it."""
    import nibabel

    n, h = 24, 2.0  # voxels, mm
    c = (np.arange(n) + 0.5) * h - n * h / 2
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    data = np.zeros(X.shape, np.uint8)
    data[X**2 + Y**2 <= 20**2] = 2
    data[X**2 + Y**2 + Z**2 <= 10**2] = 5
    plain = np.diag([h, h, h, 1.0])
    plain[:3, 3] = c[0]
    # the limb axis (world z) along voxel i, flipped; world x along -k, world y along j; metres
    turned_data = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[::-1, :, ::-1])
    turned = np.zeros((4, 4))
    turned[2, 0], turned[1, 1], turned[0, 2], turned[3, 3] = -h * 1e-3, h * 1e-3, -h * 1e-3, 1.0
    turned[:3, 3] = [-c[0] * 1e-3, c[0] * 1e-3, -c[0] * 1e-3]
    if comm.rank == 0:
        for name, values, affine, unit in (("plain", data, plain, "mm"), ("turned", turned_data, turned, "meter")):
            image = nibabel.Nifti1Image(values, affine)
            image.header.set_xyzt_units(unit, "sec")
            nibabel.save(image, str(shared_tmp / f"{name}.nii.gz"))
    comm.barrier()
    got = {}
    for name in ("plain", "turned"):
        case = labels_case(shared_tmp / name, shared_tmp / f"{name}.nii.gz", "{ muscle = 2, tumour = 5 }")
        tm = meshing.generate(case, comm)
        x = tm.mesh.geometry.x
        lo = np.array([comm.allreduce(float(v), op=MPI.MIN) for v in x.min(axis=0)])
        hi = np.array([comm.allreduce(float(v), op=MPI.MAX) for v in x.max(axis=0)])
        got[name] = (meshing.region_volumes(tm), meshing.boundary_areas(tm), lo, hi)
    for k in (0, 1):
        for key, value in got["plain"][k].items():
            assert got["turned"][k][key] == pytest.approx(value, rel=1e-6), key
    for k in (2, 3):
        assert got["turned"][k] == pytest.approx(got["plain"][k], abs=1e-8)  # VTK keeps points in float32
    assert got["plain"][2][2] == pytest.approx(-0.024) and got["plain"][3][2] == pytest.approx(0.024)


@pytest.mark.parametrize(
    "labels, message",
    [
        ("{ bone = 1, muscle = 2, fat = 3, skin = 4 }", "voxels labelled [5] that no region names"),
        ("{ bone = 1, muscle = 2, fat = 3, skin = 4, tumour = 7 }", "mesh.labels.tumour = 7: the image has no voxel"),
        ("{ bone = 1, muscle = 2, fat = 3, skin = 4, tumour = 4 }", "label 4 is already 'skin'"),
    ],
)
def test_bad_label_maps_are_one_line_errors(shared_tmp, leg_image, labels, message):
    with pytest.raises(CaseError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        labels_case(shared_tmp / "bad", leg_image, labels)
    assert "\n" not in str(err.value) and "case.toml" in str(err.value)


def test_missing_image_is_a_one_line_error(shared_tmp):
    with pytest.raises(CaseError, match="image file not found"):
        labels_case(shared_tmp / "none", shared_tmp / "nothing.nii.gz")


# ------------------------------------------------------------------------------------------ surfaces
def _stl(shape: str, path: Path, size: float) -> float:
    """A closed STL (mm) of a gmsh shape on rank 0; returns its enclosed volume in m^3."""
    volume = 0.0
    if MPI.COMM_WORLD.rank == 0:
        import gmsh

        gmsh.initialize(interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        occ = gmsh.model.occ
        if shape == "cylinder":  # r 30 mm, 100 mm long on z
            occ.addCylinder(0, 0, 0, 0, 0, 100, 30)
        elif shape == "tumour":
            occ.addSphere(0, 0, 50, 10)
        else:  # a sphere crossing the cylinder's side
            occ.addSphere(25, 0, 50, 10)
        occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", size)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(path))
        gmsh.finalize()
        import pyvista as pv

        volume = pv.read(str(path)).volume * 1e-9
    return MPI.COMM_WORLD.bcast(volume, root=0)


def surfaces_case(folder: Path, surfaces: str):
    return parse_case(
        write_case(
            folder,
            f'title = "t"\n[mesh]\ngenerator = "surfaces"\nscale = 0.001\nsurfaces = {surfaces}\n'
            '[numerics]\ndt = "1 min"\n',
        )
    )


def test_nested_surfaces_make_a_tumour_in_muscle(comm, shared_tmp):
    limb = _stl("cylinder", shared_tmp / "limb.stl", 4.0)
    tumour = _stl("tumour", shared_tmp / "tumour.stl", 2.0)
    case = surfaces_case(shared_tmp / "c", '{ muscle = "../limb.stl", tumour = "../tumour.stl" }')
    tm = meshing.generate(case, comm)
    assert set(tm.boundaries) == set(BOUNDARIES)
    got = meshing.region_volumes(tm)
    assert got["tumour"] == pytest.approx(tumour, rel=1e-6)  # surfaces kept: volumes exact to them (float32 STL)
    assert got["muscle"] == pytest.approx(limb - tumour, rel=1e-6)
    areas = meshing.boundary_areas(tm)
    for name in ("proximal", "distal"):
        assert areas[name] == pytest.approx(math.pi * 0.03**2, rel=0.01), name
    assert areas["skin_surface"] == pytest.approx(2 * math.pi * 0.03 * 0.1, rel=0.01)


def test_a_cut_named_by_a_surface(comm, shared_tmp):
    """A slanted proximal cut, named by a surface file (an open disc on the cut) instead of found by position."""
    if comm.rank == 0:
        import gmsh

        gmsh.initialize(interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        occ = gmsh.model.occ
        limb = occ.addCylinder(0, 0, 0, 0, 0, 100, 30)
        knife = occ.addBox(-50, -50, 80, 100, 100, 60)
        occ.rotate([(3, knife)], 0, 0, 80, 1, 0, 0, math.radians(30))
        occ.cut([(3, limb)], [(3, knife)])
        occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", 4.0)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(shared_tmp / "slanted.stl"))
        gmsh.finalize()
        import pyvista as pv

        plane = pv.Plane(
            center=(0, 0, 80),
            direction=(0, -math.sin(math.radians(30)), math.cos(math.radians(30))),
            i_size=200,
            j_size=200,
        )
        plane.triangulate().save(str(shared_tmp / "tourniquet.stl"))
    comm.barrier()
    case = parse_case(
        write_case(
            shared_tmp / "c",
            'title = "t"\n[mesh]\ngenerator = "surfaces"\nscale = 0.001\nsurfaces = { muscle = "../slanted.stl" }\n'
            'cuts = { proximal = "../tourniquet.stl" }\n[numerics]\ndt = "1 min"\n',
        )
    )
    tm = meshing.generate(case, comm)
    areas = meshing.boundary_areas(tm)
    assert areas["distal"] == pytest.approx(math.pi * 0.03**2, rel=0.01)
    assert areas["proximal"] == pytest.approx(math.pi * 0.03**2 / math.cos(math.radians(30)), rel=0.01)


def test_surfaces_that_share_their_interfaces_are_regions_side_by_side(comm, shared_tmp, leg_image):
    """The image's conforming surfaces, written one STL per region, give the image's mesh back."""
    case = labels_case(shared_tmp / "img", leg_image, extra="smoothing_iterations = 0\n")
    files = {}
    if comm.rank == 0:
        surface, _ = mesh_labels.read(case.mesh)
        for region, name in surface.names.items():
            if name in ("muscle", "tumour"):  # two regions are enough: tumour inside muscle, sharing its cavity
                path = shared_tmp / f"{name}.stl"
                surface.region_surface(region).save(str(path))
                files[name] = f"../{path.name}"
    files = comm.bcast(files, root=0)
    listed = ", ".join(f'{k} = "{v}"' for k, v in files.items())
    case2 = parse_case(
        write_case(
            shared_tmp / "s",
            f'title = "t"\n[mesh]\ngenerator = "surfaces"\nsurfaces = {{ {listed} }}\n[numerics]\ndt = "1 min"\n',
        )
    )
    got = meshing.region_volumes(meshing.generate(case2, comm))
    voxels = mesh_labels.voxel_volumes(case.mesh)
    assert got["tumour"] == pytest.approx(voxels["tumour"], rel=1e-6)  # staircase surfaces: exact voxel volumes


def test_open_and_overlapping_surfaces_are_errors_before_meshing(shared_tmp):
    _stl("cylinder", shared_tmp / "limb.stl", 8.0)
    _stl("crossing", shared_tmp / "crossing.stl", 4.0)
    with pytest.raises(CaseError, match=r"overlap: \d+% of the corners"):
        surfaces_case(shared_tmp / "o", '{ muscle = "../limb.stl", tumour = "../crossing.stl" }')
    if MPI.COMM_WORLD.rank == 0:
        import pyvista as pv

        sphere = pv.read(str(shared_tmp / "crossing.stl"))
        holed = sphere.extract_cells(np.arange(5, sphere.n_cells)).extract_surface(algorithm=None)
        holed.save(str(shared_tmp / "open.stl"))
    MPI.COMM_WORLD.barrier()
    with pytest.raises(CaseError, match="mesh.surfaces.tumour = .*open.stl.*the surface is open"):
        surfaces_case(shared_tmp / "p", '{ muscle = "../limb.stl", tumour = "../open.stl" }')
    with pytest.raises(CaseError, match="surface file not found"):
        surfaces_case(shared_tmp / "q", '{ muscle = "../none.stl" }')


# --------------------------------------------------------------------------------------------- example
@pytest.mark.slow
@pytest.mark.serial
def test_example_case_runs_end_to_end_at_two_ranks_on_the_serial_mesh(leg_image, leg_mesh):
    """cases/ilp-synthetic-leg-image with its image made by the script, as its README says, at 2 ranks: the same
    regions, boundaries and volumes as the mesh built here at 1 rank."""
    _, volumes, _, regions, boundaries = leg_mesh
    text = (CASES / "ilp-synthetic-leg-image" / "case.toml").read_text()
    folder = leg_image.parent / "example"
    folder.mkdir()
    (folder / "case.toml").write_text(text.replace("../../meshes/synthetic-leg.nii.gz", str(leg_image)))
    out = leg_image.parent / "out"
    done = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", str(BIN / "isolimb"), "run", str(folder), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "mesh.json").read_text()) == {"regions": regions, "boundaries": boundaries}
    for name, v in volumes.items():
        assert summary["regions"][name]["volume_m3"] == pytest.approx(v, rel=1e-10), name
    assert abs(summary["drug_balance_relative_error"]) < 1e-8
    assert summary["regions"]["tumour"]["auc_free_mean"] > 0
