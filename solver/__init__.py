"""isolimb: finite-element engine for isolated limb perfusion (ILP) and infusion (ILI).

``dolfinx_solver`` must be imported before ``dolfinx`` or ``petsc4py``: it loads the MPI library that
both link against.  It is imported here, once, so every module of the package may import dolfinx.
"""

import dolfinx_solver  # noqa: F401  (loads libmpi before dolfinx/petsc4py)

__version__ = "0.1.0"
