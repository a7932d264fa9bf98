"""PETSc options of a case (``[numerics.petsc.<equation>]``) checked against PETSc itself, before any mesh.

Keys must look like PETSc option names (lower case, digits, underscores; no leading dash, no spaces) and values
like option values (no spaces or path separators). Then each equation's options, its defaults merged with the
case's overrides as the solver does, are given to a KSP on ``COMM_SELF`` that solves a small 3D Laplacian: PETSc
rejects unknown types and malformed numbers, and an option that PETSc never read (a typo, or one that this
solver configuration does not use) is an error too. Runs on one rank, in well under a second, and touches
nothing outside its own option prefix.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

KEY = re.compile(r"^[a-z][a-z0-9_]*$")
VALUE = re.compile(r"^[A-Za-z0-9_.+\-]*$")
CHECK_PREFIX = "isolimb_check_"  # options of the check live under this prefix and are removed afterwards

# PETSc error codes (petscerror.h) worth a word in a message
PETSC_ERRORS = {
    56: "not supported",
    62: "wrong argument",
    63: "argument out of range",
    67: "incompatible arguments",
    76: "error in an external library",
    86: "unknown type",
    92: "no factorization package for this",
}


def defaults() -> dict[str, Mapping[str, object]]:
    """Each equation's default PETSc options, as its solver module declares them."""
    out: dict[str, Mapping[str, object]] = {}
    for equation in ("pressure", "heat", "transport"):
        try:
            module = __import__(f"solver.physics.{equation}", fromlist=["DEFAULT_OPTIONS"])
            out[equation] = dict(getattr(module, "DEFAULT_OPTIONS", {}))
        except ImportError:  # a solver without its own module: only the case's options are checked
            out[equation] = {}
    return out


def syntax_problem(key: object, value: object) -> str | None:
    """Why ``key = value`` cannot be a PETSc option (None if it can); no PETSc needed."""
    if not isinstance(key, str) or not KEY.match(key):
        hint = " (leave out the leading '-')" if isinstance(key, str) and key.startswith("-") else ""
        return f"{key!r} is not a PETSc option name: expected lower-case letters, digits and '_'{hint}"
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if isinstance(value, (int, float)):
        return None
    if not isinstance(value, str) or not VALUE.match(value):
        return f"{value!r} is not a PETSc option value: expected letters, digits, '_', '.', '+' or '-'"
    return None


def option_value(value: object) -> str:
    """A case value as PETSc reads it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check(equation: str, options: Mapping[str, object], base: Mapping[str, object] | None = None) -> str | None:
    """Why PETSc rejects ``options`` of ``equation`` over the defaults ``base`` (None when it accepts them).

    The message names the key and the value; call on one rank only (the KSP lives on ``COMM_SELF``).
    """
    for key, value in options.items():
        problem = syntax_problem(key, value)
        if problem:
            return f"{key} = {value!r}: {problem}"
    base = dict(base or {})
    error, unused = _try({**base, **options})
    if error is not None:  # find the option that makes PETSc fail: add the case's options one at a time
        given: dict[str, object] = {}
        for key, value in options.items():
            given[key] = value
            if _try({**base, **given})[0] is not None:
                return f"{key} = {value!r}: PETSc rejects it ({error})"
        return f"PETSc rejects the options of this equation ({error})"
    for key in options:
        if key in unused:
            return (
                f"{key} = {options[key]!r}: PETSc did not use this option (misspelt, or not an option of the"
                f" solver this equation is configured with: {_solver_of({**base, **options})})"
            )
    return None


def _solver_of(options: Mapping[str, object]) -> str:
    ksp, pc = options.get("ksp_type", "gmres"), options.get("pc_type", "default")
    return f"ksp_type {ksp}, pc_type {pc}"


def _laplacian(n: int = 6):
    """A 3D 7-point Laplacian of n^3 unknowns on COMM_SELF: small, symmetric positive definite."""
    from petsc4py import PETSc

    size = n**3
    A = PETSc.Mat().createAIJ([size, size], nnz=7, comm=PETSc.COMM_SELF)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                row = (i * n + j) * n + k
                A.setValue(row, row, 6.0)
                for di, dj, dk in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                    a, b, c = i + di, j + dj, k + dk
                    if 0 <= a < n and 0 <= b < n and 0 <= c < n:
                        A.setValue(row, (a * n + b) * n + c, -1.0)
    A.assemble()
    return A


def _try(options: Mapping[str, object]) -> tuple[str | None, set[str]]:
    """Set up and run a KSP with ``options``: (PETSc's error or None, the keys PETSc never read)."""
    from petsc4py import PETSc

    db = PETSc.Options()
    names = {key: f"{CHECK_PREFIX}{key}" for key in options}
    A = _laplacian()
    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    error = None
    try:
        for key, value in options.items():
            db[names[key]] = option_value(value)  # type: ignore[index]
        ksp.setOptionsPrefix(CHECK_PREFIX)
        ksp.setOperators(A)
        b = A.createVecLeft()
        b.set(1.0)
        x = b.duplicate()
        with _quiet():  # monitors and viewers print on standard output
            ksp.setFromOptions()
            ksp.setUp()
            try:  # solving reads the options used only then; not converging on this toy problem is no error
                ksp.solve(b, x)
            except PETSc.Error:
                pass
    except PETSc.Error as err:
        code = getattr(err, "ierr", None)
        error = f"PETSc error {code}: {PETSC_ERRORS[code]}" if code in PETSC_ERRORS else f"PETSc error {code}"
    finally:
        unused = {key for key, name in names.items() if not db.used(name)}
        for name in names.values():
            db.delValue(name)
        ksp.destroy()
        A.destroy()
    return error, unused


@contextmanager
def _quiet() -> Iterator[None]:
    """Standard output of this process (C level too) to /dev/null for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
