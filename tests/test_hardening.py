"""Hardened against users and clusters (issue 16): bad inputs caught before any mesh, a results folder owned by one
run, strict JSON, post-processing of damaged files, and a fuzz layer over valid cases.

Every input error is one line naming the file, the key and the value, exit status 2, no traceback, on every rank.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from mpi4py import MPI

from solver import lock, results
from solver.case import CaseError, parse_case, parse_case_tree
from solver.cli import main
from solver.output import OutputError, non_finite, write_json

from .conftest import CASES, ROOT, write_case

COMM = MPI.COMM_WORLD
BASE = (CASES / "student-small" / "case.toml").read_text() + '\n[numerics.petsc.transport]\nksp_type = "gmres"\n'
LEG = (CASES / "ilp-tm-sarcoma-leg" / "case.toml").read_text()
SLAB = """
title = "slab"
[mesh]
generator = "slab"
size = ["1 cm", "2 mm", "2 mm"]
cell_size = "1 mm"
[agents.melphalan]
[numerics]
dt = "1 min"
"""
ROBIN = 'heat = { type = "robin", h = "10 W/(m^2 K)", ambient = "30 degC" }'
AGENT = (
    "D='2.4e-10 m^2/s'\nP='2.4e-8 m/s'\nsigma_d=0.0\nf_u=0.2\nhalf_life='66 min'\nEa='60.7 kJ/mol'\nk_up='1e-3 1/s'\n"
    "kappa=2.0\nalkylation_half_life='120 min'\nmolar_mass='305.2 g/mol'\n"
)


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, case text, fragment the one-line error must contain); the inputs of issue 16 as written there
BAD = [
    ("fixed heat '37'", edit(ROBIN, 'heat = { type = "fixed", value = "37" }'), "boundaries.outer.heat.value = '37'"),
    ("fixed heat 'warm'", edit(ROBIN, 'heat = { type = "fixed", value = "warm" }'), "heat.value = 'warm'"),
    (
        "fixed pressure '5 mL'",
        edit(ROBIN, ROBIN + '\npressure = { type = "fixed", value = "5 mL" }'),
        "boundaries.outer.pressure.value = '5 mL': expected a pressure",
    ),
    (
        "fixed heat as a delta",
        edit(ROBIN, 'heat = { type = "fixed", value = "37 delta_degC" }'),
        "not a temperature difference",
    ),
    (
        "petsc unknown type",
        edit('ksp_type = "gmres"', 'ksp_type = "nonsense"'),
        "numerics.petsc.transport.ksp_type = 'nonsense': PETSc rejects it",
    ),
    ("petsc key with a space", edit('ksp_type = "gmres"', '"ksp type" = "gmres"'), "not a PETSc option name"),
    ("petsc key with a dash", edit('ksp_type = "gmres"', '"-ksp_rtol" = 1e-8'), "leave out the leading '-'"),
    ("petsc typo", edit('ksp_type = "gmres"', 'ksp_typo = "gmres"'), "ksp_typo = 'gmres': PETSc did not use"),
    ("petsc unused by this pc", edit('ksp_type = "gmres"', 'pc_type = "jacobi"\nsub_pc_type = "ilu"'), "sub_pc_type"),
    ("petsc bad number", edit('ksp_type = "gmres"', 'ksp_rtol = "abc"'), "ksp_rtol = 'abc'"),
    ("petsc value with a space", edit('ksp_type = "gmres"', 'ksp_type = "gm res"'), "not a PETSc option value"),
    (
        "distal_radius 30 cm",
        edit("size_factor = 1.1", 'size_factor = 1.1\ndistal_radius = "30 cm"', LEG),
        "mesh.distal_radius = 0.3 m",
    ),
    ("bone fills the limb", edit("size_factor = 1.1", 'size_factor = 1.1\nbone_radius = "6 cm"', LEG), "no muscle"),
    ("tumour outside the limb", edit('radial_offset = "3.6 cm"', 'radial_offset = "9 cm"', LEG), "mesh.sarcoma"),
    ("skin 1 um", edit("size_factor = 1.1", 'size_factor = 1.1\nskin_thickness = "1 um"', LEG), "skin_thickness"),
    (
        "necrotic core 0.01 mm",
        edit("necrotic_fraction = 0.4", "necrotic_fraction = 1e-5", LEG),
        "the necrosis surface curves with a radius of",
    ),
    ("outer radius inside", edit('outer_radius = "3 cm"', 'outer_radius = "5 mm"'), "mesh.outer_radius = 0.005 m"),
    ("cell size 1 um", edit('cell_size = "3 mm"', 'cell_size = "1 um"'), "mesh.cell_size"),
    ("nan mmHg", edit('capillary_pressure = "35 mmHg"', 'capillary_pressure = "nan mmHg"'), "expected a finite"),
    ("inf mL/min", edit('flow = "5 mL/min"', 'flow = "inf mL/min"'), "protocol.flow = 'inf mL/min'"),
    ("1e400 s", edit('dt = "1 min"', 'dt = "1e400 s"'), "numerics.dt = '1e400 s': expected a finite time"),
    (
        "1e6 degC",
        edit('initial_temperature = "36 degC"', 'initial_temperature = "1e6 degC"'),
        "expected a temperature between 0 degC and 60 degC",
    ),
    ("-5 degC", edit('ambient = "30 degC"', 'ambient = "-5 degC"'), "ambient = '-5 degC'"),
    (
        "36 delta_degC",
        edit('initial_temperature = "36 degC"', 'initial_temperature = "36 delta_degC"'),
        "protocol.initial_temperature = '36 delta_degC': expected an absolute temperature",
    ),
    (
        "1e300 mg/L",
        edit('per_limb_volume = "10 mg/L"', 'per_limb_volume = "1e300 mg/L"'),
        "per_limb_volume = '1e300 mg/L'",
    ),
    (
        "unsorted inflow schedule",
        edit(
            'inflow_temperature = [{ time = "0 min", value = "40 degC" }]',
            'inflow_temperature = [{ time = "20 min", value = "37 degC" }, { time = "0 min", value = "40 degC" }]',
        ),
        "protocol.inflow_temperature[1].time = '0 min': before the previous point",
    ),
    (
        "schedule point after the end",
        edit(
            'inflow_temperature = [{ time = "0 min", value = "40 degC" }]',
            'inflow_temperature = [{ time = "0 min", value = "40 degC" }, { time = "2 h", value = "37 degC" }]',
        ),
        "after the run ends",
    ),
    ("TNF after the end", edit('time = "0 min"\ntau', 'time = "60 min"\ntau'), "protocol.tnf.time = '60 min'"),
    ("dose after the perfusion", edit('time = "5 min"', 'time = "35 min"'), "doses[0].time = 35 min"),
    ("dt longer than the run", edit('dt = "1 min"', 'dt = "2 h"'), "numerics.dt = '2 h': longer than the run"),
    ("a million steps", edit('dt = "1 min"', 'dt = "1 ms"'), "steps to the end of the run"),
    ("2**10000 s", edit('dt = "1 min"', 'dt = "2**10000 s"'), "the number overflows"),
    ("10**10**10 s", edit('dt = "1 min"', 'dt = "10**10**10 s"'), "the number overflows"),
    ("a very long value", edit('dt = "1 min"', f'dt = "{"1" * 300} s"'), "a string of 302 characters"),
    (
        "agent name reaching a path",
        edit(
            'agent = "melphalan"',
            'agent = "../../escaped"',
            edit("[agents.melphalan]", f"[agents.'../../escaped']\n{AGENT}"),
        ),
        "agents.'../../escaped': an agent name must start with a letter",
    ),
    (
        "a misspelt key",
        edit('ambient = "30 degC"', 'ambiant = "30 degC"'),
        "unknown key 'boundaries.outer.heat.ambiant'",
    ),
    ("a union tag is not a key", edit('radius = "1 cm"', 'radius = "-1 cm"'), "mesh.radius = '-1 cm'"),
    (
        "a list index",
        edit('per_limb_volume = "10 mg/L"', 'per_limb_volume = "10 mg/L"\namount = "1 mg"'),
        "protocol.doses[0]: give exactly one of 'amount' or 'per_limb_volume'",
    ),
    (
        "slab 1e-9 m thick (OpenCASCADE: Bnd_Box is void)",
        edit('"2 mm", "2 mm"', '"1e-9 m", "2 mm"', SLAB),
        "mesh.size[1]",
    ),
    ("limb 1 um long", edit("size_factor = 1.1", 'size_factor = 1.1\nlength = "1 um"', LEG), "mesh.length = 1e-06 m"),
    ("bone 10 um", edit("size_factor = 1.1", 'size_factor = 1.1\nbone_radius = "10 um"', LEG), "mesh.bone_radius"),
    ("sphere 1 nm", edit('radius = "1 cm"', 'radius = "1 nm"'), "mesh.radius = 1e-09 m"),
    ("shell 1e-12 m", edit('outer_radius = "3 cm"', 'outer_radius = "1.0000000001 cm"'), "mesh.outer_radius - mesh"),
    ("cells larger than the sphere", edit('cell_size = "3 mm"', 'cell_size = "2 cm"'), "larger than mesh.radius"),
    (
        "dose names an unknown agent",
        edit('agent = "melphalan"', 'agent = "cisplatin"'),
        "protocol.doses[0].agent = 'cisplatin': no such agent",
    ),
]


@pytest.mark.parametrize(("what", "text", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_before_any_mesh(what, text, fragment, shared_tmp, capsys, comm):
    folder = write_case(shared_tmp / "bad", text)
    with pytest.raises(CaseError) as info:
        parse_case(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / "case.toml") + ": ")
    assert fragment in message
    assert ": :" not in message
    assert main(["check", str(folder)]) == 2  # isolimb check runs exactly the checks of a run's start
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and err.startswith("isolimb: error:") and fragment in err
    else:
        assert err == ""
    # and run refuses it before it makes the results folder
    out = shared_tmp / "results"
    assert main(["run", str(folder), "-o", str(out), "-q"]) == 2
    assert not out.exists()


FILE_CASE = (
    'title = "x"\n[mesh]\ngenerator = "file"\npath = "box.msh"\nregions = { muscle = 7, tumour = 8 }\n'
    "boundaries = { distal = 21 }\n[numerics]\ndt = '1 s'\n"
)


def damage_mesh_file(path, how: str) -> None:
    """Damage a mesh file as a user's disk or editor would: "truncated", "empty" or "garbage" (else leave it)."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 8)


@pytest.mark.parametrize(
    "how, fragment",
    [
        ("truncated", "mesh.path = '.*box.msh': cannot read the mesh \\(Could not read"),
        ("empty", "cannot read the mesh"),
        ("garbage", "cannot read the mesh"),
        ("boundary id missing", "mesh.boundaries.distal = 22: boundary 'distal' has id 22, which the file does not"),
        ("region id missing", "mesh.regions.tumour = 9: region 'tumour' has id 9"),
        ("no cell data", "no cell data with region ids"),
        ("region id not named", "box.msh has tetrahedra with region ids \\[8\\] that no region names"),
    ],
)
def test_file_meshes_are_opened_and_their_ids_checked(how, fragment, shared_tmp, capsys, comm):
    from .test_meshes import _box_msh

    text = FILE_CASE
    if comm.rank == 0:
        path = shared_tmp / "box.msh"
        _box_msh(path)
        damage_mesh_file(path, how)
        if how == "no cell data":
            import meshio

            m = meshio.read(path)
            meshio.write(shared_tmp / "box.vtu", meshio.Mesh(m.points, [b for b in m.cells if b.type == "tetra"]))
    comm.barrier()
    if how == "boundary id missing":
        text = text.replace("distal = 21", "distal = 22")
    elif how == "region id missing":
        text = text.replace("tumour = 8", "tumour = 9")
    elif how == "region id not named":
        text = text.replace(", tumour = 8", "")
    elif how == "no cell data":
        text = text.replace("box.msh", "box.vtu").replace("{ distal = 21 }", "{}")
    folder = write_case(shared_tmp, text)
    with pytest.raises(CaseError, match=fragment):
        parse_case(folder)
    assert main(["check", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and err.startswith("isolimb: error:")


@pytest.mark.parametrize("name", sorted(p.parent.name for p in CASES.glob("*/case.toml")))
def test_every_case_still_valid(name):
    parse_case(CASES / name)


def test_a_negative_taper_and_an_offset_are_still_fine(shared_tmp):
    """Limits are limits of sanity, not of style: a limb wider distally, 98.6 degF, 310 K, a PETSc override."""
    text = edit("size_factor = 1.1", 'size_factor = 1.1\ndistal_radius = "9 cm"', LEG)
    text = edit('initial_temperature = "35 degC"', 'initial_temperature = "95 degF"', text)
    text = edit('ambient = "24 degC"', 'ambient = "297 K"', text)
    text += '\n[numerics.petsc.pressure]\nksp_rtol = 1e-9\npc_gamg_threshold = 0.02\nksp_monitor = ""\n'
    text += (
        "\n[numerics.petsc.heat]\nksp_max_it = 1\nksp_error_if_not_converged = true\n"  # fails only by not converging
    )
    case = parse_case(write_case(shared_tmp / "ok", text))
    assert abs(case.protocol.initial_temperature - 308.15) < 1e-9


@pytest.mark.serial
@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("not UTF-8", BASE.replace("Student case", "Student case \xe9").encode("latin-1"), "not UTF-8 text"),
        ("2**10000 s", edit('dt = "1 min"', 'dt = "2**10000 s"').encode(), "numerics.dt = '2**10000 s'"),
        ("petsc nonsense", edit('ksp_type = "gmres"', 'ksp_type = "nonsense"').encode(), "PETSc rejects it"),
        ("binary garbage", bytes(range(256)) * 4, "case.toml"),
    ],
)
def test_cli_bad_files_exit_2_one_line_no_traceback(name, content, fragment, tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "case.toml").write_bytes(content)
    for command in (["check", str(tmp_path / "case")], ["run", str(tmp_path / "case"), "-o", str(tmp_path / "r")]):
        done = _cli(*command)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert fragment in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", ["--checkpoint-every", "--stop-at"])
@pytest.mark.parametrize("value", ["nan min", "inf min", "2**10000 s", "-1 min", "5 mL"])
def test_run_time_options_checked_before_any_folder(option, value, shared_tmp, capsys, comm):
    folder = write_case(shared_tmp / "slab", SLAB)
    out = shared_tmp / "results"
    assert main(["run", str(folder), "-o", str(out), option, value]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and option in err and repr(value) in err
    assert not out.exists()


# ------------------------------------------------------------------------------------- folder ownership
def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "solver", *args], capture_output=True, text=True, cwd=ROOT, env=env, **kw
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the small slab case (a few seconds), made at every rank count; rank 0's path."""
    base = Path(tmp_path_factory.mktemp("finished")) if COMM.rank == 0 else None
    base = COMM.bcast(base, root=0)
    case = write_case(base / "case", SLAB)
    assert main(["run", str(case), "-o", str(base / "run"), "-q"]) == 0
    yield base / "run"
    COMM.barrier()


def _copy(comm, source: Path, target: Path) -> Path:
    if comm.rank == 0:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    comm.barrier()
    return target


def _lock_with(folder: Path, pid: int, host: str | None = None) -> None:
    (folder / lock.LOCK_NAME).write_text(
        json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": time.time(), "command": "test"})
    )


@pytest.fixture
def sleeper():
    """A live process on this host that is not us (its pid owns a lock in tests)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_the_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path, sleeper):
    folder = tmp_path / "r"
    assert lock.acquire(folder, "test") and (folder / lock.LOCK_NAME).exists()
    owner = json.loads((folder / lock.LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    lock.release(folder)
    assert not (folder / lock.LOCK_NAME).exists()
    _lock_with(folder, sleeper)
    with pytest.raises(lock.LockError, match=f"in use by test \\(pid {sleeper} on "):
        lock.acquire(folder, "test")
    assert lock.held_by_other(folder) is not None
    _lock_with(folder, sleeper, host="another-node")  # cannot be checked from here: respected while touched
    with pytest.raises(lock.LockError, match="another-node"):
        lock.acquire(folder, "test")
    old = time.time() - lock.STALE_AFTER - 10  # untouched for longer than the heartbeat keeps it: a dead node
    os.utime(folder / lock.LOCK_NAME, (old, old))
    assert lock.held_by_other(folder) is None
    assert lock.acquire(folder, "test")
    beat = lock.Heartbeat(folder, interval=0.05)  # a held lock is touched
    os.utime(folder / lock.LOCK_NAME, (old, old))
    time.sleep(0.3)
    beat.stop()
    assert time.time() - (folder / lock.LOCK_NAME).stat().st_mtime < 5
    lock.release(folder)
    _lock_with(folder, sleeper, host="another-node")
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lock_with(folder, dead.pid)  # a dead pid on this host: stale, taken over
    assert lock.held_by_other(folder) is None
    assert lock.acquire(folder, "test")
    assert json.loads((folder / lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in folder.iterdir()) == [lock.LOCK_NAME]
    lock.release(folder)
    assert not lock.acquire(tmp_path / "missing", "test", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(lock.LockError, match="is a file"):
        lock.acquire(tmp_path / "file", "test")
    with pytest.raises(lock.LockError, match="cannot create"):
        lock.acquire(tmp_path / "file" / "sub", "test")


def test_a_locked_folder_is_refused_by_every_command(finished, shared_tmp, capsys, comm):
    folder = _copy(comm, finished, shared_tmp / "locked")
    holder = subprocess.Popen(["sleep", "60"]) if comm.rank == 0 else None
    if comm.rank == 0:
        _lock_with(folder, holder.pid)
    comm.barrier()
    before = sorted(p.name for p in folder.iterdir()) if comm.rank == 0 else None
    case = str(folder / "case.toml")
    try:
        for args in (
            ["run", case, "-o", str(folder), "--force", "-q"],
            ["run", case, "-o", str(folder), "--continue", "-q"],
            ["run", case, "--resume", str(folder), "-q"],
            ["report", str(folder)],
            ["compare", str(folder), str(finished), "-o", str(shared_tmp / "cmp")],
            ["probe", str(folder), "--field", "T_degC", "--point", "0.005,0.001,0.001"],
        ):
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip()
            if comm.rank == 0:
                assert err.count("\n") == 0 and "is in use by test" in err, (args, err)
        if comm.rank == 0:
            assert sorted(p.name for p in folder.iterdir()) == before
            assert json.loads((folder / lock.LOCK_NAME).read_text())["pid"] == holder.pid
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    comm.barrier()
    assert main(["report", str(folder)]) == 0  # its owner is gone: the stale lock is taken over
    if comm.rank == 0:
        assert (folder / results.REPORT).exists() and not (folder / lock.LOCK_NAME).exists()


def test_force_and_continue_delete_only_what_isolimb_wrote(finished, shared_tmp, capsys, comm):
    folder = _copy(comm, finished, shared_tmp / "mine")
    if comm.rank == 0:
        (folder / "notes.txt").write_text("my notes")
        (folder / "thesis").mkdir()
        (folder / "thesis" / "chapter1.tex").write_text("...")
    comm.barrier()
    case = str(folder / "case.toml")
    for flag in ("--force", "--continue"):
        if comm.rank == 0:
            (folder / results.SUMMARY).unlink(missing_ok=True)  # --continue on a finished run does nothing
        comm.barrier()
        assert main(["run", case, "-o", str(folder), flag, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        if comm.rank == 0:
            assert "holds files isolimb did not write (notes.txt, thesis)" in err and err.count("\n") == 0
            assert (folder / "notes.txt").read_text() == "my notes" and (folder / "thesis" / "chapter1.tex").exists()
            assert (folder / results.RUN_LOG).exists() and not (folder / lock.LOCK_NAME).exists()


def test_force_replaces_an_isolimb_folder(finished, shared_tmp, comm):
    folder = _copy(comm, finished, shared_tmp / "again")
    if comm.rank == 0:
        (folder / "figures").mkdir()
        (folder / "figures" / "stale.png").write_text("old")
        (folder / ".summary.json.tmp").write_text("half")
    comm.barrier()
    assert main(["run", str(folder / "case.toml"), "-o", str(folder), "--force", "-q"]) == 2  # would delete it
    if comm.rank == 0:
        assert (folder / "case.toml").exists() and (folder / "figures" / "stale.png").exists()
    assert main(["run", str(finished.parent / "case"), "-o", str(folder), "--force", "-q"]) == 0
    if comm.rank == 0:
        assert not (folder / "figures").exists() and not (folder / ".summary.json.tmp").exists()
        assert (folder / results.SUMMARY).exists() and not (folder / lock.LOCK_NAME).exists()


@pytest.mark.serial
def test_two_concurrent_runs_into_one_folder(tmp_path):
    """Both started at once into one -o: one is refused with exit 2, the other's files are whole and its own."""
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "case.toml").write_text(SLAB.replace('title = "slab"', 'title = "concurrent"'))
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "solver", "run", str(tmp_path / "case"), "-o", str(out), "--force", "-q"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    done = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in done)
    refused = [err for code, err in done if code == 2]
    if codes == [0, 0]:  # the second started only after the first had finished: --force replaced it whole
        pytest.skip("the runs did not overlap on this machine")
    assert codes == [0, 2], done
    assert "is in use by isolimb run" in refused[0] and len(refused[0].strip().splitlines()) == 1
    from solver import integrity

    assert integrity.results_problem(out) is None
    assert (out / "case.toml").read_text() == (tmp_path / "case" / "case.toml").read_text()
    assert json.loads((out / results.PROVENANCE).read_text())
    assert not (out / lock.LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ strict JSON
def test_a_non_finite_outcome_is_an_error_naming_its_key(tmp_path, comm):
    assert non_finite({"a": 1.0, "b": [0.0, {"c": 2}]}) is None
    assert non_finite({"a": {"b": [1.0, float("nan")]}})[0] == "a.b.1"
    path = tmp_path / results.SUMMARY
    with pytest.raises(OutputError, match=r"summary.json: regions.tumour.auc = inf: not a finite number"):
        write_json(comm, path, {"regions": {"tumour": {"auc": float("inf")}}})
    assert not path.exists()
    write_json(MPI.COMM_SELF, path, {"x": 1.5})
    assert json.loads(path.read_text()) == {"x": 1.5}


# ------------------------------------------------------------------------------- damaged post-processing
def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_text("")
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 if how == "truncated" else 60])


@pytest.mark.parametrize(
    "name, how, fragment",
    [
        (results.SUMMARY, "truncated", "summary.json: not valid JSON (truncated or damaged"),
        (results.SUMMARY, "empty", "summary.json: empty file"),
        (results.CASE_RESOLVED, "truncated", "case_resolved.json: not valid JSON"),
        (results.MESH_META, "missing", "mesh.json: missing"),
        (results.SERIES, "missing", "timeseries.csv: missing"),
        (results.SERIES, "empty", "timeseries.csv: empty file"),
        (results.SERIES, "header", "timeseries.csv: line 2 has"),
    ],
)
def test_post_processing_refuses_damaged_files(name, how, fragment, finished, shared_tmp, capsys, comm):
    folder = _copy(comm, finished, shared_tmp / "damaged")
    if comm.rank == 0:
        _damage(folder / name, how)
    comm.barrier()
    for args in (
        ["report", str(folder)],
        ["compare", str(finished), str(folder), "-o", str(shared_tmp / "cmp")],
        ["probe", str(folder), "--field", "T_degC", "--point", "0.005,0.001,0.001"],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        if comm.rank == 0:
            assert err.count("\n") == 0 and fragment in err, (args, err)


def test_probe_refuses_a_truncated_field_file_and_a_time_outside_the_run(finished, shared_tmp, capsys, comm):
    point = ["--field", "T_degC", "--point", "0.005,0.001,0.001"]
    assert main(["probe", str(finished), *point, "--time", "999 min"]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err == "isolimb: error: --time 999 min: outside the run's output times (0 to 1 min)"
    assert main(["probe", str(finished), *point, "--time", "1 min"]) == 0
    capsys.readouterr()
    folder = _copy(comm, finished, shared_tmp / "fields")
    if comm.rank == 0:
        _damage(folder / results.FIELDS_VTKHDF, "truncated")
    comm.barrier()
    assert main(["probe", str(folder), *point]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert "fields.vtkhdf: cannot read it (truncated or damaged" in err and err.count("\n") == 0


def test_resume_refuses_a_truncated_checkpoint_array(shared_tmp, capsys, comm):
    out = shared_tmp / "stopped"
    case = str(CASES / "student-small")
    assert main(["run", case, "-o", str(out), "-q", "--stop-at", "2 min"]) == 75
    if comm.rank == 0:
        assert not (out / lock.LOCK_NAME).exists()  # released on a stop too
        target = next(p for p in sorted((out / "checkpoint").glob("*.npy")) if p.name not in ("keys.npy", "x.npy"))
        _damage(target, "truncated")
    comm.barrier()
    capsys.readouterr()
    assert main(["run", case, "--resume", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and "unreadable checkpoint" in err and "truncated or damaged" in err, err
        assert not (out / lock.LOCK_NAME).exists()


def test_output_folders_that_are_files_are_one_line(finished, shared_tmp, capsys, comm):
    case = write_case(shared_tmp / "slab", SLAB)
    if comm.rank == 0:
        (shared_tmp / "afile").write_text("x")
    comm.barrier()
    for args, fragment in (
        (["run", str(case), "-o", str(shared_tmp / "afile"), "-q"], "afile is a file, not a results folder"),
        (["run", str(case), "-o", str(shared_tmp / "afile" / "sub"), "-q"], "cannot create results folder"),
        (["mesh", str(case), "-o", str(shared_tmp / "afile")], "afile is a file, not a folder"),
        (["compare", str(finished), str(finished), "-o", str(shared_tmp / "afile" / "x")], "cannot create folder"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        if comm.rank == 0:
            assert err.count("\n") == 0 and fragment in err, (args, err)


def test_compare_needs_two_folders(finished, capsys, comm):
    assert main(["compare", str(finished)]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert "expected two or more results folders" in err and err.count("\n") == 0


@pytest.mark.parametrize("how", ["summary", "runs"])
def test_collect_refuses_damaged_files(how, finished, shared_tmp, capsys, comm):
    sweep = shared_tmp / "sweep"
    if comm.rank == 0:
        (sweep / "results").mkdir(parents=True)
        shutil.copytree(finished, sweep / "results" / "r0")
        (sweep / results.RUNS).write_text("id,protocol.flow\nr0,5 mL/min\n")
        if how == "summary":
            _damage(sweep / "results" / "r0" / results.SUMMARY, "truncated")
        else:
            (sweep / results.RUNS).write_text("id,protocol.flow\nr0\n")
    comm.barrier()
    assert main(["collect", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and ("summary.json: not valid JSON" in err or "runs.csv: empty or damaged" in err)


# ----------------------------------------------------------------------------------------------- fuzz
VALUES: list[object] = [
    "",
    "37",
    "warm",
    "nan mmHg",
    "inf s",
    "-inf degC",
    "1e400 m",
    "1e-400 m",
    "2**10000 s",
    "10**10**10 s",
    "36 delta_degC",
    "1e6 degC",
    "-300 degC",
    "5 mL",
    "1 mmHg",
    "1 min",
    "3 mm",
    "10 mg/L",
    "0 s",
    "-1 min",
    "1 / 0 s",
    "(((((",
    "m" * 300,
    "é°C",
    "\x00",
    0,
    -1,
    1.5,
    float("nan"),
    float("inf"),
    True,
    [],
    ["1 cm"],
    {},
    {"type": "fixed", "value": "37"},
    "../../escaped",
]
KEYS = ["colour", "ksp type", "../x", "", "dt", "value", "type"]


def _leaves(tree: object, path: tuple = ()) -> list[tuple]:
    """Every key path of a TOML tree (tables, arrays and leaves)."""
    out = [path] if path else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _leaves(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _leaves(v, (*path, i))
    return out


def _mutate(tree: dict, rng: random.Random) -> dict:
    """One to three random edits of a case tree: a value replaced, a key removed or added, a list emptied."""
    import copy

    tree = copy.deepcopy(tree)
    for _ in range(rng.randint(1, 3)):
        paths = _leaves(tree)
        path = rng.choice(paths)
        parent: object = tree
        for key in path[:-1]:
            parent = parent[key]  # type: ignore[index]
        key = path[-1]
        action = rng.random()
        if action < 0.6:
            parent[key] = copy.deepcopy(rng.choice(VALUES))  # type: ignore[index]
        elif action < 0.8 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent, list):
            parent.reverse()
    return tree


def _assert_clean(path: Path, parse) -> None:
    try:
        parse()
    except CaseError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(f"{path}"), message
        assert "Traceback" not in message


TREE = tomllib.loads(BASE)


@pytest.mark.serial
def test_fuzz_mutated_cases_are_valid_or_one_line(tmp_path):
    """Property: any mutation of a valid case (values, units, keys, types) is valid or one clean CaseError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    path = tmp_path / "case.toml"

    @hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @hypothesis.given(st.randoms(use_true_random=False))
    def check(rng):
        tree = _mutate(TREE, rng)
        _assert_clean(path, lambda: parse_case_tree(tree, path))

    check()


@pytest.mark.serial
def test_fuzz_mutated_bytes_are_valid_or_one_line(tmp_path):
    """Property: a case file with bytes flipped, cut or inserted (encodings too) is valid or one clean CaseError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    data = BASE.encode()
    path = tmp_path / "case.toml"

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @hypothesis.given(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.binary(min_size=0, max_size=4)), min_size=1, max_size=4),
        st.sampled_from(["utf-8", "latin-1", "utf-16", "cut"]),
    )
    def check(edits, encoding):
        raw = bytearray(data if encoding in ("utf-8", "cut") else BASE.replace("Student", "Stüdent").encode(encoding))
        for at, chunk in edits:
            at = min(at, len(raw))
            raw[at : at + len(chunk)] = chunk
        if encoding == "cut":
            raw = raw[: edits[0][0]]
        path.write_bytes(bytes(raw))
        _assert_clean(path, lambda: parse_case(path))

    check()


def test_fuzz_sample_at_every_rank_count(shared_tmp, capsys, comm):
    """A fixed sample of mutated cases through ``isolimb check`` on every rank: exit 0 or 2, one line on rank 0."""
    rng = random.Random(16)
    for i in range(12):
        tree = _mutate(TREE, rng)
        text = _to_toml(tree)
        folder = write_case(shared_tmp / f"fuzz{i}", text)
        code = main(["check", str(folder)])
        captured = capsys.readouterr()
        assert code in (0, 2), (text, captured.err)
        if comm.rank == 0 and code == 2:
            assert captured.err.count("\n") == 1 and captured.err.startswith("isolimb: error:"), captured.err
        elif comm.rank != 0:
            assert captured.err == ""


def _to_toml(tree: dict) -> str:
    """A small TOML writer for case trees (inline tables and arrays; enough for the fuzz sample)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v == float("inf") else ("-inf" if v == -float("inf") else repr(v)))
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    return "\n".join(f"{json.dumps(str(k))} = {value(v)}" for k, v in tree.items()) + "\n"


# ------------------------------------------------------------------------------- the file system under a run
def _mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    """A small tmpfs at ``path`` (root only: the test is skipped, with the reason, otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    (path / "empty").mkdir()
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts on request (``tmpfs(size)``), unmounted at the end."""
    mounts: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        _mount_tmpfs(path, size, read_only)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=False)


def _isolimb(ranks: int, *args: str, **kw) -> subprocess.CompletedProcess:
    bin_ = Path(sys.executable).parent
    command = [str(bin_ / "isolimb"), *args]
    if ranks > 1:
        command = [str(bin_ / "mpiexec"), "-n", str(ranks), *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize(("size", "fragment"), [("4k", "cannot write case.toml"), ("1500k", "for the fields at t")])
def test_a_full_disk_is_one_line_on_every_rank(ranks, size, fragment, tmp_path, tmpfs):
    """Issue 16: a disk full at the start (4 KiB: the case file does not fit) or during the run (the field files do
    not fit) ends every rank with one line and exit 2 (it was a segfault, 139, or an HDF5/ADIOS2 abort, 134)."""
    disk = tmpfs(size)
    case = write_case(tmp_path / "case", SLAB)
    done = _isolimb(ranks, "run", str(case), "-o", str(disk / "r"), "-q")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "no space left on the device" in lines[0] and fragment in lines[0], lines[0]
    if size != "4k":
        assert (disk / "r" / results.RUN_LOG).read_text().strip().splitlines()[-1] == lines[0]
        assert not (disk / "r" / lock.LOCK_NAME).exists()


@pytest.mark.serial
def test_a_read_only_results_folder_is_one_line(tmp_path, tmpfs):
    disk = tmpfs("1m", read_only=True)
    case = write_case(tmp_path / "case", SLAB)
    for out in (disk / "new", disk / "empty"):
        done = _isolimb(1, "run", str(case), "-o", str(out), "-q")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "read-only file system" in done.stderr and str(out) in done.stderr


def test_an_io_error_on_one_rank_ends_every_rank(shared_tmp, comm):
    """A rank-0 write that fails (here: no space) is raised on every rank at the next check, naming the file."""
    import errno

    from solver.storage import Storage

    storage = Storage(comm, shared_tmp)
    if comm.rank == 0:
        with storage.caught("timeseries.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(shared_tmp / "timeseries.csv"))
    with pytest.raises(OutputError, match=r"cannot write timeseries.csv: .*timeseries.csv: no space left on the dev"):
        storage.check()
    roomy = Storage(comm, shared_tmp)
    roomy.check(0, "nothing")  # room enough
    with pytest.raises(OutputError, match="no space left on the device for the fields: .* free, about .* needed"):
        roomy.check(1 << 62, "the fields")


def test_a_checkpoint_that_cannot_be_written_fails_on_every_rank(shared_tmp, comm, monkeypatch):
    """np.save failing on rank 0 (a full disk) is a CheckpointError on every rank, not a hang; the previous
    checkpoint stays whole."""
    import errno

    import numpy as np
    from dolfinx import fem, mesh

    from solver import checkpoint
    from solver.checkpoint import CheckpointError, NodalSpace

    V = fem.functionspace(mesh.create_unit_cube(comm, 2, 2, 2), ("Lagrange", 1))
    space = NodalSpace(V)
    values = np.ones(V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts)
    checkpoint.write(shared_tmp, comm, {"time": 1.0}, {"f": (space, values)})

    def full(path, *args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(CheckpointError, match="cannot write the checkpoint: .*keys.npy: no space left on the device"):
        checkpoint.write(shared_tmp, comm, {"time": 2.0}, {"f": (space, values)})
    monkeypatch.undo()
    if comm.rank == 0:
        assert json.loads((shared_tmp / "checkpoint" / results.CHECKPOINT_STATE).read_text())["time"] == 1.0
        assert not (shared_tmp / ".checkpoint.tmp").exists()


def _wait_for_handlers(pid: int, ranks: int, timeout: float = 60) -> None:
    """Until ``ranks`` Python processes under ``pid`` (itself included) catch SIGUSR1 (``SigCgt`` in /proc)."""

    def tree() -> list[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def catches(p: int) -> bool:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            return False
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        return "python" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") and bool(
            mask & (1 << (signal.SIGUSR1 - 1))
        )

    deadline = time.monotonic() + timeout
    while sum(catches(p) for p in tree()) < ranks:
        assert time.monotonic() < deadline, "the command never caught SIGUSR1"
        time.sleep(0.01)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_stop_asked_for_while_the_command_starts_is_kept(ranks, tmp_path):
    """Issue 16: SIGUSR1 then SIGTERM as soon as the command catches them (importing, long before the run's own
    handlers exist) stop the run with exit 75 and a checkpoint at t = 0, instead of killing it (138, 143)."""
    bin_ = Path(sys.executable).parent
    out = tmp_path / "r"
    command = [str(bin_ / "isolimb"), "run", str(CASES / "student-small"), "-o", str(out), "-q"]
    if ranks > 1:
        command = [str(bin_ / "mpiexec"), "-n", str(ranks), *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_handlers(job.pid, ranks)  # the package's first line ran (on a loaded machine: more than 0.3 s)
    job.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    job.send_signal(signal.SIGTERM if ranks == 1 else signal.SIGUSR1)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 75, err
    assert "Traceback" not in err
    assert json.loads((out / "checkpoint" / results.CHECKPOINT_STATE).read_text())["time"] == 0.0


@pytest.mark.serial
def test_other_commands_end_as_a_signal_ends_them():
    """Only a run turns a stop request into a checkpoint: ``isolimb check`` asked to stop while it starts ends as
    the signal ends a program (the early handlers are replayed with the default action)."""
    from solver import _early

    assert not _early.installed  # importing the package (here, pytest) installs nothing
    bin_ = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(
        [str(bin_ / "isolimb"), "check", str(CASES / "student-small")], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    time.sleep(0.3)
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=60)
    assert job.returncode == -signal.SIGTERM
