"""A test hook that kills the process at a named point in the middle of a write, to prove that no kill leaves a
partial checkpoint or a torn export behind (tests/training/test_kill_resume.py).

The environment variable ``PREDIFF_FAULT_INJECT`` names the point, optionally with a number: ``export`` kills
the process at the first pass through the point named ``export``, ``checkpoint-save:2`` only when it saves step 2.
Unset (the normal case), [`fault_point`] does nothing. The points:

- ``checkpoint-save[:STEP]``: the weights and optimizer state of ``checkpoint-STEP`` are in its hidden temporary
  folder, its ``training_state.json`` is not, and nothing is renamed yet (`prediff.training.checkpointing`);
- ``export``: the trained result is complete in its hidden temporary folder, nothing is published yet
  (`prediff.training.exporting`);
- ``publish``: a folder being published entry by entry is half in place, the entries it replaces moved aside
  ([`~prediff.utils.files.move_into`]);
- ``forecast-write``: `prediff forecast` has written its forecast file, not its pysteps array, and holds the lock
  of its output (`prediff.pipelines.commands`; tests/pipelines/test_concurrent_writers.py).

``PREDIFF_FAULT_SIGNAL=SIGSTOP`` sends that signal instead of SIGKILL: the process then waits at the point, with
all it holds, until it is sent SIGCONT, so a test can start a second writer at an exact moment of the first.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_SIGNAL_VARIABLE", "FAULT_VARIABLE", "fault_point"]

#: The environment variable that names the point where the process kills itself.
FAULT_VARIABLE = "PREDIFF_FAULT_INJECT"
#: The environment variable that names the signal sent instead of SIGKILL.
FAULT_SIGNAL_VARIABLE = "PREDIFF_FAULT_SIGNAL"


def fault_point(name: str, number: int | None = None) -> None:
    """SIGKILL this process (or send it the signal ``PREDIFF_FAULT_SIGNAL`` names) if ``PREDIFF_FAULT_INJECT``
    is ``name`` or ``name:number``; otherwise nothing.

    SIGKILL, not an exception: like a power cut or the out-of-memory killer, it runs no ``finally`` block, no
    ``atexit`` handler and no cleanup, which is what the writes around these points must survive.
    """
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    point, _, at = wanted.partition(":")
    if point == name and (not at or (number is not None and at.strip() == str(number))):
        os.kill(os.getpid(), signal.Signals[os.environ.get(FAULT_SIGNAL_VARIABLE, "SIGKILL")])
