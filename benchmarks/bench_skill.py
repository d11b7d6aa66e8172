"""Skill study: the shipped PreDiff pipeline against pysteps, Earthformer and persistence on held-out storms.

Every forecaster sees the same held-out synthetic storms (`SyntheticStormDataset`, data seed `--data-seed`;
the shipped recipes train on seed 0) and is scored in VIL levels 0-255 with `prediff.metrics`: CRPS (of the
ensemble; a deterministic forecast's CRPS is its MAE), MSE and MAE of the ensemble mean, CSI at 16 / 74 / 133
per pixel and on 4x4 max-pooled frames, FSS (threshold 16, 4x4 neighbourhood), and the spread/skill ratio.
Two tables are printed, in Markdown:

1. **Skill**: every forecaster on all `--num-sequences` sequences, averaged over lead times, plus CRPS and MSE
   per lead time. PreDiff uses the pipeline's default sampler and `--members` members; STEPS the same count.
2. **Samplers**: PreDiff with each of `--samplers` on the first `--sampler-sequences` sequences (the 1000-step
   official sampler is slow on a CPU), the CRPS relative to the first one (the official DDPM-1000 by default)
   and the wall time. The fast samplers run with `--sampler-seeds` noise seeds and their scores are averaged:
   a small ensemble's CRPS moves by a few percent with the seed, as much as the samplers differ.

Noise is seeded per (sequence, member) with `--seed`, so results do not depend on batching. Example (about
20 minutes on a 2-core CPU; the 1000-step sampler takes most of it):

    python benchmarks/bench_skill.py
    python benchmarks/bench_skill.py --num-sequences 8 --sampler-sequences 2 --samplers dpmsolver++:20 ddim:50
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_common import Forecaster, baseline_forecasters, prediff_forecaster, sampler_label, timed

from prediff.data import SyntheticStormDataset
from prediff.evaluation.evaluate import evaluate_forecasts
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.loading import load_forecast_pipeline
from prediff.pretrained import shipped_pipeline_path

DEFAULT_SAMPLERS = (
    "ddpm:1000",
    "sde-dpmsolver++:20",
    "sde-dpmsolver++:10",
    "ddpm:20",
    "dpmsolver++:20",
    "dpmsolver++:10",
    "ddim:50",
)
#: Samplers with at least this many steps run with one noise seed only (the official loop costs 50x more).
SLOW_SAMPLER_STEPS = 200
#: Columns of the skill table: (label, score name, lead time or None for the average).
COLUMNS = (
    ("CRPS", "crps", None),
    ("CRPS last", "crps", -1),
    ("MSE", "mse", None),
    ("MAE", "mae", None),
    ("CSI16", "csi_16", None),
    ("CSI74", "csi_74", None),
    ("CSI133", "csi_133", None),
    ("CSI16 p4", "csi_16_pool4", None),
    ("CSI74 p4", "csi_74_pool4", None),
    ("CSI133 p4", "csi_133_pool4", None),
    ("FSS16 4px", "fss_16_scale4", None),
    ("spread/skill", "spread_skill_ratio", None),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=None, help="PreDiff pipeline folder (default: the shipped one)")
    parser.add_argument(
        "--earthformer",
        default="earthformer-storms-tiny",
        help='the Earthformer scored too: a shipped name, an EarthformerPipeline folder, or "none"',
    )
    parser.add_argument("--num-sequences", type=int, default=64, help="held-out sequences scored")
    parser.add_argument("--data-seed", type=int, default=2026, help="seed of the held-out storms")
    parser.add_argument("--members", type=int, default=8, help="ensemble members (PreDiff and STEPS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise")
    parser.add_argument(
        "--samplers", nargs="*", default=list(DEFAULT_SAMPLERS), help="preset:steps entries (none: no sampler table)"
    )
    parser.add_argument("--sampler-sequences", type=int, default=8, help="sequences of the sampler table")
    parser.add_argument("--sampler-members", type=int, default=4, help="members of the sampler table")
    parser.add_argument(
        "--sampler-seeds",
        type=int,
        default=3,
        help="noise seeds per fast sampler, averaged (a 4-member ensemble's CRPS varies by a few %% with the seed)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sequences forecast together")
    return parser.parse_args()


def score(
    forecasters: dict[str, Forecaster], dataset: SyntheticStormDataset, pipe: PreDiffPipeline, count: int, batch: int
) -> tuple[dict, dict[str, float]]:
    seconds: dict[str, float] = {}
    timed_forecasters = {name: timed(fn, seconds, name) for name, fn in forecasters.items()}
    T_in = pipe.context_shape[0]
    T_out = pipe.forecast_shape[0]
    results, _ = evaluate_forecasts(
        timed_forecasters,
        dataset,
        T_in,
        T_out,
        pipe.value_range,
        num_sequences=count,
        batch_size=batch,
        pool_sizes=(1, 4),
        fss_scales=(4,),
    )
    return results, seconds


def value(result, name: str, lead: int | None) -> float:
    if lead is None:
        return float(result.scores.get(name, float("nan")))
    per_lead = result.per_lead_time.get(name)
    return float(per_lead[lead]) if per_lead else float("nan")


def skill_table(results: dict, seconds: dict[str, float], count: int) -> str:
    header = "| forecast | members | s / sequence | " + " | ".join(label for label, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, result in results.items():
        cells = [f"{value(result, score_name, lead):.3g}" for _, score_name, lead in COLUMNS]
        cells = ["-" if cell == "nan" else cell for cell in cells]
        lines.append(f"| {name} | {result.members} | {seconds[name] / count:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lead_table(results: dict, score_name: str) -> str:
    leads = len(next(iter(results.values())).per_lead_time[score_name])
    lines = [
        f"| {score_name} per lead | " + " | ".join(f"+{t + 1}" for t in range(leads)) + " |",
        "|" + "---|" * (leads + 1),
    ]
    for name, result in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in result.per_lead_time[score_name]) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    pipe = PreDiffPipeline.from_pretrained(args.pipeline or shipped_pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    total = max(args.num_sequences, args.sampler_sequences)
    dataset = SyntheticStormDataset(total, T_in + T_out, H, W, seed=args.data_seed)
    default = sampler_label(pipe)
    steps = pipe.default_num_inference_steps
    print(
        f"held-out storms: data seed {args.data_seed}, {args.num_sequences} sequences of {T_in} + {T_out} frames of "
        f"{H}x{W}; noise seed {args.seed}; PreDiff default sampler {default}, {steps} steps"
    )

    forecasters: dict[str, Forecaster] = {
        f"prediff ({default} {steps})": prediff_forecaster(pipe, None, None, args.members, args.seed)
    }
    if args.earthformer != "none":
        earthformer = load_forecast_pipeline(args.earthformer)
        earthformer.set_progress_bar_config(disable=True)
        forecasters["earthformer"] = lambda context, target, indices: earthformer(context).frames
    forecasters.update(baseline_forecasters(T_out, args.members, args.seed, min(H, W)))
    results, seconds = score(forecasters, dataset, pipe, args.num_sequences, args.batch_size)
    print(f"\n## Skill ({args.num_sequences} sequences, VIL 0-255; lower is better but for CSI and FSS)\n")
    print(skill_table(results, seconds, args.num_sequences))
    print()
    print(lead_table(results, "crps"))
    print()
    print(lead_table(results, "mse"))

    if not args.samplers:
        return
    own_scheduler = pipe.scheduler
    samplers: dict[str, Forecaster] = {}
    seeds_of: dict[str, list[str]] = {}
    for entry in args.samplers:
        name, _, count = entry.partition(":")
        steps = int(count)
        seeds = [args.seed] if steps >= SLOW_SAMPLER_STEPS else range(args.seed, args.seed + args.sampler_seeds)
        for seed in seeds:
            run = f"{name} {steps} seed {seed}"
            samplers[run] = prediff_forecaster(pipe, name, steps, args.sampler_members, seed)
            seeds_of.setdefault(f"{name} {steps}", []).append(run)
    results, seconds = score(samplers, dataset, pipe, args.sampler_sequences, args.batch_size)
    pipe.scheduler = own_scheduler

    def mean(runs: list[str], score_name: str) -> float:
        return float(np.mean([results[run].scores.get(score_name, float("nan")) for run in runs]))

    reference_name = next(iter(seeds_of))
    reference = mean(seeds_of[reference_name], "crps")
    print(
        f"\n## Samplers ({args.sampler_sequences} sequences x {args.sampler_members} members; CRPS relative to "
        f"{reference_name}; samplers under {SLOW_SAMPLER_STEPS} steps averaged over {args.sampler_seeds} noise "
        "seeds)\n"
    )
    print("| sampler | s / sequence | speed-up | CRPS | CRPS over seeds | CRPS / reference | MSE | spread/skill |")
    print("|---|---|---|---|---|---|---|---|")
    reference_seconds = float(np.mean([seconds[run] for run in seeds_of[reference_name]]))
    for name, runs in seeds_of.items():
        crps = [results[run].scores["crps"] for run in runs]
        per_sequence = float(np.mean([seconds[run] for run in runs])) / args.sampler_sequences
        spread = f"{min(crps):.3g}-{max(crps):.3g}" if len(crps) > 1 else "-"
        print(
            f"| {name} | {per_sequence:.2f} | {reference_seconds / args.sampler_sequences / per_sequence:.0f}x | "
            f"{np.mean(crps):.3g} | {spread} | {np.mean(crps) / reference:.3f} | {mean(runs, 'mse'):.4g} | "
            f"{mean(runs, 'spread_skill_ratio'):.3g} |"
        )


if __name__ == "__main__":
    main()
