"""Energy conservation on the N-body digits: how much does `EnergyConservationControl` lower the energy error of
PreDiff's forecasts, and what does it cost in MSE and time?

The pipeline (`--pipeline`, trained with `examples/configs/nbody-tiny/`) carries the energy alignment network the
control steers with. Held-out sequences (data seed `--data-seed`; the recipes train on seed 0) are forecast
`--members` times per context, once without control and once steered to the energy of the last context frame
(the simulator's, which a user would know), with the control's default arguments (form "x0", scale 1, the
network read on the clean estimate).

A frame's energy depends on the bodies' positions and velocities, not on its pixels, so the forecasts are scored
by an estimator of their own (`--estimator`: an alignment network trained with another seed on clean latents
only, `examples/configs/nbody-tiny/alignment-estimator.yaml`), never by the network the control steers with.
It prints, in Markdown, per sampler: the mean absolute energy error `|E(frame) - E(last context frame)|` over
future frames, members and contexts, the MSE of the members and of the ensemble mean against the observed
frames, and the time per denoising step relative to the uncontrolled forecast; and the same energy error of the
observed future (by the estimator and by the simulator) for reference.

    python benchmarks/bench_energy.py --pipeline runs/nbody-denoiser --estimator runs/nbody-estimator
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from prediff.data import NBodyDataset
from prediff.knowledge import EnergyConservationControl
from prediff.models import KnowledgeAlignmentModel
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.processes import member_generators
from prediff.schedulers import prediff_scheduler
from prediff.utils.units import to_physical, to_unit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="N-body PreDiff pipeline folder with its energy network")
    parser.add_argument("--estimator", required=True, help="the energy estimator's folder (an alignment network)")
    parser.add_argument("--contexts", type=int, default=8, help="held-out contexts")
    parser.add_argument("--members", type=int, default=4, help="members per context")
    parser.add_argument("--data-seed", type=int, default=2025, help="seed of the held-out sequences")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise")
    parser.add_argument("--samplers", nargs="+", default=["sde-dpmsolver++:20", "ddim:50"], help="preset:steps")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    pipe = PreDiffPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    if pipe.knowledge_model is None:
        raise ValueError(f"{args.pipeline} holds no knowledge_model: train the energy network and pass it")
    estimator = KnowledgeAlignmentModel.from_pretrained(args.estimator, use_safetensors=True).eval()
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    data = NBodyDataset(args.contexts, T_in + T_out, seed=args.data_seed, frame_size=H)
    items = [data[i] for i in range(args.contexts)]
    frames = to_physical(torch.stack([item["frames"] for item in items]), pipe.value_range)
    energies = np.stack([item["energy"] for item in items])  # (B, T_in + T_out)
    initial = energies[:, T_in - 1]
    context, future = frames[:, :T_in], frames[:, T_in:].numpy()

    @torch.no_grad()
    def estimated_energy(sequences: np.ndarray) -> np.ndarray:
        """Frames `(..., T_out, H, W, C)` in physical units -> the estimator's energies `(..., T_out)`."""
        flat = torch.from_numpy(sequences.reshape(-1, *sequences.shape[-4:])).float()
        latents = pipe.encode_frames(to_unit(flat, pipe.value_range))
        energy = estimator(latents, torch.zeros(len(latents), dtype=torch.long)).sample[..., 0]
        return energy.numpy().reshape(sequences.shape[:-3])

    def energy_error(ensemble: np.ndarray) -> float:
        """Mean `|E(frame) - E(last context frame)|` of an ensemble `(B, M, T_out, H, W, C)`."""
        return float(np.abs(estimated_energy(ensemble) - initial[:, None, None]).mean())

    print(
        f"{args.contexts} held-out N-body contexts (data seed {args.data_seed}) x {args.members} members, "
        f"{T_in} + {T_out} frames of {H}x{W}"
    )
    rows = [
        "| sampler | control | energy error | MSE of members | MSE of the mean | time / step vs none |",
        "|---|---|---|---|---|---|",
    ]
    for entry in args.samplers:
        name, _, count = entry.partition(":")
        steps = int(count)
        pipe.scheduler = prediff_scheduler(name)
        plain_step = None
        for label, control in (("none", None), ("energy", EnergyConservationControl(initial.tolist()))):
            start = time.perf_counter()
            ensemble = pipe(
                context,
                num_inference_steps=steps,
                num_ensemble_members=args.members,
                generator=member_generators(args.seed, range(args.contexts), args.members),
                knowledge_controls=control,
            ).frames
            step = (time.perf_counter() - start) / steps
            plain_step = plain_step or step
            member_mse = float(((ensemble - future[:, None]) ** 2).mean())
            mean_mse = float(((ensemble.mean(axis=1) - future) ** 2).mean())
            rows.append(
                f"| {name} {steps} | {label} | {energy_error(ensemble):.3f} | {member_mse:.5f} | {mean_mse:.5f} | "
                f"{step / plain_step:.2f} |"
            )
    observed_estimated = float(np.abs(estimated_energy(future) - initial[:, None]).mean())
    observed_simulated = float(np.abs(energies[:, T_in:] - initial[:, None]).mean())
    print("\n".join(rows))
    print(
        f"\nThe observed future: energy error {observed_estimated:.3f} by the estimator, {observed_simulated:.3f} by "
        f"the simulator (which does not conserve energy exactly); energies average {energies.mean():.2f}."
    )


if __name__ == "__main__":
    main()
