"""Case files: every case in cases/ validates; malformed cases give one clear line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from solver.case import CaseError, parse_case
from solver.cli import main

from .conftest import CASES, write_case

VALID = """
title = "slab"
[mesh]
generator = "slab"
size = ["1 cm", "2 mm", "2 mm"]
cell_size = "1 mm"
[agents.melphalan]
[numerics]
dt = "1 min"
"""

ALL_CASES = sorted(p.parent.name for p in CASES.glob("*/case.toml"))
# inputs a case reads that a script makes rather than git keeps (`make synthetic-leg`), with their script
GENERATED = {"ilp-synthetic-leg-image": (CASES.parent / "meshes" / "synthetic-leg.nii.gz", "synthetic_leg.py")}


def _make_generated_inputs(name: str, comm) -> None:
    """Make a case's generated input file (rank 0) as `make` would, when it is not there yet."""
    if name not in GENERATED:
        return
    path, script = GENERATED[name]
    if comm.rank == 0 and not path.exists():
        subprocess.run([sys.executable, str(path.parent / script), "-o", str(path)], check=True, capture_output=True)
    comm.barrier()


@pytest.mark.parametrize("name", ALL_CASES)
def test_every_case_checks(name, capsys, comm):
    _make_generated_inputs(name, comm)
    assert main(["check", str(CASES / name)]) == 0
    if comm.rank == 0:  # rank 0 prints
        assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize("name", ALL_CASES)
def test_every_case_has_readme(name):
    assert (CASES / name / "README.md").is_file()


# (description, edit of VALID, fragment the one-line error must contain)
MALFORMED = [
    ("unknown key", "colour = 'red'\n" + VALID, "unknown key 'colour'"),
    (
        "unknown nested key",
        VALID.replace('dt = "1 min"', 'dt = "1 min"\ntimestep = "1 s"'),
        "numerics.timestep",
    ),
    ("missing key", VALID.replace('dt = "1 min"', ""), "missing key 'numerics.dt'"),
    ("wrong unit", VALID.replace('dt = "1 min"', 'dt = "1 mmHg"'), "numerics.dt = '1 mmHg': expected a time"),
    ("bare number", VALID.replace('dt = "1 min"', "dt = 60"), "numerics.dt = 60: expected a time"),
    ("negative time", VALID.replace('dt = "1 min"', 'dt = "-1 min"'), "numerics.dt = '-1 min'"),
    ("unknown region", VALID + "[tissue.tumor]\nK = '1e-14 m^2/(Pa s)'\n", "tissue.tumor"),
    (
        "region not in mesh",
        VALID + "[tissue.tumour]\nK = '1e-14 m^2/(Pa s)'\n",
        "region 'tumour' is not in this mesh",
    ),
    ("unknown boundary", VALID + "[boundaries.skin]\n", "unknown boundary 'skin'"),
    (
        "fixed drug boundary",
        VALID.replace(
            "[agents.melphalan]", "[boundaries.x0]\ndrug = { type = 'fixed', value = '1 mg/L' }\n[agents.melphalan]"
        ),
        "boundaries.x0.drug",
    ),
    ("toml syntax", VALID + "[numerics\n", "TOML syntax error"),
    (
        "missing mesh file",
        VALID.replace(
            'generator = "slab"\nsize = ["1 cm", "2 mm", "2 mm"]\ncell_size = "1 mm"',
            'generator = "file"\npath = "nowhere.msh"\nregions = { muscle = 1 }',
        ),
        "mesh file not found",
    ),
    ("unknown generator", VALID.replace('"slab"', '"torus"'), "mesh"),
    (
        "unknown agent in dose",
        VALID.replace(
            "[agents.melphalan]",
            "[agents.melphalan]\n[protocol]\nkind='ILP'\n"
            "flow='1 mL/min'\nprime_volume='1 L'\nperfusion_duration='10 min'\nwashout_duration='0 min'\n"
            "washout_flow='0 mL/min'\nend_time='10 min'\nleak_rate='0 1/s'\nsystemic_volume='40 L'\n"
            "systemic_clearance='1 L/h'\ninitial_temperature='37 degC'\n"
            "doses=[{agent='cisplatin', time='0 min', amount='1 mg'}]",
        ),
        "cisplatin",
    ),
]


@pytest.mark.parametrize(("what", "text", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_case(what, text, fragment, shared_tmp, capsys, comm):
    folder = write_case(shared_tmp / "bad", text)
    with pytest.raises(CaseError) as info:
        parse_case(folder)
    message = str(info.value)
    assert "\n" not in message
    assert str(folder / "case.toml") in message
    assert fragment in message
    assert main(["check", str(folder)]) == 2  # on every rank
    err = capsys.readouterr().err.strip()
    if comm.rank == 0:
        assert err.count("\n") == 0 and err.startswith("isolimb: error:") and fragment in err
    else:
        assert err == ""


def test_valid_case_resolves_to_si(shared_tmp, capsys, comm):
    folder = write_case(shared_tmp / "ok", VALID)
    assert main(["check", str(folder)]) == 0
    out = comm.bcast(capsys.readouterr().out, root=0)
    assert "numerics.dt = 60 s" in out
    assert "mesh.cell_size = 0.001 m" in out


@pytest.mark.serial
def test_cli_error_has_no_traceback(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "case.toml").write_text(VALID.replace('dt = "1 min"', "dt = 60"))
    proc = subprocess.run([sys.executable, "-m", "solver", "check", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
