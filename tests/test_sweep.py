"""Sweeps on SLURM: expansion and validation, collection, and a real single-node SLURM cluster (issue 5)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solver import results
from solver.sweep import SweepError, collect, expand
from tests.conftest import CASES, ROOT

BIN = Path(sys.executable).parent
SLURM_REQUIRED = os.environ.get("ISOLIMB_REQUIRE_SLURM") == "1"  # set by .ci/run, which installs it
pytestmark = pytest.mark.serial  # files and subprocesses; each run inside is itself an MPI job

SPEC = """
base = "{base}"
ranks = {ranks}
time = "00:05:00"
[parameters]
"tissue.tumour.K" = ["3.1e-12 m^2/(Pa s)", "6.2e-12 m^2/(Pa s)"]
{extra}
"""


def _spec(tmp_path: Path, ranks: int = 1, extra: str = "") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SPEC.format(base=CASES / "benchmark-baxter-jain-raised-k", ranks=ranks, extra=extra))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI", "HYDRA"))}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["ISOLIMB"] = str(BIN / "isolimb")
    return env


def test_expand_writes_one_valid_case_per_grid_point(tmp_path):
    out = tmp_path / "sweep"
    runs = expand(_spec(tmp_path, ranks=2, extra='"physics.heat" = ["off", "steady"]'), out)
    assert [r["id"] for r in runs] == ["run-0000", "run-0001", "run-0002", "run-0003"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == [r["id"] for r in runs]
    text = (out / "cases" / "run-0003" / "case.toml").read_text()
    assert '"K" = "6.2e-12 m^2/(Pa s)"' in text and '"heat" = "steady"' in text
    assert str((out / "results" / "run-0003").resolve()) in text  # each run writes its own folder
    with open(out / results.RUNS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[2] == {"id": "run-0002", "tissue.tumour.K": "6.2e-12 m^2/(Pa s)", "physics.heat": "off"}
    sbatch = (out / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-3" in sbatch and "#SBATCH --ntasks=2" in sbatch and "mpiexec -n 2" in sbatch
    assert "OMP_NUM_THREADS=1" in sbatch and (out / "logs").is_dir()


@pytest.mark.parametrize(
    "extra, message",
    [
        ('"tissue.tumour.Lp" = [3]', "run-0000"),  # a bare number for a dimensional quantity
        ('"numerics.nonsense" = [1]', "nonsense"),  # unknown keys stay errors
    ],
)
def test_expand_refuses_a_grid_point_that_is_not_a_valid_case(tmp_path, extra, message):
    with pytest.raises(SweepError, match=message):
        expand(_spec(tmp_path, extra=extra), tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "cases").exists()  # nothing written before every point validated


def test_collect_gathers_finished_runs_and_names_the_missing(tmp_path):
    out = tmp_path / "sweep"
    expand(_spec(tmp_path), out)
    done = subprocess.run(
        [str(BIN / "isolimb"), "run", str(out / "cases" / "run-0001"), "-q"], capture_output=True, env=_env()
    )
    assert done.returncode == 0, done.stderr
    path, missing, pictures, _, _ = collect(out)
    assert missing == ["run-0000"] and len(pictures) == 1
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["run-0001"] and float(rows[0]["drug_balance_relative_error"]) == 0.0


def test_fixed_values_reach_every_run_and_local_runs_go_in_parallel(tmp_path):
    """[fixed] sets the study's mesh and output in every run; JOBS=2 ./run_local.sh runs two at a time, names a
    run that fails, finishes the others and exits non-zero."""
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text() + '[fixed]\n"mesh.cell_size" = "2 mm"\n"output.formats" = ["vtkhdf"]\n')
    out = tmp_path / "sweep"
    expand(spec, out)
    for run in ("run-0000", "run-0001"):
        text = (out / "cases" / run / "case.toml").read_text()
        assert '"cell_size" = "2 mm"' in text and '"formats" = ["vtkhdf"]' in text
    (out / "cases" / "run-0000" / "case.toml").write_text("title = 3\n")  # a run that cannot start
    done = subprocess.run(
        [str(out / "run_local.sh")], capture_output=True, text=True, env={**_env(), "JOBS": "2"}, timeout=300
    )
    assert done.returncode != 0 and "cases/run-0000 failed" in done.stderr
    assert (out / "results" / "run-0001" / results.SUMMARY).is_file()
    assert json.loads((out / "results" / "run-0001" / results.SUMMARY).read_text())["mesh"]


@pytest.mark.parametrize(
    "fixed, message",
    [
        ('"tissue.tumour.K" = "1e-12 m^2/(Pa s)"', "both fixed and a parameter"),
        ('"mesh.radius.x" = 1', "fixed 'mesh.radius.x'"),
    ],
)
def test_fixed_values_are_checked(tmp_path, fixed, message):
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text() + f"[fixed]\n{fixed}\n")
    with pytest.raises(SweepError, match=message):
        expand(spec, tmp_path / "sweep")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real single-node SLURM (slurmctld + slurmd on localhost); yields the environment to submit with."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None or os.geteuid() != 0:
        if SLURM_REQUIRED:
            pytest.fail("SLURM (slurm-wlm, munge) and root are required (ISOLIMB_REQUIRE_SLURM=1)")
        pytest.skip("needs Debian's slurm-wlm and munge, as root (.ci/run installs them)")
    cluster = ROOT / "tests" / "slurm" / "cluster.sh"
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(cluster), "start", str(state)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield {**_env(), "SLURM_CONF": started.stdout.strip().splitlines()[-1]}
    finally:
        subprocess.run([str(cluster), "stop", str(state)], timeout=60)


def test_slurm_job_array_of_mpi_runs(tmp_path, slurm):
    """A 2-run array of 2-rank MPI jobs."""
    out = tmp_path / "sweep"
    expand(_spec(tmp_path, ranks=2), out)
    job = subprocess.run(
        ["sbatch", "--wait", "sweep.sbatch"], cwd=out, capture_output=True, text=True, env=slurm, timeout=300
    )
    logs = "".join(p.read_text() for p in (out / "logs").glob("*"))
    assert job.returncode == 0, job.stderr + logs
    path, missing, *_ = collect(out)
    assert missing == []
    for run in ("run-0000", "run-0001"):
        prov = json.loads((out / "results" / run / results.PROVENANCE).read_text())
        assert prov["ranks"] == 2
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == 2


# A Sobol' study of 8 parameters at the smallest size that runs: student-small on a 6 mm mesh, 10 min of
# perfusion in 2-min steps (about 3 s a run), a Saltelli design with n = 2 base points: 2 x (8 + 2) = 20 runs.
TINY = {
    'cell_size = "3 mm"': 'cell_size = "6 mm"',
    'perfusion_duration = "30 min"': 'perfusion_duration = "10 min"',
    'washout_duration = "5 min"': 'washout_duration = "2 min"',
    'end_time = "65 min"': 'end_time = "16 min" #',
    'time = "5 min"': 'time = "2 min"',
    'dt = "1 min"': 'dt = "2 min"',
    'interval = "10 min"': 'interval = "8 min"',
}
SOBOL = """
base = "tiny/case.toml"
time = "00:05:00"
[design]
method = "saltelli"
n = 2
seed = 7
[parameters]
"protocol.inflow_temperature.0.value" = { distribution = "uniform", range = ["39 degC", "42 degC"] }
"protocol.flow" = { distribution = "uniform", range = ["3 mL/min", "8 mL/min"] }
"protocol.leak_rate" = { distribution = "loguniform", range = ["0.01 %/min", "0.3 %/min"] }
"protocol.doses.0.per_limb_volume" = { distribution = "triangular", range = ["7.5 mg/L", "13 mg/L"], mode = "10 mg/L" }
"agents.melphalan.f_u" = { distribution = "uniform", range = [0.2, 0.45] }
"agents.melphalan.P" = { distribution = "loguniform", range = ["1.2e-8 m/s", "4.8e-8 m/s"] }
"agents.melphalan.kill_constant" = { distribution = "loguniform", range = ["0.1 mL/(ug*h)", "3 mL/(ug*h)"] }
[parameters."tissue.tumour.Lp"]
distribution = "normal"
mean = "2.1e-11 m/(Pa s)"
sd = "0.5e-11 m/(Pa s)"
range = ["1e-11 m/(Pa s)", "4e-11 m/(Pa s)"]
"""


def tiny_sobol_study(tmp_path: Path) -> Path:
    """The spec of the tiny Sobol' study, beside its base case."""
    text = (CASES / "student-small" / "case.toml").read_text()
    for old, new in TINY.items():
        assert old in text, f"student-small changed: {old!r} not found"
        text = text.replace(old, new)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "case.toml").write_text(text)
    (tmp_path / "sobol.toml").write_text(SOBOL)
    return tmp_path / "sobol.toml"


@pytest.mark.slow
def test_slurm_sobol_study_of_eight_parameters(tmp_path, slurm):
    """Issue 15's acceptance at a tiny size: isolimb sweep (Saltelli design, 8 parameters) -> a SLURM array of
    20 runs -> isolimb collect, which writes Sobol' first- and total-order indices with intervals per headline
    outcome; an outcome the case cannot give (no skin) is named and skipped."""
    out = tmp_path / "sweep"
    cli = [str(BIN / "isolimb")]
    made = subprocess.run(
        [*cli, "sweep", str(tiny_sobol_study(tmp_path)), "-o", str(out)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    # the forms compiled once (here: found in the user's cache, warm from the other tests), read by every task
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    warm = subprocess.run(
        [*cli, "run", str(tmp_path / "tiny"), "-o", str(tmp_path / "warm-up"), "-q"],
        capture_output=True,
        text=True,
        env={**_env(), "XDG_CACHE_HOME": cache},
    )
    assert warm.returncode == 0, warm.stderr
    job = subprocess.run(
        ["sbatch", "--wait", "sweep.sbatch"],
        cwd=out,
        capture_output=True,
        text=True,
        env={**slurm, "ISOLIMB_JIT_CACHE": cache},
        timeout=600,
    )
    logs = "".join(p.read_text() for p in (out / "logs").glob("*"))
    assert job.returncode == 0, job.stderr + logs
    collected = subprocess.run([*cli, "collect", str(out)], capture_output=True, text=True)
    assert collected.returncode == 0, collected.stderr
    assert "skin peak T (degC): not in the summaries" in collected.stderr
    with open(out / results.SENSITIVITY_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    outcomes = {r["outcome"] for r in rows}
    assert {"tumour_log10_kill_mean", "tumour_auc_free_mg_min_per_L", "muscle_auc_free_mg_min_per_L"} <= outcomes
    assert {"tracer_leak_percent", "marrow_surviving_fraction", "tumour_tissue_drug_ug_per_g"} <= outcomes
    kill = {r["parameter"]: r for r in rows if r["outcome"] == "tumour_log10_kill_mean"}
    assert len(kill) == 8 and all(float(r["ST conf"]) >= 0 for r in kill.values())
    page = (out / results.SENSITIVITY).read_text()
    assert "Which parameters dominate each outcome" in page and page.count("data:image/png;base64") >= 6


FAIL_ONCE = """#!/bin/bash
# An MPI launcher whose first attempt at run-0000 fails (a node lost at start), then the real one.
for a in "$@"; do case "$a" in cases/run-0000) [ -e failed-once ] || {{ touch failed-once; exit 3; }} ;; esac; done
exec {mpiexec} "$@"
"""


@pytest.mark.slow
def test_snakemake_workflow_on_slurm_retries_and_resumes(tmp_path, slurm):
    """hpc/snakemake: the Snakefile with the SLURM profile on the real SLURM, 2-rank runs. run-0000's first attempt
    fails and is retried; run-0001 was stopped with a checkpoint before and is resumed, not started again; a
    second snakemake finds nothing to do."""
    snakemake = BIN / "snakemake"
    if not snakemake.exists():
        pytest.skip("needs snakemake and snakemake-executor-plugin-slurm (the workflow extra)")
    tiny_sobol_study(tmp_path)
    spec = tmp_path / "grid.toml"
    spec.write_text('base = "tiny/case.toml"\n[parameters]\n"protocol.flow" = ["4 mL/min", "6 mL/min"]\n')
    out = tmp_path / "sweep"
    made = subprocess.run([str(BIN / "isolimb"), "sweep", str(spec), "-o", str(out)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    stopped = subprocess.run(
        [str(BIN / "isolimb"), "run", "cases/run-0001", "--stop-at", "8 min", "-q"], cwd=out, env=_env()
    )
    assert stopped.returncode == 75
    launcher = tmp_path / "fail-once"
    launcher.write_text(FAIL_ONCE.format(mpiexec=BIN / "mpiexec"))
    launcher.chmod(0o755)
    command = [str(snakemake), "-s", str(ROOT / "hpc" / "snakemake" / "Snakefile"), "-d", str(out)]
    command += ["--profile", str(ROOT / "hpc" / "snakemake" / "slurm"), "--slurm-no-account"]
    command += ["--slurm-init-seconds-before-status-checks", "1"]
    command += ["--config", f"isolimb={BIN / 'isolimb'}", f"mpi={launcher}", "ranks=2"]
    first = subprocess.run(command, cwd=out, capture_output=True, text=True, env=slurm, timeout=500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (out / "failed-once").exists()  # the first attempt failed: snakemake's retry ran it
    for run, segments in (("run-0000", 1), ("run-0001", 2)):
        summary = json.loads((out / "results" / run / results.SUMMARY).read_text())
        assert len(summary["segments"]) == segments and summary["segments"][-1]["ranks"] == 2
    again = subprocess.run(command, cwd=out, capture_output=True, text=True, env=slurm, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_slurm_warning_signal_checkpoints_and_the_next_job_resumes(tmp_path, slurm):
    """hpc/slurm/run.sbatch: SLURM's USR1 to the batch script (as --signal=B:USR1 sends it before the wall time)
    stops the 2-rank run with a checkpoint (status 75); the same job submitted again resumes and finishes; a
    third submission finds the run finished and does nothing."""
    out = tmp_path / "result"
    env = {
        **slurm,
        "CASE": str(CASES / "student-small"),
        "OUT": str(out),
        "LAUNCH": f"{BIN / 'mpiexec'} -n 2",
    }
    script = str(ROOT / "hpc" / "slurm" / "run.sbatch")
    submit = ["sbatch", "--parsable", "--ntasks=2", f"--output={tmp_path}/job-%j.out", script]
    first = subprocess.run(submit, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    job = first.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 240
    log = out / results.RUN_LOG
    while not (log.exists() and "t =   10.0 min" in log.read_text()):
        assert time.monotonic() < deadline, "the job did not get to 10 min"
        time.sleep(0.2)
    signalled = subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=env, capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the signalled job did not end"
        time.sleep(0.5)
    output = (tmp_path / f"job-{job}.out").read_text()
    assert "isolimb exited with status 75" in output, output
    assert (out / "checkpoint" / results.CHECKPOINT_STATE).exists() and not (out / results.SUMMARY).exists()
    second = subprocess.run([*submit[:2], "--wait", *submit[2:]], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    summary = json.loads((out / results.SUMMARY).read_text())
    assert [s["ranks"] for s in summary["segments"]] == [2, 2]
    assert summary["segments"][0]["to_min"] >= 10 and summary["segments"][1]["to_min"] == 65
    assert summary["drug_balance_relative_error"] < 1e-10
    third = subprocess.run([*submit[:2], "--wait", *submit[2:]], cwd=tmp_path, capture_output=True, text=True, env=env)
    job3 = third.stdout.strip().split(";")[0]
    assert third.returncode == 0 and "nothing to do" in (tmp_path / f"job-{job3}.out").read_text()
