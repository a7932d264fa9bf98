"""A linear system built once and solved many times: the mechanism every equation uses.

Forms are compiled once. The matrix (and so the preconditioner) is reassembled only when the caller says
the operator changed (:meth:`LinearSystem.operator_changed`); each solve reassembles the right-hand side
only. Lumped (nodal) terms enter without a form: a diagonal added to the assembled matrix
(:attr:`LinearSystem.diagonal`) and a nodal part of each right-hand side. PETSc options live under one
prefix per equation, defaults merged with the case's overrides, and leave PETSc's database once the solver
is set up. Every solve checks the converged reason and counts Krylov iterations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dolfinx.fem.petsc as fem_petsc
import numpy as np
import ufl
from dolfinx import fem, la
from mpi4py import MPI
from petsc4py import PETSc

TRUE_RESIDUAL_RTOL = 1e-9  # accepted ||b - A x|| / ||b||
MAX_REFINEMENTS = 4


class SolveError(RuntimeError):
    """A linear solve did not converge or produced a non-finite value."""


class LinearSystem:
    """``a(u, v) = L(v)`` with Dirichlet conditions ``bcs``, solved into ``u``."""

    def __init__(
        self,
        a: ufl.Form,
        L: ufl.Form | Sequence[ufl.Form | None],
        u: fem.Function,
        bcs: Sequence[fem.DirichletBC],
        prefix: str,
        options: dict[str, object],
    ) -> None:
        self.a = fem.form(a)
        rhs = [L] if isinstance(L, ufl.Form) else list(L)
        self.L = [None if form is None else fem.form(form) for form in rhs]
        self.u = u
        self.bcs = list(bcs)
        self.prefix = prefix
        self.options = {k: str(v) for k, v in options.items()}  # as given to PETSc, for provenance
        self.A = fem_petsc.create_matrix(self.a)
        self.b = fem_petsc.create_vector(u.function_space)
        self.ksp = PETSc.KSP().create(u.function_space.mesh.comm)
        self.ksp.setOptionsPrefix(prefix)
        db = PETSc.Options()
        db["options_left"] = 0  # type: ignore[index]  # no exit warning for systems never solved
        for key, value in options.items():
            db[f"{prefix}{key}"] = value  # type: ignore[index]
        self.ksp.setFromOptions()
        # removed from the database once the solver is set up (sub-solvers read theirs then), so that a later
        # system with the same prefix (the next model in this process) does not inherit them
        self._options_to_remove = [f"{prefix}{key}" for key in options]
        self.ksp.setOperators(self.A)
        self._residual = self.b.duplicate()  # work vectors of the true-residual check
        self._correction = self.b.duplicate()
        self.iterations: list[int] = []
        self._assembled = False
        # owned values added to the matrix diagonal at assembly (lumped terms); zero them on Dirichlet rows
        self.diagonal: np.ndarray | None = None
        self._diagonal_vec = self.b.duplicate()

    def operator_changed(self) -> None:
        """Mark the matrix stale: the next solve reassembles it and rebuilds the preconditioner."""
        self._assembled = False

    def _assemble_matrix(self) -> None:
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.a, bcs=self.bcs)
        self.A.assemble()
        if self.diagonal is not None:
            self._diagonal_vec.array_w[:] = self.diagonal
            self.A.setDiagonal(self._diagonal_vec, addv=PETSc.InsertMode.ADD_VALUES)
            self.A.assemble()
        self.ksp.setOperators(self.A)
        if self._options_to_remove:
            self.ksp.setUp()
            db = PETSc.Options()
            for name in self._options_to_remove:
                db.delValue(name)
            self._options_to_remove = []
        self._assembled = True

    def solve(self, rhs: int = 0, out: fem.Function | None = None, nodal: np.ndarray | None = None) -> fem.Function:
        """Solve with right-hand side ``L[rhs]`` plus ``nodal`` (owned values) into ``out`` (default ``u``)."""
        if not self._assembled:
            self._assemble_matrix()
        target = self.u if out is None else out
        with self.b.localForm() as local:
            local.set(0.0)
        form = self.L[rhs]
        if form is not None:
            fem_petsc.assemble_vector(self.b, form)
        if self.bcs:
            fem_petsc.apply_lifting(self.b, [self.a], bcs=[self.bcs])
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        if nodal is not None:
            self.b.array_w[:] += nodal
        for bc in self.bcs:
            bc.set(self.b.array_w)
        x = target.x.petsc_vec
        self.ksp.solve(self.b, x)
        iterations = self.ksp.getIterationNumber()
        reason = int(self.ksp.getConvergedReason())  # type: ignore[call-overload]
        # Check the true residual; refine when the Krylov estimate was wrong (seen with GMRES/ASM on
        # the badly scaled transport system). The drug balance is only as good as this residual.
        b_norm = self.b.norm()
        residual, correction = self._residual, self._correction
        for _ in range(MAX_REFINEMENTS):
            self.A.mult(x, residual)
            residual.aypx(-1.0, self.b)  # residual = b - A x
            if reason <= 0 or residual.norm() <= TRUE_RESIDUAL_RTOL * b_norm:
                break
            self.ksp.solve(residual, correction)
            reason = int(self.ksp.getConvergedReason())  # type: ignore[call-overload]
            iterations += self.ksp.getIterationNumber()
            x.axpy(1.0, correction)
        else:
            self.A.mult(x, residual)
            residual.aypx(-1.0, self.b)
            if residual.norm() > TRUE_RESIDUAL_RTOL * b_norm:
                reason = -100
        target.x.scatter_forward()
        self.iterations.append(iterations)
        if reason <= 0:
            raise SolveError(f"{self.prefix.rstrip('_')}: linear solver diverged (PETSc reason {reason})")
        local_ok = bool(np.all(np.isfinite(target.x.array)))
        if not target.function_space.mesh.comm.allreduce(local_ok, op=MPI.LAND):
            raise SolveError(f"{self.prefix.rstrip('_')}: solution has non-finite values")
        return target

    def describe(self) -> dict[str, object]:
        """The solver as PETSc configured it: KSP and PC types, tolerances and the options given."""
        rtol, atol, _, max_it = self.ksp.getTolerances()
        return {
            "prefix": self.prefix,
            "ksp_type": self.ksp.getType(),
            "pc_type": self.ksp.getPC().getType(),
            "rtol": rtol,
            "atol": atol,
            "max_it": max_it,
            "options": self.options,
        }

    def destroy(self) -> None:
        db = PETSc.Options()
        for name in self._options_to_remove:
            db.delValue(name)
        self._options_to_remove = []
        for obj in (self.ksp, self.A, self.b, self._residual, self._correction, self._diagonal_vec):
            obj.destroy()


class NodalWeights:
    """Linear forms INT w v_i over a scalar space, assembled into ghost-consistent arrays (owned and ghost)."""

    def __init__(self, forms: Mapping[str, ufl.Form]) -> None:
        self.forms = {name: fem.form(f) for name, f in forms.items()}
        self.vectors = {name: fem.assemble_vector(f) for name, f in self.forms.items()}
        for vec in self.vectors.values():
            self._finish(vec)

    @staticmethod
    def _finish(vec: la.Vector) -> None:
        vec.scatter_reverse(la.InsertMode.add)
        vec.scatter_forward()

    def assemble(self) -> None:
        for name, form in self.forms.items():
            vec = self.vectors[name]
            vec.array[:] = 0.0
            fem.assemble_vector(vec.array, form)
            self._finish(vec)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.vectors[name].array


def merged_options(defaults: Mapping[str, object], overrides: Mapping[str, object] | None) -> dict[str, object]:
    """Per-equation PETSc options: the equation's defaults updated by the case's overrides."""
    return {**defaults, **(overrides or {})}


def scalar(comm, form: fem.Form) -> float:
    """Assemble a scalar form and sum over ranks."""
    return comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM)


__all__ = ["LinearSystem", "NodalWeights", "SolveError", "merged_options", "scalar"]
