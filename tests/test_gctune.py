"""The collector tuning of long-running processes: a higher young threshold, and still collecting."""

import subprocess
import sys

from tlog.gctune import YOUNG_THRESHOLD

# In a child process: the test runner's own collector stays as it is.
CHILD = f"""
import gc, weakref
from tlog.gctune import tune_for_batches
before = gc.get_threshold()
tune_for_batches()
assert gc.get_threshold() == ({YOUNG_THRESHOLD}, before[1], before[2]), gc.get_threshold()
assert gc.get_freeze_count() > 0  # what start-up built is out of the scans

class Node:
    pass

# Cyclic garbage is still collected, without anyone calling gc.collect(), once enough accumulates.
first = Node(); first.me = first
alive = weakref.ref(first)
del first
for _ in range({YOUNG_THRESHOLD} * 3):
    n = Node(); n.me = n
assert alive() is None, "a reference cycle outlived three thresholds' worth of allocations"
print("ok")
"""


def test_tuning_raises_the_threshold_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
