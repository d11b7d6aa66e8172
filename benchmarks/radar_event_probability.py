"""Choose the exceedance probability of an ensemble's event forecasts on the validation split of the radar training
data, never on the test set.

A forecaster turns an ensemble into a rain / no-rain map by issuing an event where at least a fraction p of the
members reach the threshold. The median (p about 1/2) under-forecasts the area of intense rain when the members
put their cores in different places, so CSI prefers a lower p. This script scores every p = k / M, k = 1..M, for
the radar pipeline and for pysteps STEPS on the validation split of the training file (the split the denoiser's
recipe holds out: `--val-fraction` 0.0625 and `--split-seed` 0 in `examples/configs/shipped/denoiser-radar.yaml`),
next to pysteps extrapolation, and prints for each ensemble the p with the highest mean of CSI at 1 and 5 mm/h.
`benchmarks/bench_radar.py` scores the held-out MeteoSwiss sequences with the p chosen here.

Forecasts and scores as in `bench_radar.py` (the same pysteps settings, mm/h, CSI = H / (H + M + F) over the
split's pixels, frequency bias); noise seeded per (sequence, member) from `--seed`.

Example (the training file of the prediff-radar-tiny model card; about 7 minutes on a 2-core CPU):

    python benchmarks/radar_event_probability.py --data runs/radar/train.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from bench_common import baseline_forecasters
from bench_radar import EXTRAPOLATION_NAME, STEPS_NAME, THRESHOLDS, WET_THRESHOLD, dry_filled, radar_forecaster

from prediff.data.io import SequenceFile
from prediff.metrics import SequenceScores
from prediff.pipelines.loading import load_forecast_pipeline
from prediff.training import split_indices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the training file of rain-rate sequences (mm/h)")
    parser.add_argument("--pipeline", default="prediff-radar-tiny", help="the radar pipeline (name or folder)")
    parser.add_argument("--val-fraction", type=float, default=0.0625, help="share held out (the recipe's)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split (the recipe's)")
    parser.add_argument("--members", type=int, default=8, help="ensemble members (pipeline and STEPS)")
    parser.add_argument("--inference-steps", type=int, default=None, help="default: the sampler's usual count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise and of STEPS")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences forecast together")
    return parser.parse_args(argv)


def scorers(members: int, forecasters: list[str]) -> dict[str, dict[float, SequenceScores]]:
    """forecaster -> p -> scores; every k / members for the ensembles, p = 1 for the extrapolation."""
    probabilities = {name: [k / members for k in range(1, members + 1)] for name in forecasters}
    probabilities[EXTRAPOLATION_NAME] = [1.0]
    return {
        name: {p: SequenceScores(THRESHOLDS, event_probability=p) for p in ps} for name, ps in probabilities.items()
    }


def table(scores: dict[str, dict[float, SequenceScores]], members: int) -> tuple[str, dict[str, float]]:
    """The Markdown table of CSI and bias per p, and each ensemble's p of the highest mean CSI."""
    lines = ["| forecast | p | CSI1 | CSI5 | mean CSI | BIAS1 | BIAS5 |", "|---|---|---|---|---|---|---|"]
    chosen = {}
    for name, by_p in scores.items():
        best = (-1.0, 0.0)
        for p, s in by_p.items():
            result = s.compute()
            mean_csi = 0.5 * (result["event_csi_1"] + result["event_csi_5"])
            best = max(best, (mean_csi, p))
            label = f"{round(p * members)}/{members}" if name != EXTRAPOLATION_NAME else "-"
            lines.append(
                f"| {name} | {label} | {result['event_csi_1']:.3f} | {result['event_csi_5']:.3f} | {mean_csi:.3f} "
                f"| {result['event_bias_1']:.2f} | {result['event_bias_5']:.2f} |"
            )
        if name != EXTRAPOLATION_NAME:
            chosen[name] = best[1]
    return "\n".join(lines), chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    try:
        if not args.data.exists():
            raise FileNotFoundError(f"no data file at {args.data}")
        data = SequenceFile(args.data)
        if data.metadata.get("units") != "mm/h":
            raise ValueError(f"{args.data} does not hold rain rate in mm/h (units: {data.metadata.get('units')!r})")
        pipe = load_forecast_pipeline(args.pipeline)
        pipe.set_progress_bar_config(disable=True)
        T_in, T_out = pipe.context_shape[0], pipe.forecast_shape[0]
        if data.shape[1] < T_in + T_out:
            raise ValueError(
                f"{args.data} holds sequences of {data.shape[1]} frames; the pipeline needs {T_in} + {T_out}"
            )
        _, validation = split_indices(len(data), args.val_fraction, args.split_seed)
        if not validation:
            raise ValueError(f"--val-fraction {args.val_fraction} holds out no sequence of the {len(data)}")
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"radar_event_probability.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    steps = args.inference_steps or pipe.default_num_inference_steps
    baselines = baseline_forecasters(
        T_out,
        args.members,
        args.seed,
        min(pipe.context_shape[1:3]),
        value_range=None,
        pysteps_kwargs={"motion_db_threshold": WET_THRESHOLD},
        steps_kwargs={
            "wet_threshold": WET_THRESHOLD,
            "km_per_pixel": data.metadata.get("pixel_size_km", 2.0),
            "timestep_minutes": data.metadata.get("frame_interval_minutes", 10),
        },
    )
    forecasters = {Path(args.pipeline).name: radar_forecaster(pipe, args.members, args.seed, steps)}
    forecasters.update({name: dry_filled(baselines[name]) for name in (STEPS_NAME, EXTRAPOLATION_NAME)})
    scores = scorers(args.members, [name for name in forecasters if name != EXTRAPOLATION_NAME])

    from tqdm.auto import tqdm

    for first in tqdm(range(0, len(validation), args.batch_size), desc="validation sequences"):
        ids = list(range(first, min(first + args.batch_size, len(validation))))
        frames = np.stack([data.read(validation[i]) for i in ids])[:, : T_in + T_out]
        context, target = frames[:, :T_in], frames[:, T_in:]
        for name, forecast in forecasters.items():
            ensemble = np.asarray(forecast(context, target, ids), dtype=np.float32)
            for s in scores[name].values():
                s.update(ensemble, target, indices=ids)
    text, chosen = table(scores, args.members)
    print(
        f"## Validation split of {args.data}: {len(validation)} sequences x {args.members} members, "
        f"{T_in} + {T_out} frames, {Path(args.pipeline).name} with {steps} steps\n"
    )
    print(text)
    print("\nHighest mean CSI at 1 and 5 mm/h: " + ", ".join(f"{name} p = {p:g}" for name, p in chosen.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
