"""Speed and memory of the PreDiff denoiser ("prediff-sevirlr" Earthformer-UNet) per attention backend and dtype.

Every configuration runs in a fresh subprocess (so peak memory and compilation do not leak between rows) and is
timed as the best of ``--repeats`` runs after a warm-up. Forward runs under ``torch.no_grad()`` in eval mode;
forward+backward is one training step's work (train mode, dropout on, MSE to random noise).

    python benchmarks/bench_denoiser.py                       # CPU: batch 1
    python benchmarks/bench_denoiser.py --device cuda         # GPU: batch 8

float32 rows always, bfloat16 rows (autocast) where the hardware supports it.

Prints a Markdown table; ratios are against the float32 reference path measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

BACKENDS = ("reference", "sdpa", "compiled")


def measure(args: argparse.Namespace) -> dict:
    import torch

    from prediff import EarthformerUNetModel

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = EarthformerUNetModel.from_preset(args.preset).to(device)
    with torch.no_grad():
        # Trained-like weights: the official initialisation zeroes every residual branch.
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.set_attention_backend("sdpa" if args.backend == "compiled" else args.backend)
    runner = torch.compile(model, fullgraph=True) if args.backend == "compiled" else model
    T_in, T_out = model.input_shape, model.target_shape
    sample = torch.randn(args.batch, *T_out, device=device)
    context = torch.randn(args.batch, *T_in, device=device)
    timestep = torch.randint(0, 1000, (args.batch,), device=device)
    dtype = getattr(torch, args.dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward():
        model.eval()
        with torch.no_grad(), autocast:
            runner(sample, timestep, context)
        sync()

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        with autocast:
            prediction = runner(sample, timestep, context).sample
        torch.nn.functional.mse_loss(prediction.float(), sample).backward()
        sync()

    results = {}
    for name, step in (("forward", forward), ("forward_backward", forward_backward)):
        step()  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        results[f"{name}_ms"] = 1000 * min(times)
        if device.type == "cuda":
            results[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if device.type != "cuda":
        # Peak resident memory of this process (includes the model and PyTorch itself).
        results["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def bf16_supported(device: str) -> bool:
    """bfloat16 rows only where the hardware computes in bfloat16 (tensor cores, AVX512-BF16/AMX)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 8 on a GPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="prediff-sevirlr")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: reference, sdpa, xformers, compiled"
    )
    parser.add_argument("--dtypes", default=None, help="default: float32, and bfloat16 where supported")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="sdpa", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch is None:
        args.batch = 8 if args.device == "cuda" else 1
    if args.single:
        print(json.dumps(measure(args)))
        return
    dtypes = (args.dtypes or ("float32,bfloat16" if bf16_supported(args.device) else "float32")).split(",")
    rows = measure_rows(args.device, args.batch, args.repeats, args.preset, args.backends.split(","), dtypes)
    print(f"\n{args.preset} denoiser, batch {args.batch}, {device_name(args.device)}, best of {args.repeats}\n")
    print(markdown_table(rows, args.device))


def measure_rows(
    device: str,
    batch: int,
    repeats: int,
    preset: str,
    backends: list[str],
    dtypes: list[str],
    timeout: float | None = None,
) -> list[dict]:
    """One row per (dtype, backend), each measured in a fresh subprocess: backend, dtype, forward_ms,
    forward_backward_ms and peak memory in MiB. A configuration that fails or runs past `timeout` seconds is
    reported on stderr and left out."""
    rows = []
    for dtype in dtypes:
        for backend in backends:
            command = [
                sys.executable, __file__, "--single", "--device", device, "--batch", str(batch),
                "--repeats", str(repeats), "--preset", preset, "--backend", backend, "--dtype", dtype,
            ]  # fmt: skip
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"{backend}/{dtype} ran past {timeout:.0f} s", file=sys.stderr)
                continue
            if done.returncode != 0:
                print(f"{backend}/{dtype} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append({"backend": backend, "dtype": dtype, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(f"measured {backend} {dtype}", file=sys.stderr, flush=True)
    return rows


def markdown_table(rows: list[dict], device: str) -> str:
    """`rows` of [`measure_rows`] as Markdown, with ratios to the float32 reference row when there is one."""
    baseline = next((r for r in rows if r["backend"] == "reference" and r["dtype"] == "float32"), None)
    memory_columns = ["forward_peak_mb", "forward_backward_peak_mb"] if device == "cuda" else ["peak_mb"]
    header = ["backend", "dtype", "forward ms", "fwd+bwd ms", *memory_columns, "fwd / ref", "fwd+bwd / ref"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ratios = ["", ""]
        if baseline:
            ratios = [f"{row['forward_ms'] / baseline['forward_ms']:.2f}",
                      f"{row['forward_backward_ms'] / baseline['forward_backward_ms']:.2f}"]  # fmt: skip
        cells = [row["backend"], row["dtype"], f"{row['forward_ms']:.1f}", f"{row['forward_backward_ms']:.1f}"]
        cells += [f"{row[c]:.0f}" for c in memory_columns] + ratios
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
