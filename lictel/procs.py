"""Child processes die with the process that started them.

``lictel run`` and ``lictel up`` start the broker, stream workers and sink as children. If the parent
is killed outright (SIGKILL, an OOM kill), nothing of it runs to stop them: on Linux each child asks
the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and exits at once if the parent
was already gone before it could ask. Elsewhere children are stopped by the parent's normal exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` (``None`` where the kernel has no such signal)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
