"""isolimb: finite-element engine for isolated limb perfusion (ILP) and infusion (ILI).

With the ``dolfinx-solver-real`` wheel, ``dolfinx_solver`` must be imported before ``dolfinx`` or ``petsc4py``:
it loads the MPI library that both link against. It is imported here, once, so every module of the package
may import dolfinx. A site, Spack or conda dolfinx has no such module and links its MPI normally
(hpc/site-mpi.md).
"""

try:
    import dolfinx_solver  # noqa: F401  (loads libmpi before dolfinx/petsc4py)
except ModuleNotFoundError:  # dolfinx from the site stack, Spack, conda or a container
    pass

__version__ = "0.1.0"
