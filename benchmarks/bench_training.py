"""Training throughput (samples per second) of the tiny synthetic-storm recipes on the CPU and, when a CUDA
device is present, of the "prediff-sevirlr" denoiser (bf16 + torch.compile next to float32 with the
reference attention path).

    python benchmarks/bench_training.py [--steps 30] [--gpu-steps 30] [--gpu-batch 8] [--skip-cpu]

A sample is one item (a context + target sequence); for the autoencoder it is one frame. The rate is taken
over the last 20 training steps (never the first, which warms up caches and compiles) and excludes setup,
validation and export; the wall time includes them. The autoencoder has two rows: the recipe trains it
without the PatchGAN discriminator up to `disc_start` and with it afterwards, so the recipe's time is the sum.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prediff.training import TRAINERS, load_config

TINY = Path(__file__).resolve().parents[1] / "examples" / "configs" / "synthetic-tiny"


def run(kind: str, config_path: Path | None, overrides: dict) -> tuple[float, float]:
    """Train `kind` with `overrides`; returns (samples per second, wall seconds including the setup: data,
    networks, Accelerator; and the final validation and export)."""
    config = load_config(kind, config_path, overrides)
    start = time.perf_counter()
    trainer = TRAINERS[kind](config)
    trainer.train()
    return trainer.samples_per_second, time.perf_counter() - start


def cpu(steps: int) -> None:
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    print(f"CPU ({torch.get_num_threads()} threads), tiny recipes, {steps} steps each")
    with tempfile.TemporaryDirectory() as tmp:
        common = {"report_to": "none", "max_train_steps": steps, "checkpointing_steps": 10**6}
        common.update(num_validation_batches=1, num_validation_samples=0)
        vae_dir = Path(tmp) / "vae"
        vae = load_config("vae", TINY / "vae.yaml")
        # (label, kind, overrides, which of the recipe's steps train like this; None: all)
        rows = [
            ("vae", "vae", {"output_dir": str(vae_dir), "disc_start": steps}, range(vae.disc_start)),
            ("vae + PatchGAN", "vae", {"disc_start": 0}, range(vae.disc_start, vae.max_train_steps)),
            ("alignment", "alignment", {"vae": str(vae_dir)}, None),
            ("denoiser", "denoiser", {"vae": str(vae_dir)}, None),
            ("earthformer", "earthformer", {}, None),
        ]
        for label, kind, extra, recipe_steps in rows:
            rate, wall = run(kind, TINY / f"{kind}.yaml", {**common, "output_dir": str(Path(tmp) / label), **extra})
            recipe = load_config(kind, TINY / f"{kind}.yaml", {k: v for k, v in extra.items() if k == "vae"})
            recipe_steps = recipe_steps if recipe_steps is not None else range(recipe.max_train_steps)
            per_step = recipe.train_batch_size * recipe.gradient_accumulation_steps
            per_step *= recipe.data.window_length if kind == "vae" else 1
            minutes = len(recipe_steps) * per_step / rate / 60
            unit = "frames" if kind == "vae" else "sequences"
            print(
                f"  {label:15s} {rate:8.1f} {unit}/s  ({wall:.1f} s for {steps} steps incl. setup, validation and "
                f"export; recipe steps {recipe_steps.start + 1}-{recipe_steps.stop} like this: about {minutes:.1f} "
                f"min)"
            )


#: The GPU variants of the "prediff-sevirlr" denoiser: the fast path, and the float32 reference path it is
#: compared with.
GPU_VARIANTS = {
    "bf16 + compile (sdpa)": {"mixed_precision": "bf16", "compile": True, "allow_tf32": True},
    "float32, reference attention": {"mixed_precision": "no", "attention_backend": "reference"},
}


def gpu(steps: int, batch: int) -> list[dict]:
    """Train the "prediff-sevirlr" denoiser for `steps` steps of `batch` sequences in every [`GPU_VARIANTS`]
    and print the rates. Returns one row per variant: label, samples_per_second, wall_seconds, peak_gib (the
    CUDA memory allocated at most)."""
    from prediff.models.autoencoder import autoencoder_from_preset

    name = torch.cuda.get_device_name()
    print(f"GPU {name}: prediff-sevirlr denoiser (136.8 M parameters), 7+6 frames of 128x128, batch {batch}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vae_dir = Path(tmp) / "vae"
        autoencoder_from_preset("prediff-sevirlr").save_pretrained(vae_dir)
        base = {
            "output_dir": str(Path(tmp) / "run"),
            "vae": str(vae_dir),
            "report_to": "none",
            "max_train_steps": steps,
            "checkpointing_steps": 10**6,
            "train_batch_size": batch,
            "num_validation_batches": 1,
            "num_validation_samples": 0,
            "use_ema": True,
            "data.dataset": "storms",
            "data.num_sequences": 2 * batch + 2,
            "data.height": 128,
            "data.width": 128,
            "data.context_length": 7,
            "data.target_length": 6,
            "data.cache_in_memory": True,
            "data.val_fraction": 0.05,
            "model.preset": "prediff-sevirlr",
        }
        for label, extra in GPU_VARIANTS.items():
            torch.cuda.reset_peak_memory_stats()
            rate, wall = run("denoiser", None, {**base, **extra})
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"  {label:30s} {rate:8.2f} sequences/s  ({wall:.0f} s incl. setup, validation and export, "
                f"peak {peak:.1f} GiB)"
            )
            rows.append({"label": label, "samples_per_second": rate, "wall_seconds": wall, "peak_gib": peak})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu(args.steps)
    if torch.cuda.is_available():
        gpu(args.gpu_steps, args.gpu_batch)
    else:
        print("no CUDA device: GPU benchmark skipped")


if __name__ == "__main__":
    main()
