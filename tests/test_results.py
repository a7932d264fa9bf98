"""Results people look at: files for ParaView and pyvista, provenance, report, probe (issue 4)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from solver import plots, report, results
from solver.case import parse_case
from solver.probe import line_points, probe
from solver.simulation import run_case
from tests.conftest import CASES, ROOT, isolimb_cli

COMM = MPI.COMM_WORLD
BIN = Path(sys.executable).parent
MMHG = 133.322387415
PARAVIEW_REQUIRED = os.environ.get("ISOLIMB_REQUIRE_PARAVIEW") == "1"  # set by .ci/run, which installs it


def _run(name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"isolimb-{name}-")) if COMM.rank == 0 else None
    folder = COMM.bcast(folder, root=0)
    source = CASES / name / "case.toml"
    run_case(parse_case(source), folder, COMM, quiet=True, argv=["test"], source=source)
    return folder


def _results(name: str):
    folder = _run(name)
    yield folder
    COMM.barrier()
    if COMM.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def small():
    yield from _results("student-small")


@pytest.fixture(scope="module")
def sphere():
    yield from _results("benchmark-baxter-jain-raised-k")


def test_results_folder_holds_every_output(small):
    expected = [
        "fields_P1.bp", "fields_P0.bp", results.FIELDS_VTKHDF, results.FIELDS_XDMF, "fields.h5", results.MESH,
        results.MESH_META, results.SERIES, results.SUMMARY, results.CASE_RESOLVED, results.PROVENANCE,
        results.RUN_LOG, results.PARAVIEW_SCRIPT,
    ]  # fmt: skip
    assert [n for n in expected if not (small / n).exists()] == []
    # the summary holds every key the contract promises to the tools that read it
    assert results.missing_keys(json.loads((small / results.SUMMARY).read_text())) == []
    prov = json.loads((small / results.PROVENANCE).read_text())
    assert prov["ranks"] == COMM.size
    for key in ("isolimb", "dolfinx-solver-real", "petsc", "mpi_library", "isolimb_git"):
        assert prov["versions"][key], key
    assert {"pressure", "heat", "transport_melphalan"} <= set(prov["solvers"])
    assert prov["solvers"]["transport_melphalan"]["ksp_type"] == "gmres"
    assert prov["krylov_iterations"]["heat"]["solves"] > 0
    assert prov["mesh"]["cells"] > 0 and prov["phase_seconds"]["transport"] > 0
    log = (small / results.RUN_LOG).read_text()
    assert "isolimb: done" in log and "t =   65.0 min" in log


@pytest.mark.serial
def test_vtkhdf_opens_in_pyvista_with_the_summary_values(small):
    """The file holds what the solver computed: the tumour mean of AUC integrated by VTK from the file equals the
    summary's mean (computed by dolfinx forms on the distributed mesh)."""
    import pyvista as pv

    summary = json.loads((small / results.SUMMARY).read_text())
    reader = pv.get_reader(str(small / results.FIELDS_VTKHDF))
    reader.reader.UpdateInformation()
    assert reader.reader.GetNumberOfSteps() == 8  # 0, 10, ..., 60, 65 min
    reader.reader.SetStep(7)
    grid = reader.read()
    assert grid.n_cells == summary["mesh"]["cells"] and grid.n_points == summary["mesh"]["vertices"]
    names = {"p_mmHg", "T_degC", "CEM43_min", "C_melphalan_mg_per_L", "C_c_melphalan_mg_per_L"}
    names |= {"A_melphalan_mg_per_L", "AUC_melphalan_mg_min_per_L", "region", "u_um_per_s"}
    assert names <= set(grid.array_names)
    for name in names:
        assert np.isfinite(grid[name]).all(), name
    # between the 30 C ambient of the skin and the 40 C inflow (after release the skin cools at rest perfusion)
    assert 30.0 <= grid["T_degC"].min() and grid["T_degC"].max() <= 40.0
    tumour = grid.threshold([0.5, 1.5], scalars="region")
    integral = tumour.integrate_data()
    mean_auc = integral["AUC_melphalan_mg_min_per_L"][0] / integral["Volume"][0]
    expected = summary["regions"]["tumour"]["auc_free_mean"] * 1e3 / 60.0
    assert mean_auc == pytest.approx(expected, rel=1e-6)


def _pvbatch() -> list[str] | None:
    pvbatch, xvfb = shutil.which("pvbatch"), shutil.which("xvfb-run")
    if pvbatch is None or xvfb is None:
        if PARAVIEW_REQUIRED:
            pytest.fail("pvbatch and xvfb-run are required (ISOLIMB_REQUIRE_PARAVIEW=1) but not installed")
        pytest.skip("ParaView (pvbatch) or xvfb-run not installed: apt-get install paraview python3-paraview xvfb")
    return [xvfb, "-a", pvbatch]


PARAVIEW_CHECK = """
import json, sys
from paraview import servermanager, simple
pm = servermanager.vtkSMProxyManager
version = (pm.GetVersionMajor(), pm.GetVersionMinor())
path = sys.argv[1]
reader = simple.Xdmf3ReaderT(FileName=[path]) if path.endswith(".xdmf") else simple.VTKHDFReader(FileName=[path])
reader.UpdatePipelineInformation()
times = list(reader.TimestepValues)
reader.UpdatePipeline(times[-1])
info = reader.GetDataInformation()
arrays = {k: list(reader.PointData[k].GetRange()) for k in reader.PointData.keys()}
arrays.update({k: list(reader.CellData[k].GetRange()) for k in reader.CellData.keys()})
print(json.dumps({"version": version, "times": times, "points": info.GetNumberOfPoints(),
                  "cells": info.GetNumberOfCells(), "arrays": arrays}))
"""


@pytest.mark.serial
def test_paraview_opens_the_results_and_the_script_draws_a_picture(small, tmp_path):
    command = _pvbatch()
    assert command is not None
    summary = json.loads((small / results.SUMMARY).read_text())
    script = tmp_path / "check.py"
    script.write_text(PARAVIEW_CHECK)
    done = subprocess.run([*command, str(script), str(small / results.FIELDS_XDMF)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["times"] == [0.0, 600.0, 1200.0, 1800.0, 2400.0, 3000.0, 3600.0, 3900.0]  # to 65 min
    assert seen["points"] == summary["mesh"]["vertices"] and seen["cells"] == summary["mesh"]["cells"]
    assert {"T_degC", "AUC_melphalan_mg_min_per_L", "p_mmHg", "region", "u_um_per_s"} <= set(seen["arrays"])
    for name, (lo, hi) in seen["arrays"].items():
        assert math.isfinite(lo) and math.isfinite(hi), name
    auc = summary["regions"]["tumour"]["auc_free_mean"] * 1e3 / 60.0
    lo, hi = seen["arrays"]["AUC_melphalan_mg_min_per_L"]
    assert lo < auc < hi
    png = tmp_path / "view.png"
    done = subprocess.run([*command, str(small / results.PARAVIEW_SCRIPT), "--png", str(png)], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 20_000  # a rendered picture, not an empty frame


# ParaView >= 5.12 (VTX, transient VTKHDF): Debian trixie's 5.13 in a chroot (tests/paraview/trixie.sh), which .ci/run
# and `make paraview-trixie` build once; .ci/run sets ISOLIMB_REQUIRE_PARAVIEW_TRIXIE=1 so a missing chroot fails there.
TRIXIE = ROOT / "tests" / "paraview" / "trixie.sh"
TRIXIE_DIR = Path(os.environ.get("ISOLIMB_PARAVIEW_CHROOT", ROOT / ".cache" / "paraview-trixie"))
TRIXIE_REQUIRED = os.environ.get("ISOLIMB_REQUIRE_PARAVIEW_TRIXIE") == "1"

PARAVIEW_READ_ALL = """
import json, sys
from paraview import servermanager, simple
pm = servermanager.vtkSMProxyManager
out = {"version": [pm.GetVersionMajor(), pm.GetVersionMinor(), pm.GetVersionPatch()], "files": {}}
for path in sys.argv[1:]:
    if path.endswith(".bp"):
        reader = simple.ADIOS2VTXReader(FileName=path)
    else:
        reader = simple.VTKHDFReader(FileName=[path])
    reader.UpdatePipelineInformation()
    times = [float(t) for t in reader.TimestepValues]
    merged = simple.MergeBlocks(Input=reader)  # VTX gives a multiblock (one block per writer rank)
    steps = []
    for t in times:
        merged.UpdatePipeline(t)
        data = servermanager.Fetch(merged)
        ranges = {}
        for kind, arrays in (("points", data.GetPointData()), ("cells", data.GetCellData())):
            for i in range(arrays.GetNumberOfArrays()):
                array = arrays.GetArray(i)
                if array.GetName() == "vtkOriginalPointIds":  # made by MergeBlocks
                    continue
                component = -1 if array.GetNumberOfComponents() > 1 else 0  # vectors: the magnitude
                ranges[array.GetName()] = [kind] + list(array.GetRange(component))
        steps.append(ranges)
    out["files"][path] = {"reader": reader.GetXMLName(), "times": times, "steps": steps,
                          "cells": data.GetNumberOfCells()}
print("RESULT " + json.dumps(out))
"""


def _trixie() -> None:
    why = None
    if not (TRIXIE_DIR / ".isolimb-ready").exists():
        log = Path(str(TRIXIE_DIR) + ".log")
        tail = " | ".join(log.read_text().strip().splitlines()[-3:]) if log.exists() else "never built"
        why = f"no ParaView 5.13 chroot at {TRIXIE_DIR} (make paraview-trixie, as root; last build: {tail})"
    elif os.geteuid() != 0:
        why = "the ParaView 5.13 chroot needs root to run (unshare, mount, chroot)"
    if why:
        if TRIXIE_REQUIRED:
            pytest.fail(f"{why} (ISOLIMB_REQUIRE_PARAVIEW_TRIXIE=1)")
        pytest.skip(why)


def _in_trixie(binds: list[Path], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TRIXIE), "run", str(TRIXIE_DIR), *map(str, binds), "--", "xvfb-run", "-a", "pvbatch", *command],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _pyvista_ranges(path: Path) -> tuple[list[float], list[dict[str, list[float]]]]:
    """Times and, per time, the range of every array of ``fields.vtkhdf`` as the vtk wheel (pyvista) reads it."""
    import pyvista as pv
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline

    reader = pv.get_reader(str(path))
    reader.reader.UpdateInformation()
    times = [float(t) for t in reader.reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS())]
    steps = []
    for k in range(len(times)):
        reader.reader.SetStep(k)
        grid = reader.read()
        ranges = {}
        for name in [*grid.point_data, *grid.cell_data]:
            values = np.asarray(grid[name], float)
            values = np.linalg.norm(values, axis=1) if values.ndim == 2 else values
            ranges[name] = [float(values.min()), float(values.max())]
        steps.append(ranges)
    return times, steps


@pytest.mark.serial
def test_paraview_513_opens_every_output_format_and_draws_a_picture(small, tmp_path):
    """VTX (BP4) and transient VTKHDF in Debian trixie's ParaView 5.13: the expected readers (ADIOS2VTXReader; the
    VTKHDFReader proxy is vtkHDFReader, XML name HDFReader), every array and time,
    ranges equal to what pyvista reads from fields.vtkhdf, and open_in_paraview.py's picture."""
    _trixie()
    script = tmp_path / "read_all.py"
    script.write_text(PARAVIEW_READ_ALL)
    files = [small / "fields_P1.bp", small / "fields_P0.bp", small / results.FIELDS_VTKHDF]
    done = _in_trixie([small, tmp_path], str(script), *map(str, files))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert seen["version"][:2] >= [5, 12], seen["version"]
    times, expected = _pyvista_ranges(small / results.FIELDS_VTKHDF)
    assert times == [0.0, 600.0, 1200.0, 1800.0, 2400.0, 3000.0, 3600.0, 3900.0]
    readers = {Path(p).name: f["reader"] for p, f in seen["files"].items()}
    assert readers == {
        "fields_P1.bp": "ADIOS2VTXReader",
        "fields_P0.bp": "ADIOS2VTXReader",
        "fields.vtkhdf": "HDFReader",
    }
    p1, p0, vtkhdf = (seen["files"][str(f)] for f in files)
    for opened in (p1, p0, vtkhdf):
        assert opened["times"] == times
    point_arrays = {n for n, r in vtkhdf["steps"][0].items() if r[0] == "points"}
    cell_arrays = {n for n, r in vtkhdf["steps"][0].items() if r[0] == "cells"}
    assert set(expected[0]) == point_arrays | cell_arrays  # ParaView sees every array pyvista sees, and no other
    assert {"T_degC", "AUC_melphalan_mg_min_per_L", "p_mmHg", "C_melphalan_mg_per_L"} <= point_arrays
    assert set(p1["steps"][0]) == point_arrays  # VTX: every P1 field in fields_P1.bp, the DG0 ones in fields_P0.bp
    assert set(p0["steps"][0]) == cell_arrays - {"region"} == {"u_um_per_s"}
    for k in range(len(times)):
        for name, (lo, hi) in expected[k].items():
            assert vtkhdf["steps"][k][name][1:] == pytest.approx([lo, hi], rel=1e-12, abs=1e-12), (name, k)
            vtx = p1 if name in point_arrays else p0
            if name != "region":
                assert vtx["steps"][k][name][1:] == pytest.approx([lo, hi], rel=1e-9, abs=1e-12), (name, k)
    png = tmp_path / "view513.png"
    done = _in_trixie([small, tmp_path], str(small / results.PARAVIEW_SCRIPT), "--png", str(png))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert png.exists() and png.stat().st_size > 20_000  # a rendered picture, not an empty frame


@pytest.mark.serial
def test_report_has_every_section_and_picture(small):
    path = report.build(small)
    page = path.read_text()
    for section in report.SECTIONS:
        assert f"<h2>{section}</h2>" in page, section
    assert page.count("data:image/png;base64,") >= 10  # 3 time series, pressure, DVH, 5 slices
    assert "kill_melphalan_log10 on the slice through the tumour centre" in page  # the kill slice (issue 13)
    summary = json.loads((small / results.SUMMARY).read_text())
    assert f"{summary['drug_balance_relative_error']:.2e}" in page
    assert "[protocol]" in page and "case.toml (as given)" in page  # the case file, verbatim


def test_dose_volume_histogram_by_hand():
    """Two equal cells with AUC 1 and 3 (mg min/L): half the volume reaches 3, all of it reaches 1."""
    h = plots.DoseVolume(level=np.array([3.0, 1.0]), fraction=np.array([0.5, 1.0]))
    assert h.covered(0.5) == 3.0
    assert h.covered(0.9) == 1.0
    assert h.covered(1.0) == 1.0


def test_probe_matches_baxter_jain_at_any_rank_count(sphere):
    """Pressure along a radius of the isolated tumour sphere against the closed form (MODEL.md s. 2)."""
    case = parse_case(CASES / "benchmark-baxter-jain-raised-k")
    t, R = case.tissue["tumour"], case.mesh.radius
    pe = t.p_v - t.sigma_p * (t.pi_v - t.pi_i)
    alpha = R * math.sqrt(t.Lp * t.S_V / t.K)
    # The case is P2; the files hold vertex values (P1). Between vertices the P1 interpolant of this concave
    # profile lies below it by about h^2/8 |p''|: 0.2 mmHg (1.2 % of the plateau) at 0.8 R with h = 1.5 mm
    # (the longest edges), 0.3 mmHg at 0.9 R, where the profile steepens to the rim. Hence 0.8 R and 2 %.
    points = line_points(f"0,0,0:{0.8 * R},0,0", 17)
    _, values = probe(COMM, sphere, "p_mmHg", points, None)
    if COMM.rank == 0:
        rho = np.maximum(points[:, 0] / R, 1e-9)
        exact = pe * (1 - np.sinh(alpha * rho) / (rho * math.sinh(alpha))) / MMHG
        assert np.abs(values[:, 0] - exact).max() < 0.02 * exact.max()


def _cli(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    return isolimb_cli(*args, ranks=ranks, timeout=300)


@pytest.mark.serial
def test_probe_command_same_csv_at_one_and_two_ranks(sphere):
    args = ["probe", str(sphere), "--field", "p_mmHg", "--line=-0.009,0.001,0:0.009,0.001,0.002", "--n", "7"]
    one, two = _cli(*args), _cli(*args, ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a = np.loadtxt(one.stdout.splitlines(), delimiter=",", skiprows=1)
    b = np.loadtxt(two.stdout.splitlines(), delimiter=",", skiprows=1)
    assert one.stdout.splitlines()[0] == "time_min,x_m,y_m,z_m,s_m,p_mmHg"
    assert a.shape == (7, 6) and np.allclose(a, b, rtol=1e-12, atol=0)
    vector = _cli("probe", str(sphere), "--field", "u_um_per_s", "--point", "0.005,0,0")
    assert vector.stdout.splitlines()[0].endswith("u_um_per_s_x,u_um_per_s_y,u_um_per_s_z")
    assert float(vector.stdout.splitlines()[1].split(",")[5]) > 0  # fluid flows outward along +x


@pytest.mark.serial
@pytest.mark.parametrize(
    "args, message",
    [
        (["--field", "nope", "--point", "0,0,0"], "no field 'nope'; fields: "),
        (["--field", "p_mmHg", "--point", "0,0"], "expected three comma-separated numbers"),
        (["--field", "p_mmHg"], "give exactly one of --point"),
        (["--field", "p_mmHg", "--point", "0,0,0", "--time", "30"], "expected a time"),
    ],
)
def test_probe_bad_requests_are_one_line_errors(sphere, args, message):
    done = _cli("probe", str(sphere), *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.serial
def test_report_of_a_folder_that_is_not_a_result_is_refused(tmp_path):
    done = _cli("report", str(tmp_path))
    assert done.returncode == 2 and "not a finished isolimb results folder" in done.stderr


@pytest.mark.serial
def test_compare_puts_outcomes_side_by_side(small, sphere, tmp_path):
    """A drug case beside a pressure-only case: rows present where either has a value, '-' where one has none."""
    from solver.compare import compare

    text, page = compare([small, sphere], tmp_path / "cmp")
    summary = json.loads((small / results.SUMMARY).read_text())
    lines = text.splitlines()
    assert lines[0] == f"| outcome | {small.name} | {sphere.name} |"
    tumour_auc = next(line for line in lines if line.startswith("| tumour mean free AUC"))
    assert f"{summary['regions']['tumour']['auc_free_mean'] * 1e3 / 60:.4g}" in tumour_auc
    assert tumour_auc.endswith("| - |")  # no drug in the Baxter-Jain case
    assert "| TNF | 1 mg | none |" in text
    html_text = page.read_text()
    assert html_text.count("data:image/png;base64,") >= 4  # perfusate, tumour C, leak, T, IFP, DVH
    again = _cli("compare", str(small), str(sphere), "-o", str(tmp_path / "cmp"))
    assert again.returncode == 2 and "pass --force" in again.stderr


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [2, 3])
def test_benchmark_case_same_functionals_at_two_and_three_ranks(sphere, tmp_path, ranks):
    """The Baxter-Jain case's summary at 2 and 3 ranks against the 1-rank run (functionals, not dof arrays);
    then the 3-rank result probed at 1 rank agrees with the 1-rank result probed (any writer, any reader)."""
    out = tmp_path / "r"
    done = _cli("run", str(CASES / "benchmark-baxter-jain-raised-k"), "-o", str(out), "-q", ranks=ranks)
    assert done.returncode == 0, done.stderr
    serial = json.loads((sphere / results.SUMMARY).read_text())
    parallel = json.loads((out / results.SUMMARY).read_text())
    assert parallel["ranks"] == ranks and serial["ranks"] == 1
    for key in ("volume_m3", "pressure_mean_Pa"):
        assert parallel["regions"]["tumour"][key] == pytest.approx(serial["regions"]["tumour"][key], rel=1e-8), key
    line = ["--field", "p_mmHg", "--line=-0.008,0,0:0.008,0,0", "--n", "9"]
    a, b = _cli("probe", str(sphere), *line), _cli("probe", str(out), *line)
    assert np.allclose(np.loadtxt(a.stdout.splitlines()[1:], delimiter=","),
                       np.loadtxt(b.stdout.splitlines()[1:], delimiter=","), rtol=1e-7, atol=1e-9)  # fmt: skip
