"""Meshes: region volumes against analytic volumes, names present, 1 vs 2 ranks, external import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from solver import meshing
from solver.case import CaseError, parse_case
from solver.parameters import BOUNDARIES

from .conftest import CASES, ROOT, write_case


def ellipsoid(a, b, c):
    return 4 / 3 * math.pi * a * b * c


def limb_case(folder, preset, extra="", size_factor=1.0):
    return parse_case(
        write_case(
            folder,
            f"""title = "t"
[mesh]
generator = "limb"
preset = "{preset}"
size_factor = {size_factor}
{extra}
[numerics]
dt = "1 min"
""",
        )
    )


def analytic_limb_volumes(case) -> dict[str, float]:
    geo = meshing.limb_geometry(case.mesh)
    bone = math.pi * geo.bone_radius**2 * geo.length
    inside_fat = geo.frustum_volume(geo.skin_thickness + geo.fat_thickness)
    vol = {
        "skin": geo.frustum_volume(0) - geo.frustum_volume(geo.skin_thickness),
        "fat": geo.frustum_volume(geo.skin_thickness) - inside_fat,
        "bone": bone,
        "muscle": inside_fat - bone,
    }
    s = case.mesh.sarcoma
    if s is not None:
        whole = ellipsoid(*s.semi_axes)
        core = whole * s.necrotic_fraction**3
        vol["tumour"], vol["necrosis"] = whole - core, core
        vol["muscle"] -= whole
    return vol


@pytest.mark.slow
def test_default_leg_volumes_within_one_percent(comm):
    """The default case's geometry on its own (graded) mesh."""
    case = parse_case(CASES / "ilp-tm-sarcoma-leg")
    tm = meshing.generate(case, comm)
    got = meshing.region_volumes(tm)
    expected = analytic_limb_volumes(case)
    assert set(got) == set(expected) == {"tumour", "necrosis", "muscle", "fat", "skin", "bone"}
    for name, v in expected.items():
        assert got[name] == pytest.approx(v, rel=0.01), name
    assert set(tm.boundaries) == set(BOUNDARIES)


def test_arm_with_nodules(comm, shared_tmp):
    nodules = '[mesh.nodules]\ncount = 3\nradius = "5 mm"\n'
    case = limb_case(shared_tmp / "arm", "arm", 'size_skin = "6 mm"\n' + nodules)  # 1 mm at the nodules
    tm = meshing.generate(case, comm)
    vol = meshing.region_volumes(tm)
    expected = analytic_limb_volumes(case)
    nodules = 3 * ellipsoid(0.005, 0.005, 0.005)
    assert vol["tumour"] == pytest.approx(nodules, rel=0.02)
    total = sum(vol.values())
    assert total == pytest.approx(sum(expected.values()), rel=0.01)
    # nodules sit in skin and subcutis: skin + fat lose about the nodule volume, muscle loses little
    assert vol["skin"] + vol["fat"] + vol["tumour"] == pytest.approx(expected["skin"] + expected["fat"], rel=0.02)
    areas = meshing.boundary_areas(tm)
    geo = meshing.limb_geometry(case.mesh)
    assert areas["proximal"] == pytest.approx(math.pi * geo.proximal_radius**2, rel=0.01)
    assert areas["distal"] == pytest.approx(math.pi * geo.distal_radius**2, rel=0.01)


@pytest.mark.parametrize(
    ("mesh_toml", "expected", "boundaries"),
    [
        (
            'generator = "sphere"\nradius = "1 cm"\nouter_radius = "2 cm"\ncell_size = "1.5 mm"',
            {
                "tumour": ellipsoid(0.01, 0.01, 0.01),
                "muscle": ellipsoid(0.02, 0.02, 0.02) - ellipsoid(0.01, 0.01, 0.01),
            },
            {"outer": 4 * math.pi * 0.02**2},
        ),
        (
            'generator = "slab"\nsize = ["1 cm", "4 mm", "2 mm"]\ncell_size = "1 mm"',
            {"muscle": 0.01 * 0.004 * 0.002},
            {"x0": 0.004 * 0.002, "x1": 0.004 * 0.002},
        ),
        (
            'generator = "cylinder"\nradius = "1 cm"\nlength = "3 cm"\ncell_size = "1.5 mm"\nregion = "tumour"',
            {"tumour": math.pi * 0.01**2 * 0.03},
            {"proximal": math.pi * 1e-4, "distal": math.pi * 1e-4, "skin_surface": 2 * math.pi * 0.01 * 0.03},
        ),
    ],
    ids=["sphere-in-sphere", "slab", "cylinder"],
)
def test_benchmark_shapes(mesh_toml, expected, boundaries, comm, shared_tmp):
    case = parse_case(write_case(shared_tmp / "b", f'title = "b"\n[mesh]\n{mesh_toml}\n[numerics]\ndt = "1 s"\n'))
    tm = meshing.generate(case, comm)
    vol = meshing.region_volumes(tm)
    assert set(vol) == set(expected)
    for name, v in expected.items():
        assert vol[name] == pytest.approx(v, rel=0.01), name
    areas = meshing.boundary_areas(tm)
    for name, a in boundaries.items():
        assert areas[name] == pytest.approx(a, rel=0.015), name


def test_parallel_refinement_keeps_regions_and_boundaries(comm, shared_tmp):
    """mesh.refine = 1: 8x the cells, where the mesh lies; every child inherits its parent's region and every
    boundary facet's children its tag, so region volumes and boundary areas equal the generated mesh's (both
    are sums over the same faceted shapes) at 1 and 2 ranks; per-region sizes halve."""
    text = 'title = "b"\n[mesh]\ngenerator = "sphere"\nradius = "1 cm"\nouter_radius = "2 cm"\ncell_size = "3 mm"\n'
    text += 'rim_size = "1.5 mm"\n[numerics]\ndt = "1 s"\n'
    coarse = meshing.generate(parse_case(write_case(shared_tmp / "c0", text)), comm)
    fine = meshing.generate(
        parse_case(write_case(shared_tmp / "c1", text.replace("[numerics]", "refine = 1\n[numerics]"))), comm
    )
    s0, s1 = meshing.mesh_statistics(coarse), meshing.mesh_statistics(fine)
    assert s1["cells"] == 8 * s0["cells"]
    for name, v in meshing.region_volumes(coarse).items():
        assert meshing.region_volumes(fine)[name] == pytest.approx(v, rel=1e-12), name
        assert s1["regions"][name]["cells"] == 8 * s0["regions"][name]["cells"]
        assert s1["regions"][name]["h_max_m"] < 0.8 * s0["regions"][name]["h_max_m"]
        assert s1["regions"][name]["h_min_m"] < 0.6 * s0["regions"][name]["h_min_m"]
    assert meshing.boundary_areas(fine)["outer"] == pytest.approx(meshing.boundary_areas(coarse)["outer"], rel=1e-12)
    assert meshing.boundary_areas(fine)["outer"] == pytest.approx(4 * math.pi * 0.02**2, rel=0.02)


def test_graded_limb_sizes(comm, shared_tmp):
    """The leg's size fields: cells at the tumour and necrosis surfaces near size_tumour, the bulk far coarser,
    the subcutis at size_skin; all sizes scale with size_factor."""
    sarcoma = '[mesh.sarcoma]\nsemi_axes = ["2 cm", "2 cm", "3 cm"]\nradial_offset = "3.5 cm"\naxial_position = 0.7\n'
    sarcoma += "necrotic_fraction = 0.5\n"
    sizes = 'size_tumour = "3 mm"\nsize_skin = "10 mm"\nsize_coarse = "40 mm"\ntumour_layer = "2 mm"\n'
    stats = {}
    for f in (1.0, 1.6):
        case = limb_case(shared_tmp / f"g{f}", "leg", sizes + sarcoma, size_factor=f)
        stats[f] = meshing.mesh_statistics(meshing.generate(case, comm))["regions"]
    for f, s in stats.items():
        assert s["tumour"]["h_min_m"] < 1.5 * 3e-3 * f  # h: longest edge; the finest at the surface, ~3 mm x f
        assert s["necrosis"]["h_min_m"] < 1.5 * 3e-3 * f
        assert s["muscle"]["h_max_m"] > 20e-3 * f  # the bulk grows towards 40 mm x f
        assert s["fat"]["h_max_m"] < 2 * 10e-3 * f  # the whole subcutis at 10 mm x f
    assert stats[1.0]["tumour"]["cells"] > 2.5 * stats[1.6]["tumour"]["cells"]


def test_sarcoma_outside_muscle_is_an_error(comm, shared_tmp):
    big = '[mesh.sarcoma]\nsemi_axes = ["3 cm", "3 cm", "3 cm"]\nradial_offset = "2 cm"\n'
    with pytest.raises(CaseError, match="sarcoma"):  # found when the case is read, before any mesh
        limb_case(shared_tmp / "big", "arm", big)
    case = limb_case(shared_tmp / "small", "arm", big.replace('"3 cm", "3 cm", "3 cm"', '"1 cm", "1 cm", "1 cm"'))
    sarcoma = case.mesh.sarcoma.model_copy(update={"semi_axes": (0.03, 0.03, 0.03)})
    bad = case.model_copy(update={"mesh": case.mesh.model_copy(update={"sarcoma": sarcoma})})
    with pytest.raises(meshing.MeshError, match="sarcoma"):  # the generator's own guard
        meshing.generate(bad, comm)


def test_written_mesh_reads_back_with_same_volumes(comm, shared_tmp):
    case = limb_case(
        shared_tmp / "leg",
        "leg",
        '[mesh.sarcoma]\nsemi_axes = ["2 cm", "2 cm", "3 cm"]\nradial_offset = "3.5 cm"\naxial_position = 0.7\n'
        "necrotic_fraction = 0.5\n",
        size_factor=2.5,
    )
    tm = meshing.generate(case, comm)
    meshing.write_mesh(tm, shared_tmp / "mesh")
    back = meshing.read_mesh(shared_tmp / "mesh", comm)
    assert back.regions == tm.regions and back.boundaries == tm.boundaries
    v0, v1 = meshing.region_volumes(tm), meshing.region_volumes(back)
    for name in v0:
        assert v1[name] == pytest.approx(v0[name], rel=1e-12)
    a0, a1 = meshing.boundary_areas(tm), meshing.boundary_areas(back)
    for name in a0:
        assert a1[name] == pytest.approx(a0[name], rel=1e-12)


@pytest.mark.serial
def test_same_mesh_at_one_and_two_ranks(comm, tmp_path):
    """`isolimb mesh` writes once; reading at 1 and at 2 ranks gives the same region volumes."""
    case = limb_case(tmp_path / "c", "arm", '[mesh.nodules]\ncount = 2\nradius = "6 mm"\n', size_factor=2.0)
    tm = meshing.generate(case, comm)
    meshing.write_mesh(tm, tmp_path / "mesh")
    serial = meshing.region_volumes(meshing.read_mesh(tmp_path / "mesh", comm))
    script = (
        "import json, sys; import solver; from mpi4py import MPI; from solver import meshing;"
        "tm = meshing.read_mesh(sys.argv[1], MPI.COMM_WORLD); v = meshing.region_volumes(tm);"
        "MPI.COMM_WORLD.rank == 0 and print(json.dumps(v))"
    )
    mpiexec = str(ROOT / ".venv" / "bin" / "mpiexec")
    out = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-c", script, str(tmp_path / "mesh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    parallel = json.loads(out.strip().splitlines()[-1])
    for name, v in serial.items():
        assert parallel[name] == pytest.approx(v, rel=1e-12), name


def _box_msh(path, with_boundary=True):
    import gmsh

    gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.occ.addBox(0, 0, 0, 1, 1, 1)
    gmsh.model.occ.addBox(0, 0, 1, 1, 1, 1)
    gmsh.model.occ.fragment([(3, 1)], [(3, 2)])
    gmsh.model.occ.synchronize()
    gmsh.model.addPhysicalGroup(3, [1], 7)
    gmsh.model.addPhysicalGroup(3, [2], 8)
    if with_boundary:
        bottom = [s for _, s in gmsh.model.getEntities(2) if abs(gmsh.model.occ.getCenterOfMass(2, s)[2]) < 1e-9]
        gmsh.model.addPhysicalGroup(2, bottom, 21)
    gmsh.option.setNumber("Mesh.MeshSizeMax", 0.25)
    gmsh.model.mesh.generate(3)
    gmsh.write(str(path))
    gmsh.finalize()


@pytest.mark.parametrize("fmt", ["msh", "vtu"])
def test_import_external_mesh(fmt, comm, shared_tmp):
    """A mesh in cm with region ids 7, 8 and boundary id 21, mapped to names and scaled to metres."""
    if comm.rank == 0:
        _box_msh(shared_tmp / "box.msh")
        if fmt == "vtu":
            import meshio

            m = meshio.read(shared_tmp / "box.msh")
            tets = [(b, d) for b, d in zip(m.cells, m.cell_data["gmsh:physical"], strict=False) if b.type == "tetra"]
            meshio.write(
                shared_tmp / "box.vtu",
                meshio.Mesh(m.points, [b for b, _ in tets], cell_data={"region": [np.asarray(d) for _, d in tets]}),
            )
    comm.barrier()
    boundaries = "{ distal = 21 }" if fmt == "msh" else "{}"
    case = parse_case(
        write_case(
            shared_tmp,
            f'title = "x"\n[mesh]\ngenerator = "file"\npath = "box.{fmt}"\nscale = 0.01\n'
            f"regions = {{ muscle = 7, tumour = 8 }}\nboundaries = {boundaries}\n[numerics]\ndt = '1 s'\n",
        )
    )
    tm = meshing.generate(case, comm)
    vol = meshing.region_volumes(tm)
    assert vol["muscle"] == pytest.approx(1e-6, rel=1e-9)
    assert vol["tumour"] == pytest.approx(1e-6, rel=1e-9)
    if fmt == "msh":
        assert meshing.boundary_areas(tm)["distal"] == pytest.approx(1e-4, rel=1e-9)


def test_import_missing_region_is_an_error(comm, shared_tmp):
    if comm.rank == 0:
        _box_msh(shared_tmp / "box.msh")
    comm.barrier()
    text = 'title = "x"\n[mesh]\ngenerator = "file"\npath = "box.msh"\nregions = { muscle = 7, bone = 99 }\n'
    text += "[numerics]\ndt = '1 s'\n"
    with pytest.raises(CaseError, match="mesh.regions.bone = 99: region 'bone' has id 99"):  # before any mesh
        parse_case(write_case(shared_tmp, text))
    case = parse_case(write_case(shared_tmp, text.replace(", bone = 99", ", tumour = 8")))
    bad = case.model_copy(update={"mesh": case.mesh.model_copy(update={"regions": {"muscle": 7, "bone": 99}})})
    with pytest.raises(meshing.MeshError, match="'bone' has id 99"):  # the importer's own guard
        meshing.generate(bad, comm)
