"""benchmarks/gpu_check.py without a CUDA device: it refuses at once, saying why, with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_refuses_without_a_cuda_device():
    # No visible device, even on a machine that has one.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "needs a CUDA device and found none" in done.stderr and "Nothing was run" in done.stderr
    assert done.stdout == ""
    assert time.monotonic() - start < 30
