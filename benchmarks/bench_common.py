"""What the skill benchmarks share: forecasters as functions of (context, target, sequence ids), timed, with the
PreDiff noise drawn per (sequence, member) and the baselines of `prediff.baselines`.

Imported by the scripts next to it (`python benchmarks/bench_skill.py` puts this folder first on `sys.path`).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from prediff.baselines import get_baseline
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.processes import member_generators
from prediff.schedulers import prediff_scheduler

#: `f(context, target, indices)`: context `(B, T_in, H, W, C)` and the observed future `(B, T_out, H, W, C)` in
#: physical units, `indices` the `B` sequence ids; returns `(B, M, T_out, H, W, C)` or `(B, T_out, H, W, C)`.
Forecaster = Callable[[np.ndarray, np.ndarray, Sequence[int]], np.ndarray]


def timed(forecast: Forecaster, seconds: dict[str, float], name: str) -> Forecaster:
    """`forecast`, adding its wall time to `seconds[name]` at every call."""

    def run(context: np.ndarray, target: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        start = time.perf_counter()
        result = forecast(context, target, indices)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    return run


def sampler_label(pipe: PreDiffPipeline) -> str:
    """The class of the pipeline's scheduler; DPM-Solver++ and its SDE variant share a class, so the algorithm too."""
    config = pipe.scheduler.config
    return type(pipe.scheduler).__name__ + (f" ({config.algorithm_type})" if "algorithm_type" in config else "")


def prediff_forecaster(
    pipe: PreDiffPipeline, sampler: str | None, steps: int | None, members: int, seed: int
) -> Forecaster:
    """PreDiff with a scheduler preset (None: the pipeline's own) and per-(sequence, member) noise."""
    scheduler = pipe.scheduler if sampler is None else prediff_scheduler(sampler)

    def forecast(context: np.ndarray, target: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        pipe.scheduler = scheduler
        return pipe(
            context,
            num_inference_steps=steps,
            num_ensemble_members=members,
            generator=member_generators(seed, indices, members),
        ).frames

    return forecast


def baseline_forecasters(
    num_frames: int,
    members: int,
    seed: int,
    frame_size: int,
    value_range: tuple[float, float] | None = (0.0, 255.0),
    pysteps_kwargs: Mapping[str, Any] | None = None,
    steps_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Forecaster]:
    """Persistence and, when pysteps is installed, its extrapolation and a STEPS ensemble of `members`.

    Args:
        num_frames: lead times to forecast.
        frame_size: the smaller side of the frames; STEPS' cascade gets `log2(frame_size) - 2` levels, 1 to 6.
        value_range: the extrapolation and STEPS are clipped to it (None: not clipped).
        pysteps_kwargs: more arguments of both pysteps baselines (e.g. the motion method).
        steps_kwargs: more arguments of STEPS (e.g. `wet_threshold`, `km_per_pixel`, `timestep_minutes`).

    STEPS draws the random numbers of sequence `i` from `seed + i` (one call per batch of consecutive ids).
    """
    forecasters: dict[str, Forecaster] = {}
    persistence = get_baseline("persistence")
    forecasters["persistence"] = lambda context, target, indices: persistence(context, num_frames)
    if importlib.util.find_spec("pysteps") is None:
        print(
            'pysteps is not installed: the extrapolation and STEPS rows are left out (pip install "prediff[pysteps]")'
        )
        return forecasters
    extrapolation, steps = get_baseline("extrapolation"), get_baseline("steps")
    levels = int(max(1, min(6, np.log2(frame_size) - 2)))
    common = {"value_range": value_range, **(pysteps_kwargs or {})}
    forecasters["pysteps extrapolation"] = lambda context, target, indices: extrapolation(
        context, num_frames, **common
    )
    forecasters["pysteps STEPS"] = lambda context, target, indices: steps(
        context,
        num_frames,
        num_members=members,
        num_cascade_levels=levels,
        seed=seed + int(indices[0]),
        show_progress=False,
        **common,
        **(steps_kwargs or {}),
    )
    return forecasters
