"""Wall time and peak resident memory of the commands a user runs first, each in a fresh process.

Cases (the shipped pipeline "prediff-storms-tiny", on the CPU unless a GPU is visible):

- `demo`: `prediff demo` (8 sequences, 4 members, 20 steps, with and without the intensity control, pysteps
  baselines when installed);
- `forecast`: `prediff forecast` of 8 members, 20 steps, from one context of 4 frames of 64x64 (a synthetic
  storm), writing the netCDF forecast, the pysteps array, the panel and the GIF;
- `forecast-control`: the same with `--knowledge-control intensity --n-sigma 2` (the control decodes the clean
  estimate and differentiates through the autoencoder at every step);
- `library` (not run by default): the same 8-member forecast as a library call,
  `load_shipped_pipeline()(context, num_ensemble_members=8)`, nothing written.

Every case runs in its own child process, whose peak resident set size comes from `os.wait4` (the kernel's
`ru_maxrss` of that child alone), so peaks do not mix. Prints a Markdown table. Example:

    python benchmarks/bench_memory.py                      # demo, forecast, forecast-control
    python benchmarks/bench_memory.py --cases forecast library --repeats 3

`--steps`, `--members` (of the forecasts) and `--num-sequences` (of the demo) scale the workload down.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("demo", "forecast", "forecast-control", "library")
DEFAULT_CASES = ("demo", "forecast", "forecast-control")

#: The library case: a forecast of the shipped pipeline from the context file argv[1], argv[2] members, argv[3]
#: steps.
LIBRARY_CALL = """
import sys, numpy as np, torch
from prediff.pretrained import load_shipped_pipeline
pipe = load_shipped_pipeline()
pipe.set_progress_bar_config(disable=True)
context = np.load(sys.argv[1])[None, ..., None]  # (1, T, H, W, 1)
members, steps = int(sys.argv[2]), int(sys.argv[3])
pipe(context, num_ensemble_members=members, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES), help=f"default: {' '.join(DEFAULT_CASES)}"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per case; the median time and largest peak")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the demo and forecasts")
    parser.add_argument("--members", type=int, default=8, help="ensemble members of the forecasts (demo: 4)")
    parser.add_argument("--num-sequences", type=int, default=8, help="storm sequences of the demo")
    return parser.parse_args()


def write_context(path: Path) -> None:
    """One context of the shipped pipeline's shape, 4 frames of 64x64 VIL (0-255), from a synthetic storm."""
    from prediff.data.storm_generator import generate_storm_sequence

    frames = generate_storm_sequence(seed=2024, index=0, seq_len=4, height=64, width=64)
    np.save(path, frames.astype(np.float32))


def command(case: str, work: Path, args: argparse.Namespace) -> list[str]:
    prediff = [sys.executable, "-m", "prediff"]
    context = work / "context.npy"
    if case == "demo":
        demo = [*prediff, "demo", "--out", str(work / "demo"), "--steps", str(args.steps)]
        return [*demo, "--sequences", str(args.num_sequences), "--no-progress", "--overwrite"]
    if case == "library":
        return [sys.executable, "-c", LIBRARY_CALL, str(context), str(args.members), str(args.steps)]
    forecast = [*prediff, "forecast", "--pipeline", "prediff-storms-tiny", "--input", str(context)]
    forecast += ["--members", str(args.members), "--steps", str(args.steps), "--no-progress", "--overwrite"]
    if case == "forecast":
        return [*forecast, "--out", str(work / "forecast.nc")]
    return [*forecast, "--out", str(work / "controlled.nc"), "--knowledge-control", "intensity", "--n-sigma", "2"]


def measure(argv: list[str]) -> tuple[float, int, int]:
    """Run `argv` in a child process: (wall seconds, peak resident bytes of that child, exit status)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 reports the resource use of this child alone (RUSAGE_CHILDREN would keep the largest child so far).
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        print(stderr.decode(errors="replace"), file=sys.stderr)
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return seconds, peak, child.returncode


def main() -> None:
    args = parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="prediff-bench-memory-") as name:
        work = Path(name)
        write_context(work / "context.npy")
        for case in args.cases:
            runs = [measure(command(case, work, args)) for _ in range(args.repeats)]
            seconds = statistics.median(run[0] for run in runs)
            peak = max(run[1] for run in runs)
            status = max((run[2] for run in runs), key=abs)
            rows.append((case, seconds, peak, status))
            print(f"{case}: {seconds:.1f} s, peak {peak / 1e9:.2f} GB, exit status {status}", file=sys.stderr)
    print(f"threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, CPUs: {os.cpu_count()}")
    print()
    print("| case | seconds | peak RSS (GB) | exit status |")
    print("|---|---:|---:|---:|")
    for case, seconds, peak, status in rows:
        print(f"| {case} | {seconds:.1f} | {peak / 1e9:.2f} | {status} |")


if __name__ == "__main__":
    main()
