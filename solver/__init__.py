"""isolimb: finite-element engine for isolated limb perfusion (ILP) and infusion (ILI).

With the ``dolfinx-solver-real`` wheel, ``dolfinx_solver`` must be imported before ``dolfinx`` or ``petsc4py``:
it loads the MPI library that both link against. It is imported here, once, so every module of the package
may import dolfinx. A site, Spack or conda dolfinx has no such module and links its MPI normally
(hpc/site-mpi.md).

Each MPI rank is one process: BLAS threads on top of the ranks only oversubscribe the cores (a step's dot
products took 40 ms instead of 0.04 ms with OpenBLAS spinning threads), so one thread per rank is the default
unless the environment says otherwise (set before numpy is loaded).
"""

import os

from solver import _early  # noqa: F401  (first: a stop request while the isolimb command starts is kept)

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

try:
    import dolfinx_solver  # noqa: F401  (loads libmpi before dolfinx/petsc4py)
except ModuleNotFoundError:  # dolfinx from the site stack, Spack, conda or a container
    pass

__version__ = "0.1.0"
