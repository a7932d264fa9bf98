"""Issue 16's list, run again as written: every input, kill, signal, full disk and concurrent run of the issue through
the ``isolimb`` command at 1 and 2 ranks, with the outcome measured (exit status, one line or not, traceback or
not, the message) and judged against README.md's promise.

    .venv/bin/python tests/hardening_audit.py                       # prints the table, exit 1 if a promise is broken
    .venv/bin/python tests/hardening_audit.py --markdown docs/hardening.md --json audit.json
    .venv/bin/python tests/hardening_audit.py --only signal --ranks 1   # a few probes (substring of their names)
    .venv/bin/python tests/hardening_audit.py --from-json audit.json --markdown docs/hardening.md  # table only

A few minutes on two cores. The full-disk and read-only probes mount a small tmpfs and need root (skipped, with the
reason, otherwise). tests/test_hardening.py holds the same checks as fast tests; this script is the audit the
issue asks for, with its table (docs/hardening.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

from tests.test_hardening import AGENT, BASE, LEG, ROBIN, SLAB, damage_mesh_file, edit  # noqa: E402

SMALL = ROOT / "cases" / "student-small"


@dataclass
class Outcome:
    code: int | None
    stderr: str
    stdout: str = ""
    ok: bool = False
    note: str = ""

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or "Traceback" in self.stdout

    def one_line(self) -> bool:
        return len(self.lines) == 1 and not self.traceback


@dataclass
class Probe:
    name: str  # the input, as the issue words it
    before: str  # what the issue measured
    check: Callable[[Path, int], Outcome]
    ranks: tuple[int, ...] = (1, 2)
    results: dict[int, Outcome] = field(default_factory=dict)


def isolimb(*args: str, ranks: int = 1, timeout: float = 300, wait: bool = True):
    command = [str(BIN / "isolimb"), *args]
    if ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(ranks), *command]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        return Outcome(None, f"timed out after {timeout} s (a hang)", str(err.stdout or ""))
    return Outcome(done.returncode, done.stderr, done.stdout)


def write_case(folder: Path, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "case.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


def judged(out: Outcome, code: int, ok: bool = True, note: str = "") -> Outcome:
    out.ok = out.code == code and out.one_line() and ok
    out.note = note
    return out


# ------------------------------------------------------------------------------------------ input errors
def bad_case(text: str | bytes, fragment: str = "") -> Callable[[Path, int], Outcome]:
    """``isolimb check`` says it is invalid, and ``run`` refuses it before it makes the results folder."""

    def probe(tmp: Path, ranks: int) -> Outcome:
        case = write_case(tmp / "case", text)
        check = isolimb("check", str(case), ranks=ranks)
        out = isolimb("run", str(case), "-o", str(tmp / "r"), "-q", ranks=ranks)
        made = (tmp / "r").exists()
        same = check.code == 2 and check.one_line()
        note = ("" if same else f"check: exit {check.code}; ") + ("results folder made" if made else "")
        return judged(out, 2, same and not made and fragment in out.stderr, note)

    return probe


def bad_option(*options: str) -> Callable[[Path, int], Outcome]:
    def probe(tmp: Path, ranks: int) -> Outcome:
        case = write_case(tmp / "case", SLAB)
        out = isolimb("run", str(case), "-o", str(tmp / "r"), "-q", *options, ranks=ranks)
        return judged(out, 2, not (tmp / "r").exists())

    return probe


def file_mesh(how: str) -> Callable[[Path, int], Outcome]:
    text = (
        'title = "x"\n[mesh]\ngenerator = "file"\npath = "box.msh"\nregions = { muscle = 7, tumour = 8 }\n'
        "boundaries = { distal = 21 }\n[numerics]\ndt = '1 s'\n"
    )

    def probe(tmp: Path, ranks: int) -> Outcome:
        case = tmp / "case"
        case.mkdir()
        msh = case / "box.msh"
        subprocess.run(
            [sys.executable, "-c", f"from tests.test_meshes import _box_msh; _box_msh({str(msh)!r})"],
            cwd=ROOT,
            env=ENV,
            check=True,
        )
        damage_mesh_file(msh, how)
        body = text
        if how == "boundary":
            body = text.replace("distal = 21", "distal = 22")
        elif how == "unnamed region":
            body = text.replace(", tumour = 8", "")
        return bad_case(body.replace('path = "box.msh"', f'path = "{msh}"'), "box.msh")(tmp, ranks)

    return probe


# ------------------------------------------------------------------------------------------------ folders
_finished: Path | None = None


def finished(tmp_root: Path) -> Path:
    """A finished run of the slab case (made once)."""
    global _finished
    if _finished is None:
        case = write_case(tmp_root / "finished-case", SLAB)
        out = isolimb("run", str(case), "-o", str(tmp_root / "finished"), "-q")
        assert out.code == 0, out.stderr
        _finished = tmp_root / "finished"
    return _finished


_stopped: Path | None = None


def stopped(tmp_root: Path) -> Path:
    """A run of the student case stopped at 2 min with a checkpoint (made once)."""
    global _stopped
    if _stopped is None:
        out = isolimb("run", str(SMALL), "-o", str(tmp_root / "stopped"), "-q", "--stop-at", "2 min")
        assert out.code == 75, out.stderr
        _stopped = tmp_root / "stopped"
    return _stopped


def concurrent(force: bool) -> Callable[[Path, int], Outcome]:
    """Two runs into one -o at once, or a --force run while another one is live."""

    def probe(tmp: Path, ranks: int) -> Outcome:
        long = BASE.replace('end_time = "65 min"', 'end_time = "40 min"')  # runs for a while: the second meets it
        case = write_case(tmp / "case", long if force else SLAB)
        out = tmp / "r"
        if not force:
            jobs = [isolimb("run", str(case), "-o", str(out), "--force", "-q", ranks=ranks, wait=False) for _ in "ab"]
        else:
            first = isolimb("run", str(case), "-o", str(out), "-q", ranks=ranks, wait=False)
            deadline = time.monotonic() + 60
            while not (out / ".isolimb.lock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            jobs = [first, isolimb("run", str(case), "-o", str(out), "--force", "-q", ranks=ranks, wait=False)]
        done = []
        for job in jobs:
            _, err = job.communicate(timeout=300)
            done.append((job.returncode, err))
        codes = sorted(code for code, _ in done)
        refused = [Outcome(code, err) for code, err in done if code != 0]
        if codes == [0, 0]:
            return Outcome(0, "", ok=not force, note="the two runs did not overlap: the second replaced the first")
        whole = (out / "summary.json").exists() and not (out / ".isolimb.lock").exists()
        result = refused[0] if refused else Outcome(codes[0], "")
        return judged(result, 2, codes == [0, 2] and whole and "in use by" in result.stderr, "the other run: exit 0")

    return probe


def foreign(flag: str) -> Callable[[Path, int], Outcome]:
    """A folder holding isolimb's files and the user's notes and thesis: --force / --continue must keep them."""

    def probe(tmp: Path, ranks: int) -> Outcome:
        folder = tmp / "r"
        shutil.copytree(finished(tmp.parent), folder)
        if flag == "--continue":  # a folder with a run.log or provenance.json only (not finished)
            for name in ("summary.json", "timeseries.csv"):
                (folder / name).unlink()
        (folder / "notes.txt").write_text("my notes")
        (folder / "thesis").mkdir()
        (folder / "thesis" / "chapter1.tex").write_text("...")
        case = write_case(tmp / "case", SLAB)
        out = isolimb("run", str(case), "-o", str(folder), flag, "-q", ranks=ranks)
        kept = (folder / "notes.txt").exists() and (folder / "thesis" / "chapter1.tex").exists()
        return judged(out, 2, kept, "notes.txt and thesis/ kept" if kept else "the user's files were deleted")

    return probe


def output_folder(how: str) -> Callable[[Path, int], Outcome]:
    def probe(tmp: Path, ranks: int) -> Outcome:
        case = write_case(tmp / "case", SLAB)
        (tmp / "afile").write_text("x")
        if how == "file":
            return judged(isolimb("run", str(case), "-o", str(tmp / "afile"), "-q", ranks=ranks), 2)
        if how == "under a file":
            return judged(isolimb("run", str(case), "-o", str(tmp / "afile" / "r"), "-q", ranks=ranks), 2)
        with mounted(tmp / "ro", "1m", read_only=True) as skip:
            if skip:
                return Outcome(None, "", ok=True, note=f"skipped: {skip}")
            a = isolimb("run", str(case), "-o", str(tmp / "ro" / "new"), "-q", ranks=ranks)
            b = isolimb("run", str(case), "-o", str(tmp / "ro" / "empty"), "-q", ranks=ranks)
            return judged(a, 2, b.code == 2 and b.one_line(), f"an existing empty folder there: exit {b.code}")

    return probe


class mounted:
    """A tmpfs of ``size`` at ``path`` (read-only when asked, with an empty folder ``empty`` in it); yields why it
    could not be made (root only), or ''."""

    def __init__(self, path: Path, size: str, read_only: bool = False) -> None:
        self.path, self.size, self.read_only, self.ok = path, size, read_only, False

    def __enter__(self) -> str:
        if os.geteuid() != 0:
            return "needs root to mount a tmpfs"
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)])
        if done.returncode != 0:
            return "mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)"
        self.ok = True
        (self.path / "empty").mkdir()
        if self.read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        return ""

    def __exit__(self, *exc) -> None:
        if self.ok:
            subprocess.run(["umount", str(self.path)], check=False)


def full_disk(size: str, where: str) -> Callable[[Path, int], Outcome]:
    def probe(tmp: Path, ranks: int) -> Outcome:
        case = write_case(tmp / "case", SLAB)
        with mounted(tmp / "disk", size) as skip:
            if skip:
                return Outcome(None, "", ok=True, note=f"skipped: {skip}")
            out = isolimb("run", str(case), "-o", str(tmp / "disk" / "r"), "-q", ranks=ranks)
            log = tmp / "disk" / "r" / "run.log"
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            said = "run.log's last line: the error" if last and "error" in last[0] else "no run.log (no room for it)"
            return judged(out, 2, "no space left" in out.stderr, f"{where}; {said}")

    return probe


# ------------------------------------------------------------------------------------------------ signals
def early_signal(*signals: int, delay: float = 0.3) -> Callable[[Path, int], Outcome]:
    """Signals to the command (mpiexec at 2 ranks) ``delay`` s after it starts, 0.2 s apart."""

    def probe(tmp: Path, ranks: int) -> Outcome:
        out = tmp / "r"
        job = isolimb("run", str(SMALL), "-o", str(out), "-q", ranks=ranks, wait=False)
        time.sleep(delay)
        for i, s in enumerate(signals):
            if i:
                time.sleep(0.2)
            job.send_signal(s)
        stdout, stderr = job.communicate(timeout=300)
        result = Outcome(job.returncode, stderr, stdout)
        has = (out / "checkpoint" / "state.json").exists()
        result.ok = job.returncode == 75 and has and not result.traceback and "Caught signal" not in stderr
        result.note = "checkpoint written" if has else "no checkpoint"
        return result

    return probe


# --------------------------------------------------------------------------------------- failures and post
def solver_gives_up(tmp: Path, ranks: int) -> Outcome:
    text = SMALL.joinpath("case.toml").read_text() + "\n[numerics.petsc.transport]\nksp_max_it = 1\nksp_rtol = 1e-14\n"
    case = write_case(tmp / "case", text)
    out = isolimb("run", str(case), "-o", str(tmp / "r"), "-q", ranks=ranks)
    log = (tmp / "r" / "run.log").read_text().strip().splitlines() if (tmp / "r" / "run.log").exists() else [""]
    return judged(out, 1, "PETSc reason" in out.stderr and "gave up" in log[-1], "run.log's last line: the same")


def damaged(command: str, name: str, how: str) -> Callable[[Path, int], Outcome]:
    def probe(tmp: Path, ranks: int) -> Outcome:
        folder = tmp / "r"
        shutil.copytree(finished(tmp.parent), folder)
        path = folder / name
        if how == "missing":
            path.unlink()
        elif how == "empty":
            path.write_text("")
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if command == "report":
            args = ["report", str(folder)]
        else:
            args = ["compare", str(finished(tmp.parent)), str(folder), "-o", str(tmp / "cmp")]
        out = isolimb(*args, ranks=ranks)
        return judged(out, 2, name in out.stderr)

    return probe


def truncated_checkpoint(tmp: Path, ranks: int) -> Outcome:
    folder = tmp / "r"
    shutil.copytree(stopped(tmp.parent), folder)
    array = next(p for p in sorted((folder / "checkpoint").glob("*.npy")) if p.name not in ("keys.npy", "x.npy"))
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    out = isolimb("run", str(SMALL), "--resume", str(folder), "-q", ranks=ranks)
    return judged(out, 2, "truncated" in out.stderr)


def probe_time(tmp: Path, ranks: int) -> Outcome:
    point = ["--field", "T_degC", "--point", "0.005,0.001,0.001", "--time", "999 min"]
    return judged(isolimb("probe", str(finished(tmp.parent)), *point, ranks=ranks), 2)


def compare_one(tmp: Path, ranks: int) -> Outcome:
    return judged(isolimb("compare", str(finished(tmp.parent)), "-o", str(tmp / "cmp"), ranks=ranks), 2)


def gmsh_fails(tmp: Path, ranks: int) -> Outcome:
    """A limb gmsh cannot mesh (layers far thinner than the coarse cells): one line naming the case file."""
    text = (
        'title = "x"\n[mesh]\ngenerator = "limb"\npreset = "arm"\nbone_radius = "1 mm"\nfat_thickness = "0.5 mm"\n'
        'skin_thickness = "0.5 mm"\nsize_factor = 3\n[agents.melphalan]\n[numerics]\ndt = "1 min"\n'
    )
    case = write_case(tmp / "case", text)
    out = isolimb("run", str(case), "-o", str(tmp / "r"), "-q", ranks=ranks)
    if out.code == 0:
        return Outcome(0, "", ok=True, note="gmsh meshed it")
    return judged(out, 2, str(case / "case.toml") in out.stderr)


def occ_void(tmp: Path, ranks: int) -> Outcome:
    return bad_case(SLAB.replace('"2 mm", "2 mm"', '"1e-9 m", "2 mm"'), "mesh.size[1]")(tmp, ranks)


TNF_LATE = edit('time = "0 min"\ntau', 'time = "60 min"\ntau')
UNSORTED = edit(
    'inflow_temperature = [{ time = "0 min", value = "40 degC" }]',
    'inflow_temperature = [{ time = "20 min", value = "37 degC" }, { time = "0 min", value = "40 degC" }]',
)
ESCAPED = edit(
    'agent = "melphalan"', 'agent = "../../escaped"', edit("[agents.melphalan]", f"[agents.'../../escaped']\n{AGENT}")
)
NOT_UTF8 = BASE.replace("Student case", "Student case \xe9").encode("latin-1")

PROBES = [
    Probe("two runs into the same -o at once", "both pass the 'is it empty' check", concurrent(False)),
    Probe("a --force run while another is live", "passes the check, both write", concurrent(True)),
    Probe(
        'fixed heat value "37"',
        "traceback, exit 1 (3 at 2 ranks), after check said valid",
        bad_case(edit(ROBIN, 'heat = { type = "fixed", value = "37" }'), "'37'"),
    ),
    Probe(
        'fixed heat value "warm"',
        "traceback after meshing",
        bad_case(edit(ROBIN, 'heat = { type = "fixed", value = "warm" }'), "'warm'"),
    ),
    Probe(
        'fixed pressure value "5 mL"',
        "traceback after meshing",
        bad_case(edit(ROBIN, ROBIN + '\npressure = { type = "fixed", value = "5 mL" }'), "'5 mL'"),
    ),
    Probe(
        'PETSc ksp_type = "nonsense"',
        "traceback after meshing",
        bad_case(BASE.replace('ksp_type = "gmres"', 'ksp_type = "nonsense"'), "nonsense"),
    ),
    Probe("file mesh naming a boundary id it lacks", "traceback after meshing", file_mesh("boundary")),
    Probe("truncated .msh", "traceback after check said valid", file_mesh("truncated")),
    Probe("empty .msh", "traceback after check said valid", file_mesh("empty")),
    Probe("garbage .msh", "traceback after check said valid", file_mesh("garbage")),
    Probe('--checkpoint-every "nan min"', "traceback after meshing", bad_option("--checkpoint-every", "nan min")),
    Probe(
        'distal_radius = "30 cm"',
        "C++ abort, exit 134",
        bad_case(edit("size_factor = 1.1", 'size_factor = 1.1\ndistal_radius = "30 cm"', LEG), "distal_radius"),
    ),
    Probe(
        '"nan mmHg"',
        "accepted",
        bad_case(edit('capillary_pressure = "35 mmHg"', 'capillary_pressure = "nan mmHg"'), "nan mmHg"),
    ),
    Probe('"inf mL/min"', "accepted", bad_case(edit('flow = "5 mL/min"', 'flow = "inf mL/min"'), "inf mL/min")),
    Probe(
        '"1e6 degC"',
        "accepted (Infinity in summary.json)",
        bad_case(edit('initial_temperature = "36 degC"', 'initial_temperature = "1e6 degC"'), "1e6 degC"),
    ),
    Probe(
        '"36 delta_degC" as a temperature',
        "accepted",
        bad_case(edit('initial_temperature = "36 degC"', 'initial_temperature = "36 delta_degC"'), "delta_degC"),
    ),
    Probe(
        '"1e300 mg/L"',
        "accepted",
        bad_case(edit('per_limb_volume = "10 mg/L"', 'per_limb_volume = "1e300 mg/L"'), "1e300"),
    ),
    Probe("unsorted inflow-temperature schedule", "accepted", bad_case(UNSORTED, "inflow_temperature")),
    Probe(
        "PETSc option typo (ksp_typo)",
        "silently ignored",
        bad_case(BASE.replace('ksp_type = "gmres"', 'ksp_typo = "gmres"'), "ksp_typo"),
    ),
    Probe(
        'PETSc key with a space ("ksp type")',
        "silently ignored",
        bad_case(BASE.replace('ksp_type = "gmres"', '"ksp type" = "gmres"'), "ksp type"),
    ),
    Probe("TNF after the end", "accepted", bad_case(TNF_LATE, "protocol.tnf.time")),
    Probe("dt longer than the run", "accepted", bad_case(edit('dt = "1 min"', 'dt = "2 h"'), "numerics.dt")),
    Probe("a case file that is not UTF-8", "traceback", bad_case(NOT_UTF8, "UTF-8")),
    Probe('"2**10000 s"', "traceback", bad_case(edit('dt = "1 min"', 'dt = "2**10000 s"'), "2**10000")),
    Probe(
        "--force on a folder with run.log, notes and a thesis folder",
        "deletes the notes and the thesis",
        foreign("--force"),
    ),
    Probe(
        "--continue (no --force) on a folder with provenance.json, notes, thesis", "deletes them", foreign("--continue")
    ),
    Probe("SIGUSR1 in the first second (meshing/JIT)", "ignored, run completes with 0", early_signal(signal.SIGUSR1)),
    Probe("SIGTERM in the first second", "exit 15 or 59 with a PETSc banner", early_signal(signal.SIGTERM)),
    Probe("a second SIGTERM 0.2 s after the first", "exit 15, not 75", early_signal(signal.SIGTERM, signal.SIGTERM)),
    Probe(
        "SIGUSR1 once the run is under way (2 s)",
        "(not in the issue: control)",
        early_signal(signal.SIGUSR1, delay=2.0),
    ),
    Probe(
        "a solver that fails after its cut-backs",
        "'internal error' with a traceback; run.log lacks the line",
        solver_gives_up,
    ),
    Probe("a full disk at the start (4 KiB tmpfs)", "segfault (139)", full_disk("4k", "no room for case.toml")),
    Probe(
        "a disk that fills during the run (1.5 MiB tmpfs)",
        "segfault (139) / HDF5 or ADIOS2 abort (134)",
        full_disk("1500k", "fills at the fields"),
    ),
    Probe("-o a file", "traceback", output_folder("file")),
    Probe("-o under a file", "traceback", output_folder("under a file")),
    Probe("-o on a read-only file system", "traceback", output_folder("read-only")),
    Probe(
        'an agent named "../../escaped"',
        "checkpoint files written outside the results folder",
        bad_case(ESCAPED, "escaped"),
    ),
    Probe("report on an empty summary.json", "traceback", damaged("report", "summary.json", "empty")),
    Probe("report on a truncated summary.json", "traceback", damaged("report", "summary.json", "truncated")),
    Probe("compare on a truncated summary.json", "traceback", damaged("compare", "summary.json", "truncated")),
    Probe("report with timeseries.csv missing", "traceback", damaged("report", "timeseries.csv", "missing")),
    Probe("--resume from a truncated checkpoint array", "traceback", truncated_checkpoint),
    Probe('probe --time "999 min"', "silently snaps to the last time", probe_time),
    Probe("compare with one folder", "accepted", compare_one),
    Probe(
        "a file mesh whose region id no region names",
        "'24 cells carry no region tag' (no file, key or value)",
        file_mesh("unnamed region"),
    ),
    Probe("a shape gmsh cannot mesh", "'gmsh failed: ' (no file, key or value)", gmsh_fails),
    Probe("a shape OpenCASCADE makes void (slab 1e-9 m thick)", "'OpenCASCADE exception Bnd_Box is void'", occ_void),
    Probe(
        "a dose naming an unknown agent",
        "'case.toml: : dose names agent ...' (no key)",
        bad_case(edit('agent = "melphalan"', 'agent = "cisplatin"'), "protocol.doses[0].agent"),
    ),
]


def shown(out: Outcome, tmp: Path) -> str:
    if out.note.startswith("skipped"):
        return out.note
    text = f"exit {out.code}"
    if out.lines:
        message = out.lines[0] if len(out.lines) == 1 else f"{len(out.lines)} lines: {out.lines[-1]}"
        message = message.replace(str(tmp), "<tmp>").replace(str(ROOT) + "/", "")
        message = re.sub(r"/[^ ']*/isolimb-audit-[^/ ']+", "<tmp>", message)
        message = re.sub(r"<tmp>/[^/ ]*?/", "<tmp>/", message)
        message = re.sub(r"pid \d+ on [^ ]+ since [0-9-]+ [0-9:]+", "pid P on HOST since TIME", message)
        text += (
            f", one line: `{message[:160]}{'...' if len(message) > 160 else ''}`"
            if out.one_line()
            else f", {message[:160]}"
        )
    if out.traceback:
        text += ", TRACEBACK"
    return text + (f" ({out.note})" if out.note else "")


def markdown(probes: list[Probe], tmp: Path) -> str:
    head = [
        "# Hardening audit (issue 16): the issue's list, run again as written",
        "",
        "Made by `.venv/bin/python tests/hardening_audit.py --markdown docs/hardening.md`, which runs every input,",
        "kill, signal, full disk and concurrent run of issue 16 through the `isolimb` command at",
        "1 and 2 MPI ranks (`mpiexec -n 2`) and judges the outcome against README.md's promise: an input error is one",
        "line on standard error and exit 2 with no traceback, before any results folder is made (`isolimb check` says",
        "the same); a stop request is exit 75 with a checkpoint; a solver that gives up is one line, exit 1, also",
        "run.log's last line; an I/O error (not writable, disk full, a file where a folder should be) is one line,",
        "exit 2. *before*: what the issue measured; *after*: measured now (paths shortened to `<tmp>`).",
        "",
        "| # | input | before (issue 16) | after, 1 rank | after, 2 ranks | kept |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    for i, p in enumerate(probes, 1):
        cells = [shown(p.results[n], tmp) if n in p.results else "-" for n in (1, 2)]
        if cells[1] == cells[0]:
            cells[1] = "the same"
        ok = all(r.ok for r in p.results.values())
        rows.append(f"| {i} | {p.name} | {p.before} | {cells[0]} | {cells[1]} | {'yes' if ok else '**no**'} |")
    return "\n".join(head + rows + LIMITS) + "\n"


LIMITS = [
    "",
    "## Limits, and what is not promised",
    "",
    "- A full disk is caught before HDF5 and ADIOS2 write (they abort the process on ENOSPC, exit 134): room for each",
    "  write is checked first (the mesh, each output time, each checkpoint, with 1 MiB to spare; estimated from the",
    "  mesh and from what the previous write took). A disk filled by another program between the check and the",
    "  write can still abort the run. Python's writes (case.toml, run.log, timeseries.csv, JSON, checkpoints) are",
    "  caught whatever their error and end every rank at the next step.",
    "- A folder made unwritable while a run writes to it is caught at the next check (before each output time and",
    "  checkpoint) when the operating system reports it (`os.access`); as root only a read-only mount is unwritable.",
    "- Stop requests are kept from the package's first line (about 0.1 s after the command starts); one in the very",
    "  first moments, while Python itself starts, still ends the process as the signal ends any program.",
    "- The command tells PETSc to install no signal handlers (`-no_signal_handler`): PETSc's took SIGTERM over",
    "  between dolfinx's import and the run's own handlers (exit 59, PETSc's banner). A crash inside PETSc is then a",
    "  plain crash (139), without PETSc's banner.",
    "- MPICH's `mpiexec` forwards one SIGTERM to the ranks; on a second it may abort the job whatever the program",
    "  does (measured here: 75, with a checkpoint). SLURM sends SIGUSR1 first (`--signal`): use that.",
    "- `isolimb check` checks every shape against itself, but cannot foresee every mesher failure (a limb whose",
    "  layers are far thinner than its cells): such a case fails while meshing, with one line naming the case file",
    "  and exit 2, and its results folder holds the run.log that says so.",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the probes whose name contains this (case-insensitive)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--markdown", type=Path, help="write the table here (e.g. docs/hardening.md)")
    ap.add_argument("--json", type=Path, help="write the raw outcomes here")
    ap.add_argument("--from-json", type=Path, help="only write the table again from outcomes saved with --json")
    args = ap.parse_args()
    probes = [p for p in PROBES if not args.only or args.only.lower() in p.name.lower()]
    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        for p in probes:
            for n, r in raw.get(p.name, {}).items():
                p.results[int(n)] = Outcome(r["code"], r["stderr"], ok=r["ok"], note=r["note"])
        table = markdown(probes, Path("/nonexistent"))
        if args.markdown:
            args.markdown.write_text(table)
        else:
            print(table)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="isolimb-audit-"))
    try:
        for i, p in enumerate(probes, 1):
            for n in p.ranks:
                if n not in args.ranks:
                    continue
                work = tmp / f"p{i}-{n}"
                work.mkdir()
                start = time.monotonic()
                try:
                    p.results[n] = p.check(work, n)
                except Exception as err:  # the audit itself failed here: say so in the table
                    p.results[n] = Outcome(None, f"audit error: {type(err).__name__}: {err}")
                mark = "ok " if p.results[n].ok else "BAD"
                print(f"{mark} [{n} rank(s), {time.monotonic() - start:4.1f} s] {p.name}: {shown(p.results[n], tmp)}")
                sys.stdout.flush()
        table = markdown(probes, tmp)
        if args.markdown:
            args.markdown.write_text(table)
        if args.json:
            raw = {
                p.name: {
                    n: {"code": r.code, "stderr": r.stderr, "ok": r.ok, "note": r.note} for n, r in p.results.items()
                }
                for p in probes
            }
            args.json.write_text(json.dumps(raw, indent=1) + "\n")
    finally:
        for mount in sorted(tmp.glob("*/*"), reverse=True):  # a tmpfs left mounted by an interrupted probe
            if os.path.ismount(mount):
                subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    broken = [p.name for p in probes if not all(r.ok for r in p.results.values())]
    print(f"{len(probes) - len(broken)} of {len(probes)} kept; broken: {broken}" if broken else "every promise kept")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
