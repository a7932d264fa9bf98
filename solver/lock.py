"""A results folder owned by one run: an exclusive lock file, and what ``--force`` may delete.

``<folder>/.isolimb.lock`` is created atomically (``O_CREAT | O_EXCL``) by rank 0 of the command that writes the
folder (``run``, ``--resume``, ``--continue``, ``report``) and removed when it ends. It holds the owner's pid, host
and start time. A lock whose pid is dead on this host is stale and taken over (renamed away first, so two
commands cannot both take it over); a lock from another host cannot be checked from here and is respected until
it has not been touched for :data:`STALE_AFTER` seconds (a held lock is touched every :data:`HEARTBEAT`
seconds). Readers (``compare``, ``probe``) refuse a folder whose lock is held.

``--force`` and ``--continue`` delete only what isolimb writes into a results folder (:data:`ISOLIMB_FILES`, fixed
names and patterns) and refuse a folder that holds anything else.

Only rank 0 touches the file system here; callers broadcast the outcome (``cli.refuse_if``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import time
from pathlib import Path

from solver import results, storage

LOCK_NAME = ".isolimb.lock"
HEARTBEAT = 60.0  # s between touches of a held lock
STALE_AFTER = 900.0  # s: a lock from another host not touched for this long belongs to a dead run

# Top-level names isolimb writes into a results folder (run, resume, report, checkpoints, atomic writes).
ISOLIMB_FILES = (
    results.SUMMARY,
    results.SERIES,
    "case.toml",
    results.CASE_RESOLVED,
    results.PROVENANCE,
    results.RUN_LOG,
    results.MESH,
    "mesh.h5",
    results.MESH_META,
    results.FIELDS_VTKHDF,
    results.FIELDS_XDMF,
    "fields.h5",
    "fields_*.bp",
    results.PARAVIEW_SCRIPT,
    results.REPORT,
    "figures",
    "checkpoint",
    ".checkpoint.tmp",
    ".checkpoint.old",
    ".*.tmp",  # write_atomic's temporary files
    LOCK_NAME,
    f"{LOCK_NAME}.stale.*",
)


class LockError(RuntimeError):
    """The folder is owned by another live command, or cannot be locked (one line)."""


def is_isolimb_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ISOLIMB_FILES)


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that isolimb did not write, sorted."""
    return sorted(p.name for p in folder.iterdir() if not is_isolimb_file(p.name))


def clear_results(folder: Path) -> None:
    """Delete what isolimb wrote in ``folder``, except the lock; the caller checked :func:`foreign_entries`."""
    for path in folder.iterdir():
        if path.name == LOCK_NAME or not is_isolimb_file(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_owner(folder: Path) -> dict | None:
    """The lock's content (pid, host, started, command), None without a lock; {} when unreadable."""
    return read_owner_at(folder / LOCK_NAME)


def read_owner_at(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _age(folder: Path) -> float:
    """Seconds since the lock was last touched by its owner's heartbeat (0 when it cannot be told)."""
    try:
        return max(0.0, time.time() - (folder / LOCK_NAME).stat().st_mtime)
    except OSError:
        return 0.0


def is_stale(owner: dict, folder: Path) -> bool:
    """A lock whose process is dead on this host, or whose owner on another host (a node that failed, a job
    killed past its wall time) has not touched it for :data:`STALE_AFTER` seconds."""
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname():
        return isinstance(pid, int) and not _pid_alive(pid)
    return _age(folder) > STALE_AFTER


def describe(owner: dict) -> str:
    if not owner:
        return "an unreadable lock"
    job = f", SLURM job {owner['slurm_job']}" if owner.get("slurm_job") else ""
    started = owner.get("started")
    since = (
        time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else ""
    )
    return f"{owner.get('command', 'isolimb')} (pid {owner.get('pid')} on {owner.get('host')}{job}{since})"


def held_by_other(folder: Path) -> str | None:
    """Why ``folder`` is in use by another live command (None when it is free or the lock is stale)."""
    owner = read_owner(folder)
    if owner is None or (owner and is_stale(owner, folder)) or owner.get("pid") == os.getpid():
        return None
    return (
        f"{folder} is in use by {describe(owner)}; wait for it to end, or remove {folder / LOCK_NAME}"
        " if that process is gone"
    )


def acquire(folder: Path, command: str, create: bool = True) -> bool:
    """Take the lock of ``folder`` (creating the folder when ``create``); False when there is no folder to lock.

    Raises :class:`LockError` when another live command holds it or the folder cannot be written.
    """
    if folder.exists() and not folder.is_dir():
        raise LockError(f"{folder} is a file, not a results folder")
    if not folder.is_dir():
        if not create:
            return False
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            err.filename = err.filename2 = None  # the folder is named already
            raise LockError(f"cannot create results folder {folder}: {storage.describe(err)}") from None
    path = folder / LOCK_NAME
    content = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": command,
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        }
    )
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_owner(folder)
            if owner is None:  # released in between: try again
                continue
            if owner and is_stale(owner, folder):
                moved = folder / f"{LOCK_NAME}.stale.{os.getpid()}"
                try:  # only one of several commands gets to move a stale lock away
                    os.rename(path, moved)
                except FileNotFoundError:
                    continue
                if read_owner_at(moved) != owner:  # another command took it over first: put its lock back
                    try:
                        os.link(moved, path)
                    except FileExistsError:
                        pass
                os.unlink(moved)
                continue
            raise LockError(
                f"{folder} is in use by {describe(owner)}; wait for it to end, or remove {path} if that process is gone"
            ) from None
        except OSError as err:
            err.filename = err.filename2 = None  # the folder is named already
            raise LockError(f"cannot lock results folder {folder}: {storage.describe(err)}") from None
        try:
            os.write(fd, content.encode())
            os.close(fd)
        except OSError as err:  # a full disk or quota: no half-written lock left behind
            try:
                os.close(fd)
            except OSError:
                pass
            path.unlink(missing_ok=True)
            raise LockError(f"cannot lock results folder {folder}: {storage.describe(err)}") from None
        return True
    raise LockError(f"cannot lock results folder {folder}: the lock keeps changing hands")


def release(folder: Path) -> None:
    """Remove the lock if this process holds it."""
    owner = read_owner(folder)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        try:
            (folder / LOCK_NAME).unlink()
        except FileNotFoundError:
            pass


class Heartbeat:
    """Touches a held lock every :data:`HEARTBEAT` seconds from a daemon thread, so that a lock whose owner died on
    another host can be told from a live one (:func:`is_stale`)."""

    def __init__(self, folder: Path, interval: float = HEARTBEAT) -> None:
        import threading

        self.path, self.interval = folder / LOCK_NAME, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="isolimb-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:  # removed by hand, or the file system went away: nothing to do from here
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
