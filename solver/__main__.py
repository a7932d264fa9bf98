"""``python -m solver`` is the ``isolimb`` command."""

import sys

from solver.cli import main

sys.exit(main())
