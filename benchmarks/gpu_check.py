"""One GPU check, in under 8 minutes on one CUDA device: the GPU tests, an 8-member SEVIR-LR forecast with and
without knowledge control, the shipped few-step student against its teacher, the denoiser's training throughput
and the denoiser benchmark, as one Markdown table with a PASS / FAIL line per goal.

    python benchmarks/gpu_check.py

Goals:

- training: the "prediff-sevirlr" denoiser trains (bf16 + torch.compile, SDPA) at least 3x as many samples per
  second as the float32 reference attention path (both at batch 8, from benchmarks/bench_training.py);
- forecast: one 8-member "prediff-sevirlr" forecast (7 frames of 128x128 in, 6 out, random weights) with
  DPM-Solver++ at 20 steps and the learned anticipated-intensity control takes under 1.5 s in bf16 on an
  H100-class GPU.

Sections run from the most to the least important; the denoiser benchmark gets the time that is left, and a
configuration that does not fit is left out of the table (said on stderr). Exit status: 0 when the tests pass
and every goal is met, 1 otherwise, 2 without a CUDA device (nothing is run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

BUDGET_SECONDS = 8 * 60
#: Kept back from the denoiser benchmark for printing and the subprocess of the last configuration to exit.
MARGIN_SECONDS = 15
REPO = Path(__file__).resolve().parents[1]
TRAINING_SPEEDUP_GOAL = 3.0
FORECAST_SECONDS_GOAL = 1.5
MEMBERS = 8
BATCH = 8
TRAINING_STEPS = 30


def run_gpu_tests() -> tuple[bool, str]:
    """`pytest -m gpu` over the test suite: (passed, pytest's summary line)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(REPO / "tests")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-200:]
    if done.returncode != 0:
        print(done.stdout[-4000:], file=sys.stderr)
    return done.returncode == 0, summary


def time_forecasts() -> list[dict]:
    """Seconds of one 8-member "prediff-sevirlr" forecast per scheduler, steps, control and dtype (median of 3
    after a warm-up; one timed run for DDPM's 1000 steps)."""
    from bench_sampling import DTYPES, time_forecast

    from prediff.knowledge import AnticipatedIntensityControl
    from prediff.pipelines import PreDiffPipeline
    from prediff.schedulers import prediff_scheduler

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    pipe = PreDiffPipeline.from_preset("prediff-sevirlr").to(device)
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, C = pipe.context_shape
    context = torch.rand(1, T_in, H, W, C, generator=torch.Generator().manual_seed(0)) * 255.0
    # 60 VIL units: the target value does not change the cost.
    control = AnticipatedIntensityControl(target=60.0, method="learned")
    # (scheduler, steps, control, dtype, timed runs)
    configurations = [
        ("dpmsolver++", 20, None, "bf16", 3),
        ("dpmsolver++", 20, control, "bf16", 3),
        ("dpmsolver++", 20, None, "float32", 3),
        ("dpmsolver++", 20, control, "float32", 3),
        ("ddpm", 1000, None, "bf16", 1),
    ]
    rows = []
    for scheduler, steps, knowledge, dtype, repeats in configurations:
        pipe.to(dtype=DTYPES[dtype])
        pipe.scheduler = prediff_scheduler(scheduler)
        controls = None if knowledge is None else [knowledge]
        seconds = time_forecast(pipe, context, steps, MEMBERS, controls, repeats, device)
        label = "learned control" if knowledge is not None else "no control"
        rows.append({"scheduler": scheduler, "steps": steps, "control": label, "dtype": dtype, "seconds": seconds})
        print(f"forecast {scheduler} {steps} steps, {label}, {dtype}: {seconds:.3f} s", file=sys.stderr, flush=True)
    del pipe
    torch.cuda.empty_cache()
    return rows


def time_shipped_forecasts() -> list[dict]:
    """Seconds of one 8-member forecast of a 64x64 storm with the shipped teacher (`prediff-storms-tiny`, its
    default 20 steps) and its distilled student (`prediff-storms-fast`, its default steps), float32, median of 3."""
    from bench_sampling import time_forecast

    from prediff.pretrained import load_shipped_pipeline

    device = torch.device("cuda")
    rows = []
    for name in ("prediff-storms-tiny", "prediff-storms-fast"):
        pipe = load_shipped_pipeline(name).to(device)
        pipe.set_progress_bar_config(disable=True)
        T_in, H, W, C = pipe.context_shape
        context = torch.rand(1, T_in, H, W, C, generator=torch.Generator().manual_seed(0)) * 255.0
        steps = pipe.default_num_inference_steps
        seconds = time_forecast(pipe, context, steps, MEMBERS, None, 3, device)
        rows.append({"pipeline": name, "scheduler": type(pipe.scheduler).__name__, "steps": steps, "seconds": seconds})
        print(f"forecast {name} {steps} steps: {seconds:.3f} s", file=sys.stderr, flush=True)
        del pipe
    torch.cuda.empty_cache()
    return rows


def main() -> int:
    if not torch.cuda.is_available():
        print(
            "gpu_check.py needs a CUDA device and found none (torch.cuda.is_available() is False); it times GPU "
            "kernels and runs the GPU tests, which mean nothing on a CPU. Nothing was run.",
            file=sys.stderr,
        )
        return 2
    from bench_denoiser import measure_rows
    from bench_training import GPU_VARIANTS, gpu

    deadline = time.monotonic() + BUDGET_SECONDS
    device_name = torch.cuda.get_device_name()
    table = ["| check | configuration | result |", "|---|---|---|"]

    tests_passed, test_summary = run_gpu_tests()
    table.append(f"| GPU tests | pytest -m gpu | {test_summary} |")

    forecasts = time_forecasts()
    for row in forecasts:
        configuration = f"{MEMBERS} members, {row['scheduler']} {row['steps']} steps, {row['control']}, {row['dtype']}"
        table.append(f"| forecast | {configuration} | {row['seconds']:.3f} s |")
    for row in time_shipped_forecasts():
        configuration = f"{row['pipeline']}, {MEMBERS} members, {row['scheduler']} {row['steps']} steps, float32"
        table.append(f"| shipped forecast | {configuration} | {row['seconds']:.3f} s |")

    # bench_training prints its own lines; stdout is kept for the table.
    with contextlib.redirect_stdout(sys.stderr):
        training = {row["label"]: row for row in gpu(TRAINING_STEPS, BATCH)}
    for label, row in training.items():
        result = f"{row['samples_per_second']:.2f} samples/s, peak {row['peak_gib']:.1f} GiB"
        table.append(f"| training | denoiser batch {BATCH}, {label} | {result} |")

    backends = ["reference", "sdpa", "compiled"]
    if importlib.util.find_spec("xformers") is not None:
        backends.insert(2, "xformers")
    denoiser_rows = []
    for dtype in ("float32", "bfloat16"):
        for backend in backends:
            left = deadline - time.monotonic() - MARGIN_SECONDS
            if left < 30:
                print(f"denoiser {backend}/{dtype}: no time left, not measured", file=sys.stderr)
                continue
            denoiser_rows += measure_rows("cuda", BATCH, 3, "prediff-sevirlr", [backend], [dtype], timeout=left)
    reference = next((r for r in denoiser_rows if r["backend"] == "reference" and r["dtype"] == "float32"), None)
    for row in denoiser_rows:
        result = (
            f"forward {row['forward_ms']:.1f} ms, fwd+bwd {row['forward_backward_ms']:.1f} ms, "
            f"peak {row['forward_backward_peak_mb']:.0f} MiB"
        )
        if reference is not None:
            result += f", fwd+bwd {reference['forward_backward_ms'] / row['forward_backward_ms']:.2f}x the reference"
        table.append(f"| denoiser | batch {BATCH}, {row['backend']}, {row['dtype']} | {result} |")

    print(f"\n# GPU check on {device_name}\n")
    print("\n".join(table))
    print()
    fast, slow = (training[label]["samples_per_second"] for label in GPU_VARIANTS)
    speedup = fast / slow
    training_ok = speedup >= TRAINING_SPEEDUP_GOAL
    print(
        f"{'PASS' if training_ok else 'FAIL'} training: {fast:.2f} samples/s is {speedup:.2f}x the float32 "
        f"reference path's {slow:.2f} (goal: at least {TRAINING_SPEEDUP_GOAL:g}x)"
    )
    controlled = next(
        r for r in forecasts if r["steps"] == 20 and r["control"] != "no control" and r["dtype"] == "bf16"
    )
    forecast_ok = controlled["seconds"] < FORECAST_SECONDS_GOAL
    print(
        f"{'PASS' if forecast_ok else 'FAIL'} forecast: {MEMBERS} members with control in "
        f"{controlled['seconds']:.3f} s (goal: under {FORECAST_SECONDS_GOAL:g} s on an H100-class GPU; this is "
        f"{device_name})"
    )
    print(f"{'PASS' if tests_passed else 'FAIL'} GPU tests: {test_summary}")
    return 0 if tests_passed and training_ok and forecast_ok else 1


if __name__ == "__main__":
    sys.exit(main())
