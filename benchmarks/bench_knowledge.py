"""Knowledge control: does the anticipated-intensity control reach its target, and what does it cost?

On held-out synthetic storms (data seed `--data-seed`; the shipped recipes train on seed 0) the shipped PreDiff
pipeline forecasts `--contexts` contexts x `--members` members per sampler, once without control and once per
anticipated mean intensity `mu + n sigma` (mu, sigma: the training distribution of the future mean intensity,
`future_intensity.json`), with the control's **default arguments** (form "x0", scale 1) for each method, and
once with the official DDPM mean-shift form where the sampler is DDPM. It prints, in Markdown:

- per sampler, method and n: the target, the achieved mean intensity (over all contexts and members), the miss
  in sigma, and the time per denoising step relative to the uncontrolled forecast;
- per sampler and method: the CRPS of the ensemble without control and with the control steered to each
  sequence's observed future mean intensity (what a perfect intensity outlook would give).

Targets outside the value range are left out. Example (the 1000-step rows take most of the time on a CPU):

    python benchmarks/bench_knowledge.py
    python benchmarks/bench_knowledge.py --samplers sde-dpmsolver++:20 --methods analytic --n-sigmas 0 4
    python benchmarks/bench_knowledge.py --samplers ddpm:1000 --contexts 1 --n-sigmas 0 4 --forms x0 --no-observed
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from prediff.data import SyntheticStormDataset
from prediff.knowledge import AnticipatedIntensityControl
from prediff.metrics import EnsembleCRPS
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.processes import member_generators
from prediff.pretrained import shipped_intensity_stats, shipped_pipeline_path
from prediff.schedulers import prediff_scheduler
from prediff.utils.units import to_physical

#: The official SEVIR-LR strength of the DDPM mean-shift form.
OFFICIAL_SCALE = 50.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=None, help="PreDiff pipeline folder (default: the shipped one)")
    parser.add_argument("--intensity-mean", type=float, default=None, help="mu (default: the shipped stats)")
    parser.add_argument("--intensity-std", type=float, default=None, help="sigma (default: the shipped stats)")
    parser.add_argument("--contexts", type=int, default=4, help="held-out contexts")
    parser.add_argument("--members", type=int, default=4, help="members per context")
    parser.add_argument("--data-seed", type=int, default=2025, help="seed of the held-out storms")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise")
    parser.add_argument(
        "--samplers", nargs="+", default=["sde-dpmsolver++:20", "ddim:50", "ddpm:1000"], help="preset:steps entries"
    )
    parser.add_argument("--methods", nargs="+", default=["learned", "analytic"], choices=["learned", "analytic"])
    parser.add_argument("--n-sigmas", nargs="+", type=float, default=[-2.0, 0.0, 2.0, 4.0])
    parser.add_argument(
        "--forms",
        nargs="+",
        default=["x0", "official"],
        choices=["x0", "official"],
        help='guidance forms: "x0" (the default arguments) and, with DDPM only, "official" (scale 50)',
    )
    parser.add_argument(
        "--observed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also steer to each sequence's observed intensity and score the CRPS",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    pipe = PreDiffPipeline.from_pretrained(args.pipeline or shipped_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    stats = shipped_intensity_stats() if args.intensity_mean is None else None
    mu = args.intensity_mean if args.intensity_mean is not None else stats.mean
    sigma = args.intensity_std if args.intensity_std is not None else stats.std
    lo, hi = pipe.value_range
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    data = SyntheticStormDataset(args.contexts, T_in + T_out, H, W, seed=args.data_seed)
    frames = to_physical(torch.stack([data[i]["frames"] for i in range(args.contexts)]), (lo, hi))
    context, future = frames[:, :T_in], frames[:, T_in:].numpy()
    observed = future.mean(axis=(1, 2, 3, 4))
    targets = [(n, mu + n * sigma) for n in args.n_sigmas if lo <= mu + n * sigma <= hi]
    print(
        f"{args.contexts} held-out contexts (data seed {args.data_seed}) x {args.members} members; mu = {mu:.2f}, "
        f"sigma = {sigma:.2f}; observed future mean intensity {observed.mean():.2f}"
    )

    def forecast(steps: int, control: AnticipatedIntensityControl | None) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        result = pipe(
            context,
            num_inference_steps=steps,
            num_ensemble_members=args.members,
            generator=member_generators(args.seed, range(args.contexts), args.members),
            knowledge_controls=control,
        ).frames
        return result, (time.perf_counter() - start) / steps

    def crps(ensemble: np.ndarray) -> float:
        metric = EnsembleCRPS()
        metric.update(ensemble, future)
        return float(metric.compute()["crps"])

    reach = ["| sampler | method | form | n | target | achieved | miss (sigma) | time / step vs none |"]
    reach.append("|---|---|---|---|---|---|---|---|")
    skill = ["| sampler | method | form | CRPS without | CRPS with (observed target) | achieved - observed |"]
    skill.append("|---|---|---|---|---|---|")
    for entry in args.samplers:
        name, _, count = entry.partition(":")
        steps = int(count)
        pipe.scheduler = prediff_scheduler(name)
        plain, plain_step = forecast(steps, None)
        reach.append(
            f"| {name} {steps} | none | - | - | - | {plain.mean():.2f} | {(plain.mean() - mu) / sigma:+.2f} vs mu | "
            f"1.00 ({plain_step * 1000:.0f} ms) |"
        )
        variants = [(method, "x0", None) for method in args.methods if "x0" in args.forms]
        if name == "ddpm" and "official" in args.forms:
            variants += [(method, "official", OFFICIAL_SCALE) for method in args.methods]
        for method, form, scale in variants:
            options = {"method": method, "form": form} | ({"scale": scale} if scale is not None else {})
            label = form if scale is None else f"{form} (scale {scale:g})"
            for n, target in targets:
                steered, step = forecast(steps, AnticipatedIntensityControl(target=target, **options))
                achieved = float(steered.mean())
                reach.append(
                    f"| {name} {steps} | {method} | {label} | {n:+g} | {target:.2f} | {achieved:.2f} | "
                    f"{(achieved - target) / sigma:+.2f} | {step / plain_step:.2f} |"
                )
            if not args.observed:
                continue
            steered, _ = forecast(steps, AnticipatedIntensityControl(target=observed.tolist(), **options))
            gap = float((steered.mean(axis=(1, 2, 3, 4, 5)) - observed).mean())
            skill.append(
                f"| {name} {steps} | {method} | {label} | {crps(plain):.3f} | {crps(steered):.3f} | {gap:+.2f} |"
            )
        print("\n".join(reach[-1 - len(variants) * len(targets) :]), flush=True)
    print("\n## Reaching the anticipated intensity\n")
    print("\n".join(reach))
    print("\n## Skill when the anticipated intensity is the observed one\n")
    print("\n".join(skill))


if __name__ == "__main__":
    main()
