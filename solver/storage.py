"""The file system under a run: I/O errors and a full disk are one line on every rank, never a crash or a hang.

Two kinds of writers fill a results folder:

- Python on rank 0 (``case.toml``, ``run.log``, ``timeseries.csv``, JSON, checkpoints, the ParaView script). An
  ``OSError`` there (no space left, a read-only file system, a folder made unwritable, a file where a folder
  should be) is noted by :meth:`Storage.caught` instead of escaping on rank 0 alone (the other ranks would wait
  in their next collective call for ever); the next :meth:`Storage.check`, which every rank calls, raises it
  on every rank as an :class:`~solver.output.OutputError` (one line, exit status 2).
- C and C++ libraries on every rank (HDF5 for ``mesh.xdmf`` and the field files, ADIOS2 for VTX). They abort the
  process on a full disk (an HDF5 assertion, an uncaught ADIOS2 exception: exit 134 or 139). Before each such
  write :meth:`Storage.check` makes sure the device has room for it, estimated from the mesh and from what the
  previous write of the same kind took, plus :data:`MARGIN`, and that the folder is still writable; short of that
  every rank stops with one line before the library is called.

A disk filled by another program between the check and the write can still end the run the hard way.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mpi4py import MPI

MARGIN = 1 << 20  # bytes always left free: small writes (run.log, JSON, VTX metadata at close) need room too
_WHY = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.ENOTDIR: "a file is where a folder should be",
    errno.EISDIR: "a folder is where a file should be",
    errno.ENOENT: "no such file or folder (removed while the run wrote to it?)",
}


def describe(err: OSError) -> str:
    """An OSError in words, with the file it is about."""
    why = _WHY.get(err.errno or 0) or err.strerror or " ".join(str(err).split()) or type(err).__name__
    where = err.filename2 if err.filename2 is not None else err.filename  # a copy's target, else the file
    return f"{where}: {why}" if where else why


def size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Storage:
    """The results folder of one run, as seen by its writers (see the module's docstring)."""

    def __init__(self, comm: MPI.Comm, folder: Path) -> None:
        self.comm, self.folder = comm, Path(folder)
        self.problem: str | None = None  # the first I/O error noted on this rank
        self.used: dict[str, int] = {}  # bytes the last write of each kind took (rank 0)

    def free(self) -> int | None:
        """Bytes free to this user on the folder's device (rank 0; None when it cannot be told)."""
        try:
            st = os.statvfs(self.folder if self.folder.exists() else self.folder.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def note(self, err: OSError, what: str) -> None:
        if self.problem is None:
            self.problem = f"cannot write {what}: {describe(err)}"

    @contextmanager
    def caught(self, what: str) -> Iterator[None]:
        """Run a write of this rank; an OSError is noted, to be raised on every rank by the next :meth:`check`."""
        try:
            yield
        except OSError as err:
            self.note(err, what)

    def check(self, need: int = 0, what: str = "") -> None:
        """Collective: raise :class:`~solver.output.OutputError` on every rank when any rank noted an I/O error, or
        when the device has less than ``need`` + :data:`MARGIN` bytes free for ``what`` (decided on rank 0)."""
        from solver.output import OutputError

        problem = self.problem
        if problem is None and self.comm.rank == 0 and need > 0 and not os.access(self.folder, os.W_OK):
            problem = f"{self.folder}: cannot write {what or 'the results'}: the folder is no longer writable"
        if problem is None and self.comm.rank == 0 and need >= 0:
            free = self.free()
            if free is not None and free < need + MARGIN:
                problem = (
                    f"{self.folder}: no space left on the device for {what or 'the results'}: {size_text(free)} free,"
                    f" about {size_text(need + MARGIN)} needed; free some space (or choose another -o) and run again"
                )
        problems = self.comm.allgather(problem)
        first = next((p for p in problems if p), None)
        if first is not None:
            self.problem = first
            raise OutputError(first if first.startswith(str(self.folder)) else f"{self.folder}: {first}")

    @contextmanager
    def measured(self, kind: str) -> Iterator[None]:
        """Remember how many bytes the write in the body took (rank 0), for the estimate of the next one."""
        before = self.free() if self.comm.rank == 0 else None
        yield
        if before is not None:
            after = self.free()
            if after is not None:
                self.used[kind] = max(0, before - after)

    def need(self, kind: str, estimate: int) -> int:
        """Bytes to ask for before a write of ``kind``: twice what the last one took, at least ``estimate``."""
        return max(estimate, 2 * self.used.get(kind, 0))


def mesh_bytes(cells: int, vertices: int) -> int:
    """About what one copy of a tetrahedral mesh with tags takes in HDF5 (coordinates, connectivity, tags)."""
    return 80 * cells + 32 * vertices + 64 * 1024
