"""`prediff demo`: the shipped pipeline on fresh synthetic storms, with pictures and scores, offline.

The demo generates held-out synthetic radar storms (a seed the shipped pipeline was not trained on), loads the
pipeline shipped with the package, and forecasts an ensemble for every sequence twice: without knowledge
control, and with the anticipated-intensity control steering each forecast to the observed future mean
intensity (what an intensity outlook from another source would provide). For one sequence it also draws
PreDiff's what-if figure: one forecast per anticipated intensity `mu + n sigma`, n in -4, -2, 0, 2, 4, with
`(mu, sigma)` the training distribution of the future mean intensity.

It writes into `--out`:

- `forecast_panel.png`: context, observed future, ensemble members and their mean;
- `forecast.gif`: the same as an animation;
- `what_if.png`: the what-if figure;
- `scores.json`: the scores printed at the end.

Scores (VIL units 0-255) are printed next to the baselines a forecaster would compare with: persistence always,
and pysteps' optical-flow extrapolation and STEPS ensemble when pysteps is installed (`pip install
"prediff[pysteps]"`; the demo says so when it is not). The scores: MSE, MAE and CSI of the ensemble mean, the
ensemble CRPS (for a single deterministic forecast the CRPS is its MAE), and the intensity error: the mean
absolute difference between a forecast's mean intensity and the anticipated one, without and with control.
The control runs with its default arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .knowledge.defaults import DEFAULT_CONTROL_SCALE
from .utils.checks import check_positive_int, check_seed
from .utils.files import atomic_output
from .utils.units import to_physical

__all__ = [
    "DEMO_CSI_THRESHOLDS",
    "DEMO_FILES",
    "DEMO_N_SIGMAS",
    "DEMO_SEED",
    "DemoResult",
    "achieved_intensity",
    "baseline_forecasts",
    "forecast_scores",
    "format_scores",
    "register",
    "run_demo",
]

#: Seed of the demo's storms; the shipped pipeline was trained on seed 0.
DEMO_SEED = 2024
#: What-if rows: anticipated mean intensity `mu + n sigma`.
DEMO_N_SIGMAS = (-4.0, -2.0, 0.0, 2.0, 4.0)
#: CSI thresholds of the demo (VIL levels; the SEVIR thresholds 16 and 74 are the ones synthetic storms reach
#: often enough to score on a few sequences).
DEMO_CSI_THRESHOLDS = (16.0, 74.0)
#: The files the demo writes.
DEMO_FILES = {
    "panel": "forecast_panel.png",
    "gif": "forecast.gif",
    "what_if": "what_if.png",
    "scores": "scores.json",
}


@dataclass
class DemoResult:
    """What [`run_demo`] produced.

    Attributes:
        scores: forecaster ("prediff", "persistence", and with pysteps "extrapolation" and "steps") -> score name
            -> value (VIL units 0-255).
        files: kind ("panel", "gif", "what_if", "scores") -> path written.
        what_if: n -> `{"anticipated": value, "achieved": mean intensity of the forecast}` (VIL units).
        seconds: wall time of the whole demo.
    """

    scores: dict[str, dict[str, float]]
    files: dict[str, Path]
    what_if: dict[float, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def forecast_scores(
    ensemble: np.ndarray, target: np.ndarray, thresholds: tuple[float, ...] = DEMO_CSI_THRESHOLDS
) -> dict[str, float]:
    """MSE, MAE, CSI (at `thresholds`, physical units) of the ensemble mean and CRPS of the ensemble; `ensemble`
    `(B, M, T, H, W, C)`, `target` `(B, T, H, W, C)`, physical units."""
    from .metrics import categorical_scores, crps_ensemble, mae, mse

    mean = ensemble.mean(axis=1)
    out = {"mse": float(mse(mean, target)), "mae": float(mae(mean, target))}
    out["crps"] = float(crps_ensemble(ensemble, target))
    csi = categorical_scores(mean, target, thresholds=thresholds, pool_sizes=(1,))
    for threshold in thresholds:
        out[f"csi_{threshold:g}"] = float(csi[f"csi_{threshold:g}"])
    return out


def baseline_forecasts(
    context: np.ndarray,
    num_frames: int,
    members: int,
    value_range: tuple[float, float],
    seed: int,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The baselines the demo compares with, each `(B, M, T_out, H, W, C)` (`M = 1` for the deterministic
    ones): persistence, and with pysteps its optical-flow extrapolation and a STEPS ensemble of `members`.

    Args:
        context: `(B, T_in, H, W, C)` in physical units.
        value_range: physical range the pysteps forecasts are clipped to.
    """
    from .baselines import extrapolation, persistence
    from .baselines import steps as steps_nowcast

    baselines = {"persistence": persistence(context, num_frames)[:, None]}
    if importlib.util.find_spec("pysteps") is None:
        return baselines
    baselines["extrapolation"] = extrapolation(context, num_frames, value_range=value_range)[:, None]
    # STEPS' cascade needs a few pixels per level: 6 levels on 128 px, fewer on small frames.
    height, width = context.shape[2:4]
    levels = int(max(1, min(6, np.log2(min(height, width)) - 2)))
    baselines["steps"] = steps_nowcast(
        context,
        num_frames,
        num_members=members,
        num_cascade_levels=levels,
        value_range=value_range,
        seed=seed,
        show_progress=progress,
    )
    return baselines


def achieved_intensity(forecast: np.ndarray) -> float:
    """The mean intensity a forecast reached, over its members, lead times and pixels (physical units; NaN
    outside a radar domain left out): what the what-if compares with the anticipated value."""
    return float(np.nanmean(forecast))


#: Column titles of the forecasters in the demo's score table.
FORECASTER_TITLES = {
    "prediff": "PreDiff",
    "persistence": "persistence",
    "extrapolation": "extrapolation",
    "steps": "STEPS",
}


def format_scores(scores: dict[str, dict[str, float]], units: str = "VIL 0-255") -> str:
    """The score table the demo prints: one row per score, one column per forecaster (PreDiff first); `units`
    of the scores for the header."""
    # CSI rows for the thresholds the scores hold (the demo's VIL levels, or rain rates).
    csi_keys = sorted({k for row in scores.values() for k in row if k.startswith("csi_")}, key=lambda k: float(k[4:]))
    labels = {
        "mse": "MSE (ensemble mean)",
        "mae": "MAE (ensemble mean)",
        "crps": "CRPS (deterministic: MAE)",
        **{key: f"CSI >= {key[4:]} (ensemble mean)" for key in csi_keys},
        "intensity_error": "intensity error, no control",
        "intensity_error_controlled": "intensity error, controlled",
    }
    names = [name for name in FORECASTER_TITLES if name in scores]
    header = f"{f'score ({units})':<32}" + "".join(f"{FORECASTER_TITLES[name]:>14}" for name in names)
    lines = [header, "-" * len(header)]
    for key, label in labels.items():
        values = [scores[name].get(key) for name in names]
        if all(v is None for v in values):
            continue
        lines.append(f"{label:<32}" + "".join(f"{v:>14.4g}" if v is not None else f"{'-':>14}" for v in values))
    return "\n".join(lines)


def run_demo(
    out: str | os.PathLike = "prediff-demo",
    members: int = 4,
    steps: int = 20,
    num_sequences: int = 8,
    seed: int = DEMO_SEED,
    control_scale: float = DEFAULT_CONTROL_SCALE,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> DemoResult:
    """Run the demo (see the module docstring) and return its scores and files.

    Args:
        out: folder for the pictures and `scores.json` (created if missing).
        members: ensemble members per sequence.
        steps: denoising steps of the shipped SDE-DPM-Solver++ scheduler.
        num_sequences: held-out synthetic sequences forecast and scored.
        seed: seed of those sequences and of the forecast noise.
        control_scale: strength of the anticipated-intensity control.
        overwrite: replace existing demo files in `out`; without it, existing files are an error.
        progress: show progress bars.
        verbose: print what happens and the score table.

    Raises:
        FileExistsError: a demo file exists in `out` and `overwrite` is False.
        ValueError: a count is not a positive integer.
    """
    start = time.perf_counter()
    members = check_positive_int("members", members)
    steps = check_positive_int("steps", steps)
    num_sequences = check_positive_int("num_sequences", num_sequences)
    seed = check_seed(seed)
    if not np.isfinite(control_scale) or control_scale < 0:
        raise ValueError(f"control_scale must be a finite number >= 0, got {control_scale!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {str(out)!r}")
    files = {kind: out / name for kind, name in DEMO_FILES.items()}
    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --overwrite to replace them")

    import torch

    from .data import SyntheticStormDataset
    from .knowledge import AnticipatedIntensityControl
    from .metrics import knowledge_control_error
    from .pretrained import load_shipped_pipeline, shipped_intensity_stats
    from .visualization import plot_forecast_panel, plot_what_if, save_forecast_gif

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    pipe = load_shipped_pipeline()
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    stats = shipped_intensity_stats()
    lo, hi = pipe.value_range
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    say(f"prediff demo: {num_sequences} synthetic storm sequences of {T_in} + {T_out} frames of {H}x{W} (seed {seed})")
    dataset = SyntheticStormDataset(num_sequences, T_in + T_out, H, W, seed=seed, progress=progress)
    # Items are VIL / 255 in [0, 1]; the pipeline takes physical units.
    frames = to_physical(torch.stack([dataset[i]["frames"] for i in range(num_sequences)]), (lo, hi))
    context, target = frames[:, :T_in].numpy(), frames[:, T_in:].numpy()
    observed_intensity = target.mean(axis=(1, 2, 3, 4))

    # 1. Ensembles without control and steered to the observed future intensity, plus the what-if rows for the
    #    sequence with the most rain; all controlled forecasts run in one call, one target per context.
    show = int(np.argmax(observed_intensity))
    # The intensity distribution is skewed: mu - 2 sigma can be negative, which no forecast can reach; such
    # targets are clipped to the physical range (the figure's labels keep mu + n sigma).
    what_if_targets = np.clip([stats.target(n) for n in DEMO_N_SIGMAS], lo, hi)
    say(f"prediff demo: forecasting {members} members per sequence, {steps} steps, without control")
    generator = torch.Generator().manual_seed(seed)
    plain = pipe(context, num_inference_steps=steps, num_ensemble_members=members, generator=generator).frames
    say("prediff demo: forecasting again with the anticipated-intensity control and the what-if targets")
    controlled_context = np.concatenate([context, np.repeat(context[show : show + 1], len(DEMO_N_SIGMAS), 0)])
    anticipated = np.concatenate([observed_intensity, what_if_targets])
    control = AnticipatedIntensityControl(target=anticipated.tolist(), scale=control_scale)
    generator = torch.Generator().manual_seed(seed)
    controlled_all = pipe(
        controlled_context,
        num_inference_steps=steps,
        num_ensemble_members=members,
        generator=generator,
        knowledge_controls=[control],
    ).frames
    controlled, what_if = controlled_all[:num_sequences], controlled_all[num_sequences:]

    # 2. Scores next to the baselines.
    baselines = baseline_forecasts(context, T_out, members, (lo, hi), seed, progress)
    if "steps" in baselines:
        say("prediff demo: scored next to pysteps extrapolation and STEPS")
    else:
        say(
            "prediff demo: pysteps is not installed, so the comparison leaves out optical-flow extrapolation and "
            'STEPS, the baselines a forecaster would pick; pip install "prediff[pysteps]" to add them'
        )
    scores = {"prediff": forecast_scores(plain, target)}
    scores["prediff"]["intensity_error"] = knowledge_control_error(plain, observed_intensity)
    scores["prediff"]["intensity_error_controlled"] = knowledge_control_error(controlled, observed_intensity)
    for name, forecast in baselines.items():
        scores[name] = forecast_scores(forecast, target)
        scores[name]["intensity_error"] = knowledge_control_error(forecast, observed_intensity)
    what_if_record = {
        float(n): {"anticipated": float(a), "achieved": achieved_intensity(f)}
        for n, a, f in zip(DEMO_N_SIGMAS, what_if_targets, what_if)
    }

    # 3. Pictures and scores.
    out.mkdir(parents=True, exist_ok=True)
    title = f"Shipped PreDiff pipeline, held-out synthetic storm #{show} (seed {seed})"
    plot_forecast_panel(context[show], target[show], plain[show], title=title, path=files["panel"])
    save_forecast_gif(files["gif"], context[show], target[show], plain[show], title=title)
    clipped = [n for n in DEMO_N_SIGMAS if not lo <= stats.target(n) <= hi]
    note = f" (targets of n = {', '.join(f'{n:g}' for n in clipped)} clipped to [{lo:g}, {hi:g}])" if clipped else ""
    plot_what_if(
        context[show],
        {n: what_if[i, 0] for i, n in enumerate(DEMO_N_SIGMAS)},
        mu=stats.mean,
        sigma=stats.std,
        target=target[show],
        uncontrolled=plain[show, 0],
        title=f"Anticipated mean intensity \u03bc + n\u03c3{note}",
        path=files["what_if"],
    )
    seconds = time.perf_counter() - start
    record = {
        "scores": scores,
        "what_if": {f"{n:g}": v for n, v in what_if_record.items()},
        "settings": {
            "members": members,
            "steps": steps,
            "num_sequences": num_sequences,
            "seed": seed,
            "control_scale": control_scale,
            "shape": [T_in, T_out, H, W],
        },
        "seconds": seconds,
    }
    with atomic_output(files["scores"], overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if verbose:
        print()
        print(format_scores(scores))
        print()
        print("what-if (anticipated mean intensity -> mean intensity of the controlled forecast):")
        for n, v in what_if_record.items():
            print(f"  mu {'+' if n >= 0 else '-'} {abs(n):g} sigma = {v['anticipated']:7.2f} -> {v['achieved']:7.2f}")
        print()
        for path in files.values():
            print(f"wrote {path}")
        print(f"prediff demo: done in {seconds:.1f} s")
    return DemoResult(scores=scores, files=files, what_if=what_if_record, seconds=seconds)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` command to the `prediff` parser."""
    parser = subparsers.add_parser(
        "demo",
        help="forecast synthetic storms with the shipped pipeline: pictures and scores, offline",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--out", default="prediff-demo", help="output folder (default: prediff-demo)")
    parser.add_argument("--members", type=int, default=4, help="ensemble members per sequence (default: 4)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    parser.add_argument("--sequences", type=int, default=8, help="storm sequences to forecast (default: 8)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"data and noise seed (default: {DEMO_SEED})")
    parser.add_argument(
        "--control-scale",
        type=float,
        default=DEFAULT_CONTROL_SCALE,
        help=f"strength of the intensity control (default: {DEFAULT_CONTROL_SCALE:g})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing demo files in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    run_demo(
        out=args.out,
        members=args.members,
        steps=args.steps,
        num_sequences=args.sequences,
        seed=args.seed,
        control_scale=args.control_scale,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return 0
