"""Stop requests that arrive while the ``isolimb`` command is still starting (importing dolfinx takes a second or
two): SIGUSR1 and SIGTERM are noted from the package's first line instead of killing the process, and the run
takes them over when it installs its own handlers (:class:`solver.checkpoint.StopFlag`); other commands replay
them with the default action (:func:`replay`).

Only the ``isolimb`` program (or ``python -m solver``) is affected, never a program that imports the package. There,
PETSc is also told to install no signal handlers of its own (``-no_signal_handler`` in ``PETSC_OPTIONS``): they took
SIGTERM over while dolfinx loaded (exit 59 with PETSc's banner), and a crash is the same crash without them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
received: list[int] = []  # signal numbers, in order of arrival


def _note(signum: int, _frame) -> None:
    received.append(signum)


def _is_the_command() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    # "-m" while ``python -m solver`` locates the package (the first thing it imports)
    return (
        os.path.basename(argv0) == "isolimb" or argv0 == "-m" or argv0.endswith(os.path.join("solver", "__main__.py"))
    )


installed = False
IS_COMMAND = _is_the_command()
if IS_COMMAND:  # PETSc's own handlers (installed when dolfinx loads) would take SIGTERM over: "Caught signal 15", 59
    os.environ["PETSC_OPTIONS"] = f"{os.environ.get('PETSC_OPTIONS', '')} -no_signal_handler".strip()
if IS_COMMAND and threading.current_thread() is threading.main_thread():
    for _s in SIGNALS:
        if signal.getsignal(_s) == signal.SIG_DFL:
            signal.signal(_s, _note)
            installed = True


def replay() -> None:
    """For commands that do not stop with a checkpoint: default handlers back, early signals delivered again."""
    global installed
    if not installed:
        return
    installed = False
    for signum in SIGNALS:
        if signal.getsignal(signum) is _note:
            signal.signal(signum, signal.SIG_DFL)
    for number in received:
        os.kill(os.getpid(), number)
