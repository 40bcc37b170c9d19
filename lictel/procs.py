"""Child processes die with the process that started them.

``lictel run`` and ``lictel up`` start the broker, stream workers and sink as children. If the parent
is killed outright (SIGKILL, an OOM kill), nothing of it runs to stop them, so each child watches
for its parent's death itself:

- lictel's own children (workers, sink) inherit the read end of a *lifeline* pipe whose write end
  only the parent holds. When the parent dies, the kernel closes it; the child reads end-of-file and
  stops as on SIGTERM (flushing what it holds), and is killed if it has not stopped 30 s later. Unlike
  ``PR_SET_PDEATHSIG`` this does not depend on which thread of the parent started the child.
- The broker (a binary of its own) asks the kernel for SIGTERM at its parent's death
  (``PR_SET_PDEATHSIG``, Linux); it is started from the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
ENV = "LICTEL_LIFELINE_FD"
_lifeline: int | None = None  # the read end; the write end stays open in this process until it dies


def lifeline() -> tuple[dict[str, str], tuple[int, ...]]:
    """``(environment, pass_fds)`` that give a child its lifeline to this process."""
    global _lifeline
    if _lifeline is None:
        read_end, _write_end = os.pipe()  # the write end is never closed: only our death closes it
        _lifeline = read_end
    return {ENV: str(_lifeline)}, (_lifeline,)


def watch_lifeline(grace_s: float = 30.0) -> None:
    """In a child: stop when the parent that holds the lifeline dies (no-op without one)."""
    fd_text = os.environ.get(ENV)
    if not fd_text:
        return
    try:
        fd = int(fd_text)
        os.fstat(fd)
    except (ValueError, OSError):
        return
    os.environ.pop(ENV, None)  # not for our own children

    def wait() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(grace_s)
        os._exit(1)  # SIGTERM did not stop it

    threading.Thread(target=wait, name="lifeline", daemon=True).start()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child that is not lictel (the broker): SIGTERM when its parent dies
    (``None`` where the kernel has no such signal)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
