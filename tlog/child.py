"""Child processes that die with their parent.

The server checks large requests in one child (`intake.py`) and the sequencer may write batches from
another (`store/writer.py`). Neither may outlive the process that started it: a SIGKILLed `tlog serve`
would leave it blocked on its pipe forever, holding the database open and the server's stdout too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time


def die_with_parent(parent: int, *, keep_stderr: bool = False) -> None:
    """Called first in a child started by process `parent`: on Linux the kernel kills the child when its
    parent dies; elsewhere (and as a second line) a thread watches for the parent to go. The child's
    standard output (and its standard error unless `keep_stderr`: a child whose warnings an operator
    needs) goes nowhere, so it does not hold its parent's pipes open."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    if not keep_stderr:
        os.dup2(devnull, 2)
    os.close(devnull)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="tlog-watch-parent").start()
