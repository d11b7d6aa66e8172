"""Time one ensemble forecast of the "prediff-sevirlr" pipeline per scheduler, step count, control and dtype.

Default workload (the PreDiff SEVIR-LR setting): 8 members, 7 context frames of 128x128 in, 6 out. Prints a
markdown table of the median wall time of `--repeats` runs after one warm-up run. Weights are random (timing
does not depend on them). Example:

    python benchmarks/bench_sampling.py                       # full table, on the GPU if there is one
    python benchmarks/bench_sampling.py --device cpu --schedulers ddim:2 dpmsolver++:2 --dtypes float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from prediff.knowledge import AnticipatedIntensityControl
from prediff.pipelines import PreDiffPipeline
from prediff.schedulers import prediff_scheduler

DEFAULT_SCHEDULERS = ("ddpm:1000", "ddim:50", "dpmsolver++:20")
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="prediff-sevirlr", help="pipeline preset (prediff-sevirlr, prediff-tiny)")
    parser.add_argument("--schedulers", nargs="+", default=list(DEFAULT_SCHEDULERS), help="name:steps entries")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--members", type=int, default=8, help="ensemble members")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument(
        "--control",
        choices=("learned", "analytic"),
        default="learned",
        help="knowledge control of the 'with control' rows",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def parse_scheduler(entry: str) -> tuple[str, int]:
    name, _, steps = entry.partition(":")
    if not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"--schedulers entries must be name:steps with steps >= 1, got {entry!r}")
    return name, int(steps)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forecast(pipe, context, steps, members, controls, repeats, device) -> float:
    """Median seconds of one forecast (context encoding, sampling and decoding included)."""

    def run():
        generator = torch.Generator(device=device).manual_seed(0)
        pipe(
            context,
            num_inference_steps=steps,
            num_ensemble_members=members,
            generator=generator,
            knowledge_controls=controls,
            output_type="pt",
        )

    run()  # warm-up: kernel selection, allocator
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    schedulers = [parse_scheduler(s) for s in args.schedulers]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pipe = PreDiffPipeline.from_preset(args.preset).to(device)
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, C = pipe.context_shape
    context = torch.rand(1, T_in, H, W, C, generator=torch.Generator().manual_seed(0)) * 255.0
    target = 60.0  # physical units (VIL); the value does not change the cost
    control = AnticipatedIntensityControl(target=target, scale=50.0, method=args.control)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# {args.preset}: {args.members} members, {T_in} frames {H}x{W}x{C} in, "
        f"{pipe.forecast_shape[0]} out; device {device_name}; median of {args.repeats}"
    )
    print("| scheduler | steps | control | dtype | seconds | ms/step |")
    print("|---|---|---|---|---|---|")
    for dtype_name in args.dtypes:
        pipe.to(dtype=DTYPES[dtype_name])
        for name, steps in schedulers:
            pipe.scheduler = prediff_scheduler(name)
            for controls, label in ((None, "none"), ([control], args.control)):
                seconds = time_forecast(pipe, context, steps, args.members, controls, args.repeats, device)
                per_step = 1000 * seconds / steps
                print(
                    f"| {name} | {steps} | {label} | {dtype_name} | {seconds:.3f} | {per_step:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
