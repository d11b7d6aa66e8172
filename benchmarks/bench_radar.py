"""Benchmark on held-out real storms: a radar PreDiff pipeline against the storms pipeline zero-shot, pysteps STEPS,
pysteps extrapolation and persistence, in rain rate (mm/h), on MeteoSwiss radar from pysteps' example archive.

MeteoSwiss is the held-out test set: nothing in the project is trained, tuned or chosen on it. This script only
scores, with a selection rule and settings fixed before any score was seen.

**Data.** The three MeteoSwiss events of the archive (`mch` in pysteps' pystepsrc; 2015-05-15 15:45-19:00,
2016-07-11 20:45 - 2016-07-12 00:00 and 2017-01-31 09:45-13:00 UTC), read with `RadarArchiveDataset` as rain rate,
at the radar pipeline's grid and clock (its recorded `pixel_size_km` and `frame_interval_minutes`; 2 km, 2x2
block means of the 1 km composites, and 10 minutes when it records none). Another source and its events can be
named with `--source` and `--events`.

**Selection** (deterministic, without looking at any forecast): windows of the pipeline's `T_in` context +
`T_out` lead frames start every `--window-stride` frames (default `T_out`, so the scored futures of one event never
overlap) and never span a missing file; crops of the pipeline's tile start every `--stride` pixels (default the
tile: crops do not overlap). A crop is a candidate when it holds no NaN (no pixel outside the radar domain) in any
frame and at least `--min-wet-fraction` (0.05) of its pixels over the window's frames have at least
`--wet-threshold` (0.1 mm/h). Candidates are ordered by event, window start, row and column, and
`--num-sequences` (24) of them are taken evenly spread: candidate `round(i (N - 1) / (n - 1))` for `i < n`. With
`--whole-domain` the windows are the whole composite instead (forecast by tiling, NaN outside the radar domain
kept), the same wet-fraction rule applies to its valid pixels, and scores count only pixels inside the domain in
every context and lead frame.

**Forecasts**, all from the same contexts, lead times up to the pipeline's horizon (`T_out` frames):

- the radar pipeline (`--pipeline`, default `prediff-radar-tiny`; any pipeline folder): rain rate in mm/h goes in
  as it is (the pipeline's value transform maps it), clipped to its physical range; `--members` (8) members, its
  default sampler, noise seeded per (sequence, member) from `--seed`;
- the storms pipeline zero-shot (`--storms-pipeline`, default `prediff-storms-tiny`, "none" to leave it out):
  rain rate becomes its 0-255 levels through Marshall-Palmer reflectivity, Z = 200 R^1.6 (mm^6/m^3, R in mm/h),
  dBZ = 10 log10 Z, 0-70 dBZ linearly to 0-255 (clipped; R = 0 is level 0), and its forecast comes back by the
  inverse (level 0, i.e. 0 dBZ or less, is 0 mm/h); same members and noise;
- pysteps STEPS, `--members` members, as pysteps' examples run it on rain rate: the dB transform (0.1 mm/h
  threshold, -15 dB below it, rain from -10 dB), its own Proesmans motion field estimated on the dB context, the
  grid spacing and time step above, pysteps' default noise and perturbations, 4 cascade levels on 64x64 crops
  (log2(size) - 2, at most 6); sequence `i` seeded with `--seed + i`;
- pysteps extrapolation (semi-Lagrangian advection of the last frame along the same motion field);
- persistence of the last context frame.

**Scores**, in mm/h over the selected sequences, with `prediff.metrics.SequenceScores`: CRPS of the ensemble (of a
deterministic forecast: its MAE), averaged over lead times and at the last lead; MSE and MAE of the ensemble mean;
CSI, POD and FAR = F / (H + F) at 1 and 5 mm/h, and FSS at 5 mm/h over 16 km (8 pixels at 2 km), all of the
ensemble median (the mean of the two middle members for even ensembles); the same categorical scores of each
ensemble's event forecasts, an event where at least a fraction p of the members reach the threshold, as a
forecaster issues a warning at an exceedance probability (`--event-probability`, 0.375 for the pipeline, and
`--steps-event-probability`, 0.25 for STEPS: chosen on the validation split of the training data by
`benchmarks/radar_event_probability.py`, never on MeteoSwiss); the spread/skill ratio; the rank
histogram over pixels where the observation or a member reaches 0.1 mm/h (below it all tie). 95% intervals come
from `--bootstrap` (1000) resamplings of the sequences (seeded by `--seed`, the same draws for every forecaster,
so the interval of a CRPS difference to STEPS, and of a CSI difference to the extrapolation, is paired). Wall time
per sequence of each forecaster is reported.

**Output**: a Markdown table, the intervals, the event forecasts' scores and the rank histograms printed; under
`--out`: `bench_radar.json` (settings, selected sequences, every score per lead time, intervals) and
`rank_histogram.png` (one line per ensemble forecaster, the uniform frequency dashed), both written atomically.

Examples (ARCHIVE holds `radar/mch`, e.g. from `pysteps.datasets.download_pysteps_data`):

    python benchmarks/bench_radar.py --root ARCHIVE
    python benchmarks/bench_radar.py --root ARCHIVE --num-sequences 4 --members 2   # a few minutes on a CPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import Forecaster, baseline_forecasters, sampler_label, timed

from prediff.data import RadarArchiveDataset, RadarSource, read_radar_events
from prediff.metrics import SequenceScores, bootstrap_weights, percentile_interval
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.loading import load_forecast_pipeline
from prediff.pipelines.processes import member_generators
from prediff.utils.checks import check_positive_int
from prediff.utils.files import atomic_output

#: The MeteoSwiss events of pysteps' example archive (UTC, ends included).
MCH_EVENTS = (
    ("201505151545", "201505151900"),
    ("201607112045", "201607120000"),
    ("201701310945", "201701311300"),
)
#: Grid and clock when the radar pipeline records none.
DEFAULT_PIXEL_SIZE_KM = 2.0
DEFAULT_INTERVAL_MINUTES = 10
#: Marshall-Palmer Z = a R^b, and the reflectivity range the storms pipeline's 0-255 levels span.
MARSHALL_PALMER = (200.0, 1.6)
DBZ_RANGE = (0.0, 70.0)
#: Event thresholds (mm/h), the FSS's threshold (mm/h) and neighbourhood (km), the rain/no-rain threshold (mm/h).
THRESHOLDS = (1.0, 5.0)
FSS_THRESHOLD = 5.0
FSS_KM = 16.0
WET_THRESHOLD = 0.1
STEPS_NAME = "pysteps STEPS"
EXTRAPOLATION_NAME = "pysteps extrapolation"
#: Exceedance probabilities of the ensembles' event forecasts (an event where at least this fraction of the members
#: reach the threshold), chosen on the validation split of the radar training file (FMI and KNMI, never MeteoSwiss)
#: by benchmarks/radar_event_probability.py: the k/8 with the highest mean of CSI at 1 and 5 mm/h, 8 members.
EVENT_PROBABILITY = 0.375  # prediff-radar-tiny with its default sampler
STEPS_EVENT_PROBABILITY = 0.25
SELECTION_RULE = (
    "windows of T_in + T_out frames every window_stride frames, never spanning a missing file; crops of the tile "
    "every crop_stride pixels (whole frames with --whole-domain); kept: no NaN (crops) and a fraction >= "
    "min_wet_fraction of valid pixels >= wet_threshold; ordered by event, start, row, column; n of the N "
    "candidates taken evenly spread, round(i (N - 1) / (n - 1))"
)
#: Columns of the table: (label, score, lead time index or None for the average over lead times).
COLUMNS = (
    ("CRPS", "crps", None),
    ("CRPS last", "crps", -1),
    ("MSE", "mse", None),
    ("MAE", "mae", None),
    ("CSI1", "csi_1", None),
    ("CSI5", "csi_5", None),
    ("POD1", "pod_1", None),
    ("FAR1", "far_1", None),
    ("POD5", "pod_5", None),
    ("FAR5", "far_5", None),
    ("FSS5@16km", None, None),  # the FSS key depends on the pixel size
    ("spread/skill", "spread_skill_ratio", None),
)
#: Columns of the event forecasts' table.
EVENT_COLUMNS = (
    ("CSI1", "event_csi_1"),
    ("CSI5", "event_csi_5"),
    ("POD1", "event_pod_1"),
    ("FAR1", "event_far_1"),
    ("POD5", "event_pod_5"),
    ("FAR5", "event_far_5"),
    ("BIAS1", "event_bias_1"),
    ("BIAS5", "event_bias_5"),
)
#: Scores given bootstrap intervals: (label, score, lead time index or None).
INTERVALS = (
    ("CRPS", "crps", None),
    ("CRPS last", "crps", -1),
    ("CSI1", "csi_1", None),
    ("CSI5", "csi_5", None),
    ("event CSI1", "event_csi_1", None),
    ("event CSI5", "event_csi_5", None),
)
#: CSI scores given paired intervals of their difference to the extrapolation's: (label, score).
CSI_DIFFERENCES = (("CSI1", "csi_1"), ("CSI5", "csi_5"), ("event CSI1", "event_csi_1"), ("event CSI5", "event_csi_5"))


# ---------------------------------------------------------------------------------------------- units


def rain_to_levels(rate: np.ndarray) -> np.ndarray:
    """Rain rate (mm/h) -> the storms pipeline's 0-255 levels: Marshall-Palmer dBZ, 0-70 dBZ to 0-255, clipped.
    0 mm/h (and anything below 0 dBZ, 0.036 mm/h) is level 0; NaN stays NaN."""
    a, b = MARSHALL_PALMER
    lo, hi = DBZ_RANGE
    rate = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore"):
        dbz = 10.0 * np.log10(a * np.power(np.maximum(rate, 0.0), b))
    return ((np.clip(dbz, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.float32)


def levels_to_rain(levels: np.ndarray) -> np.ndarray:
    """The inverse of [`rain_to_levels`]: 0-255 levels -> rain rate (mm/h); level 0 or less is 0 mm/h, NaN stays."""
    a, b = MARSHALL_PALMER
    lo, hi = DBZ_RANGE
    levels = np.asarray(levels, dtype=np.float64)
    dbz = lo + levels * ((hi - lo) / 255.0)
    rate = np.power(np.power(10.0, dbz / 10.0) / a, 1.0 / b)
    return np.where(levels <= 0.0, 0.0, rate).astype(np.float32)  # NaN <= 0 is False: NaN stays


# ---------------------------------------------------------------------------------------------- data


def evenly_spread(total: int, count: int) -> list[int]:
    """`count` (at most `total`) indices of `0..total-1`, evenly spread, first and last included."""
    count = min(count, total)
    if count == 1:
        return [0]
    return sorted({int(round(i * (total - 1) / (count - 1))) for i in range(count)})


def radar_dataset(
    source: RadarSource,
    events: Sequence[tuple[Any, Any]],
    window: int,
    tile: int,
    pixel_size_km: float,
    interval_minutes: int,
    window_stride: int,
    stride: int,
    min_wet_fraction: float,
    whole_domain: bool,
) -> RadarArchiveDataset:
    """The candidates of the selection rule (see the module's docstring)."""
    return RadarArchiveDataset(
        source,
        list(events),
        window,
        pixel_size_km=pixel_size_km,
        interval_minutes=interval_minutes,
        crop=None if whole_domain else tile,
        stride=None if whole_domain else stride,
        window_stride=window_stride,
        min_wet_fraction=min_wet_fraction,
        wet_threshold=WET_THRESHOLD,
        nan_policy="keep" if whole_domain else "drop",
    )


def describe_sequence(dataset: RadarArchiveDataset, index: int) -> dict[str, Any]:
    """Where item `index` lies: its event, first valid time and crop offset (pixels of the block-averaged grid)."""
    item = dataset.sequence(index)
    row, col = (int(v) for v in item["crop_offset"])
    start = dataset.valid_times(index)[0]
    return {"candidate": index, "event": int(item["event"]), "start": start, "row": row, "col": col}


# ---------------------------------------------------------------------------------------------- forecasters


def radar_forecaster(
    pipe: PreDiffPipeline,
    members: int,
    seed: int,
    steps: int | None,
    to_pipe: Callable[[np.ndarray], np.ndarray] | None = None,
    back: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Forecaster:
    """A PreDiff pipeline on rain rate: `to_pipe` maps mm/h to its units (default: clipped to its physical range,
    NaN kept), `back` its forecast to mm/h. Noise per (sequence, member); frames larger than the pipeline's tile
    (whole domains) are forecast by tiling, one sequence a call, with one generator seeded from
    `(seed, sequence)`."""
    lo, hi = pipe.physical_range
    to_pipe = to_pipe or (lambda rate: np.clip(rate, lo, hi))
    back = back or (lambda values: values)

    def forecast(context: np.ndarray, target: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        T_out = target.shape[1]  # a pipeline reaching further is cut to the benchmark's horizon
        inputs = to_pipe(context).astype(np.float32)
        if inputs.shape[2:4] == pipe.context_shape[1:3]:
            generators = member_generators(seed, indices, members)
            frames = pipe(inputs, num_inference_steps=steps, num_ensemble_members=members, generator=generators)
            return back(frames.frames[:, :, :T_out])
        rows = []
        for row, index in enumerate(indices):
            generator = member_generators(seed, [index], 1)[0]
            one = inputs[row : row + 1]
            frames = pipe(one, num_inference_steps=steps, num_ensemble_members=members, generator=generator)
            rows.append(back(frames.frames[:, :, :T_out]))
        return np.concatenate(rows)

    return forecast


def check_storms_pipeline(storms: PreDiffPipeline, context_shape: tuple[int, ...], T_out: int, frame: int) -> None:
    """The storms pipeline must take the same context length and reach the same horizon, on tiles the frames fit."""
    T_in, tile = storms.context_shape[0], storms.context_shape[1]
    if T_in != context_shape[0] or storms.forecast_shape[0] < T_out or tile > frame:
        raise ValueError(
            f"the storms pipeline takes {T_in} context frames of {tile}x{tile} and forecasts "
            f"{storms.forecast_shape[0]}; the benchmark needs {context_shape[0]} frames of up to {frame}x{frame} "
            f"and {T_out} lead times (leave it out with --storms-pipeline none)"
        )


def dry_filled(forecast: Forecaster) -> Forecaster:
    """`forecast` on a context whose NaN (outside the radar domain) is 0 mm/h, as pysteps' examples fill it."""
    return lambda context, target, indices: forecast(np.nan_to_num(context, nan=0.0), target, indices)


# ---------------------------------------------------------------------------------------------- scoring


def score_sequences(
    dataset: RadarArchiveDataset,
    selected: Sequence[int],
    forecasters: dict[str, Forecaster],
    context_length: int,
    fss_scale: int,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    event_probabilities: Mapping[str, float] | None = None,
) -> tuple[dict[str, SequenceScores], dict[str, float]]:
    """Forecast the selected items of `dataset` with every forecaster and keep their scores per sequence.

    Sequence ids are positions in `selected` (0, 1, ...), which seed the noise. Pixels count where the target
    and every context frame are inside the radar domain (not NaN). A forecaster named in `event_probabilities`
    also gets the scores of its event forecasts at that exceedance probability (`event_csi_1`, ...).

    Returns:
        name -> [`SequenceScores`] (mm/h), and name -> wall seconds in all.
    """
    from tqdm.auto import tqdm

    seconds: dict[str, float] = {}
    runs = {name: timed(fn, seconds, name) for name, fn in forecasters.items()}
    event_probabilities = event_probabilities or {}
    scores = {
        name: SequenceScores(
            THRESHOLDS, (FSS_THRESHOLD,), (fss_scale,), "median", WET_THRESHOLD, seed, event_probabilities.get(name)
        )
        for name in forecasters
    }
    for first in tqdm(range(0, len(selected), batch_size), desc="sequences", disable=not progress):
        ids = list(range(first, min(first + batch_size, len(selected))))
        frames = np.stack([dataset.sequence(selected[i])["frames"] for i in ids])
        context, target = frames[:, :context_length], frames[:, context_length:]
        mask = ~np.isnan(target) & ~np.isnan(context).any(axis=1, keepdims=True)
        for name, run in runs.items():
            forecast = np.asarray(run(context, target, ids), dtype=np.float32)
            scores[name].update(forecast, target, mask=mask, indices=ids)
    return scores, seconds


def summarize(
    scores: dict[str, SequenceScores],
    seconds: dict[str, float],
    num_draws: int = 1000,
    seed: int = 0,
    reference: str = STEPS_NAME,
    csi_reference: str = EXTRAPOLATION_NAME,
) -> dict[str, Any]:
    """Scores, per-lead scores, bootstrap 95% intervals and time per sequence of every forecaster, and the paired
    intervals of its CRPS minus the reference's (STEPS) and of its CSI minus the `csi_reference`'s (pysteps
    extrapolation; a deterministic forecast's event CSI is its CSI), from the same resamplings of the sequences."""
    count = next(iter(scores.values())).num_sequences
    weights = bootstrap_weights(count, num_draws, seed)
    draws = {name: (s.compute(weights), s.compute(weights, per_lead_time=True)) for name, s in scores.items()}

    def drawn(name: str, key: str, lead: int | None) -> np.ndarray:
        averaged, per_lead = draws[name]
        return averaged[key] if lead is None else per_lead[key][:, lead]

    summary: dict[str, Any] = {}
    for name, s in scores.items():
        total = s.compute()
        entry = {
            "members": s.members,
            "seconds_per_sequence": seconds.get(name, 0.0) / count,
            "scores": {k: v for k, v in total.items() if k != "rank_histogram"},
            "per_lead_time": {k: v for k, v in s.compute(per_lead_time=True).items() if k != "rank_histogram"},
            # Scores a forecaster lacks (event scores without an event probability) get no interval.
            "intervals": {
                label: percentile_interval(drawn(name, key, lead)) for label, key, lead in INTERVALS if key in total
            },
            "rank_histogram": total.get("rank_histogram"),
        }
        if reference in scores and name != reference:
            entry["crps_minus_reference"] = {
                "reference": reference,
                **{
                    label: percentile_interval(drawn(name, "crps", lead) - drawn(reference, "crps", lead))
                    for label, lead in (("CRPS", None), ("CRPS last", -1))
                },
            }
        if csi_reference in scores and name != csi_reference:
            entry["csi_minus_extrapolation"] = {
                label: percentile_interval(drawn(name, key, None) - drawn(csi_reference, key, None))
                for label, key in CSI_DIFFERENCES
                if key in total and key in draws[csi_reference][0]
            }
        summary[name] = entry
    return summary


# ---------------------------------------------------------------------------------------------- output


def _cell(value: Any, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def score_table(summary: dict[str, Any], fss_key: str) -> str:
    """The Markdown table of every forecaster's scores and time per sequence."""
    labels = [label for label, _, _ in COLUMNS]
    lines = ["| forecast | " + " | ".join(labels) + " | s/seq |", "|---" * (len(labels) + 2) + "|"]
    for name, entry in summary.items():
        cells = []
        for _, key, lead in COLUMNS:
            key = key or fss_key
            value = entry["scores"].get(key) if lead is None else entry["per_lead_time"].get(key, [None])[lead]
            cells.append(_cell(value))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {entry['seconds_per_sequence']:.2f} |")
    return "\n".join(lines)


def interval_table(summary: dict[str, Any]) -> str:
    """The bootstrap 95% intervals, and those of the CRPS difference to STEPS (negative: better than STEPS)."""
    labels = [label for label, _, _ in INTERVALS]
    paired = any("crps_minus_reference" in entry for entry in summary.values())
    extra = ["CRPS - STEPS", "CRPS last - STEPS"] if paired else []
    lines = ["| forecast | " + " | ".join(labels + extra) + " |", "|---" * (len(labels) + len(extra) + 1) + "|"]
    for name, entry in summary.items():
        intervals = [entry["intervals"].get(label, (None, None)) for label in labels]
        cells = [f"{_cell(lo)} - {_cell(hi)}" for lo, hi in intervals]
        if paired:
            difference = entry.get("crps_minus_reference")
            for label in ("CRPS", "CRPS last"):
                cells.append(f"{difference[label][0]:+.3g} - {difference[label][1]:+.3g}" if difference else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csi_difference_table(summary: dict[str, Any]) -> str:
    """The paired 95% intervals of each forecaster's CSI minus the extrapolation's (positive: better)."""
    labels = [label for label, _ in CSI_DIFFERENCES]
    lines = ["| forecast | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, entry in summary.items():
        difference = entry.get("csi_minus_extrapolation")
        if difference is not None:
            cells = [
                f"{difference[label][0]:+.3g} - {difference[label][1]:+.3g}" if label in difference else "-"
                for label in labels
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def event_table(summary: dict[str, Any], probabilities: dict[str, float]) -> str:
    """The event forecasts' scores: each ensemble forecasts an event where at least a fraction p of its members
    reach the threshold; a deterministic forecast's events are its own."""
    labels = [label for label, _ in EVENT_COLUMNS]
    lines = ["| forecast | p | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for name, entry in summary.items():
        if name not in probabilities:
            continue
        p = f"{probabilities[name]:g}" if entry["members"] > 1 else "-"
        cells = [_cell(entry["scores"].get(key)) for _, key in EVENT_COLUMNS]
        lines.append(f"| {name} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rank_lines(summary: dict[str, Any]) -> str:
    """The rank histograms (frequencies of the observation's rank among the members), one line each."""
    lines = []
    for name, entry in summary.items():
        histogram = entry["rank_histogram"]
        if histogram is not None:
            uniform = 1.0 / len(histogram)
            lines.append(f"- {name}: " + " ".join(f"{v:.3f}" for v in histogram) + f" (uniform {uniform:.3f})")
    return "\n".join(lines)


def plot_rank_histograms(summary: dict[str, Any], path: Path, title: str) -> Path | None:
    """One line per ensemble forecaster (frequency against rank), the uniform frequency dashed; None without
    any ensemble of at least 2 members."""
    from prediff.visualization._utils import new_figure, save_figure

    ensembles = {name: e["rank_histogram"] for name, e in summary.items() if e["rank_histogram"] is not None}
    if not ensembles:
        return None
    fig = new_figure(6.0, 3.6)
    axes = fig.add_subplot()
    for name, histogram in ensembles.items():
        axes.plot(np.arange(len(histogram)), histogram, marker="o", label=name)
    axes.set_xticks(np.arange(max(len(h) for h in ensembles.values())))
    sizes = sorted({len(h) for h in ensembles.values()})
    for size in sizes:
        axes.axhline(1.0 / size, color="0.3", linestyle="--", linewidth=1, label=f"uniform ({size - 1} members)")
    axes.set_xlabel("rank of the observation among the members")
    axes.set_ylabel("frequency")
    axes.set_title(title, fontsize=9)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)
    return save_figure(fig, path)


def write_json(result: dict[str, Any], path: Path) -> Path:
    """`result` as JSON (NaN as null), written atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_plain(result), indent=2) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """`value` with only JSON types: arrays and tuples as lists, numpy numbers as Python ones, NaN as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.floating, np.integer)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------- the benchmark


def grid_and_clock(
    pipe: PreDiffPipeline, pixel_size_km: float | None, interval_minutes: int | None
) -> tuple[float, int]:
    """The pixel size (km) and frame interval (minutes): the pipeline's recorded ones, else the given ones, else
    2 km and 10 minutes; given ones must agree with what the pipeline records."""
    chosen = []
    for given, recorded, default, what in (
        (pixel_size_km, pipe.pixel_size_km, DEFAULT_PIXEL_SIZE_KM, "pixel_size_km"),
        (interval_minutes, pipe.frame_interval_minutes, DEFAULT_INTERVAL_MINUTES, "frame_interval_minutes"),
    ):
        if given is not None and recorded is not None and not math.isclose(float(given), float(recorded)):
            raise ValueError(f"the pipeline was trained for {what}={recorded:g}, not {given:g}")
        chosen.append(given if given is not None else recorded if recorded is not None else default)
    minutes = float(chosen[1])
    if not minutes.is_integer():
        raise ValueError(f"frame interval must be whole minutes, got {minutes:g}")
    return float(chosen[0]), int(minutes)


def benchmark(
    source: RadarSource,
    events: Sequence[tuple[Any, Any]],
    pipe: PreDiffPipeline,
    storms: PreDiffPipeline | None = None,
    *,
    name: str = "prediff-radar-tiny",
    storms_name: str = "prediff-storms-tiny",
    members: int = 8,
    seed: int = 0,
    num_sequences: int = 24,
    window_stride: int | None = None,
    stride: int | None = None,
    min_wet_fraction: float = 0.05,
    whole_domain: bool = False,
    pixel_size_km: float | None = None,
    interval_minutes: int | None = None,
    batch_size: int = 4,
    num_inference_steps: int | None = None,
    bootstrap: int = 1000,
    out: Path | None = None,
    progress: bool = True,
    event_probability: float = EVENT_PROBABILITY,
    steps_event_probability: float = STEPS_EVENT_PROBABILITY,
) -> dict[str, Any]:
    """Select the sequences, forecast them with every forecaster, score them (see the module's docstring).

    Shapes come from `pipe`: `T_in` context and `T_out` lead frames, crops of its tile. Returns the settings, the
    selection and the summary of [`summarize`]; with `out`, also written there (`bench_radar.json`,
    `rank_histogram.png`).
    """
    for what, value in (("members", members), ("num_sequences", num_sequences), ("batch_size", batch_size)):
        check_positive_int(what, value)
    T_in, tile = pipe.context_shape[0], pipe.context_shape[1]
    T_out = pipe.forecast_shape[0]
    pixel_km, minutes = grid_and_clock(pipe, pixel_size_km, interval_minutes)
    window_stride = T_out if window_stride is None else window_stride
    stride = tile if stride is None else stride
    dataset = radar_dataset(
        source, events, T_in + T_out, tile, pixel_km, minutes, window_stride, stride, min_wet_fraction, whole_domain
    )
    selected = [int(i) for i in np.asarray(evenly_spread(len(dataset), num_sequences))]
    frame = min(dataset.height, dataset.width)
    steps = num_inference_steps or pipe.default_num_inference_steps
    pipe.set_progress_bar_config(disable=True)

    forecasters: dict[str, Forecaster] = {name: radar_forecaster(pipe, members, seed, steps)}
    if storms is not None:
        check_storms_pipeline(storms, pipe.context_shape, T_out, frame)
        storms.set_progress_bar_config(disable=True)
        forecasters[f"{storms_name} zero-shot"] = radar_forecaster(
            storms, members, seed, num_inference_steps, rain_to_levels, levels_to_rain
        )
    baselines = baseline_forecasters(
        T_out,
        members,
        seed,
        frame,
        value_range=None,
        pysteps_kwargs={"motion_db_threshold": WET_THRESHOLD},
        steps_kwargs={"wet_threshold": WET_THRESHOLD, "km_per_pixel": pixel_km, "timestep_minutes": minutes},
    )
    # STEPS second, next to the pipelines, then the deterministic baselines.
    for baseline in (STEPS_NAME, EXTRAPOLATION_NAME, "persistence"):
        if baseline in baselines:
            forecasters[baseline] = dry_filled(baselines[baseline])

    # Any p gives a deterministic forecast's own events; the storms pipeline's are those of half its members.
    probabilities = {forecaster: 0.5 for forecaster in forecasters}
    probabilities.update({name: event_probability, STEPS_NAME: steps_event_probability})
    fss_scale = max(1, round(FSS_KM / pixel_km))
    scores, seconds = score_sequences(
        dataset, selected, forecasters, T_in, fss_scale, batch_size, seed, progress, probabilities
    )
    summary = summarize(scores, seconds, bootstrap, seed)
    result = {
        "benchmark": "bench_radar",
        "settings": {
            "source": source.name,
            "events": [[str(a), str(b)] for a, b in events],
            "pipeline": name,
            "pipeline_sampler": f"{sampler_label(pipe)}, {steps} steps",
            "storms_pipeline": storms_name if storms is not None else None,
            "storms_mapping": "Marshall-Palmer Z = 200 R^1.6, 0-70 dBZ linearly to 0-255; level 0 is 0 mm/h",
            "members": members,
            "seed": seed,
            "context_frames": T_in,
            "lead_times": T_out,
            "lead_time_minutes": [minutes * (t + 1) for t in range(T_out)],
            "pixel_size_km": pixel_km,
            "frame_interval_minutes": minutes,
            "whole_domain": whole_domain,
            "frame_size": [dataset.height, dataset.width],
            "units": "mm/h",
            "thresholds_mm_h": list(THRESHOLDS),
            "point_forecast": "ensemble median (CSI, POD, FAR, FSS); ensemble mean (MSE, MAE)",
            "event_probabilities": {k: v for k, v in probabilities.items() if k in forecasters},
            "fss": {"threshold_mm_h": FSS_THRESHOLD, "scale_pixels": fss_scale, "scale_km": fss_scale * pixel_km},
            "rank_histogram_x_min_mm_h": WET_THRESHOLD,
            "bootstrap_draws": bootstrap,
        },
        "selection": {
            "rule": SELECTION_RULE,
            "window_stride_frames": window_stride,
            "crop_stride_pixels": None if whole_domain else stride,
            "min_wet_fraction": min_wet_fraction,
            "wet_threshold_mm_h": WET_THRESHOLD,
            "counts": dict(dataset.counts),
            "candidates": len(dataset),
            "sequences": [describe_sequence(dataset, i) for i in selected],
        },
        "forecasters": summary,
        "fss_key": f"fss_{FSS_THRESHOLD:g}_scale{fss_scale}",
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(result, out / "bench_radar.json")
        title = f"{source.name}, {len(selected)} sequences, +{minutes}..+{minutes * T_out} min, wet pixels"
        picture = plot_rank_histograms(summary, out / "rank_histogram.png", title)
        result["files"] = [str(out / "bench_radar.json")] + ([str(picture)] if picture else [])
    return result


def report(result: dict[str, Any]) -> str:
    """The Markdown the script prints."""
    settings, selection, summary = result["settings"], result["selection"], result["forecasters"]
    minutes = settings["lead_time_minutes"]
    text = [
        f"## {settings['source']}: {len(selection['sequences'])} of {selection['candidates']} candidate sequences, "
        f"{settings['context_frames']} + {settings['lead_times']} frames of {settings['frame_size'][0]}x"
        f"{settings['frame_size'][1]} at {settings['pixel_size_km']:g} km, leads +{minutes[0]:g}..+{minutes[-1]:g} "
        f"min; mm/h",
        "",
        f"{settings['pipeline']}: {settings['pipeline_sampler']}, {settings['members']} members; CSI, POD, FAR and "
        "FSS of the ensemble median, MSE and MAE of its mean; lower is better but for CSI, POD and FSS.",
        "",
        score_table(summary, result["fss_key"]),
        "",
        f"### Bootstrap 95% intervals ({settings['bootstrap_draws']} resamplings of the sequences)",
        "",
        interval_table(summary),
        "",
        "### Event forecasts: an event where at least a fraction p of the members reach the threshold",
        "",
        "p chosen on the validation split of the training data (benchmarks/radar_event_probability.py); a "
        "deterministic forecast's events are its own.",
        "",
        event_table(summary, settings["event_probabilities"]),
        "",
        "CSI minus the extrapolation's, paired 95% intervals (median and event forecasts; positive: better):",
        "",
        csi_difference_table(summary),
        "",
        "### Rank histograms (pixels where the observation or a member reaches 0.1 mm/h)",
        "",
        rank_lines(summary),
    ]
    steps = summary.get(STEPS_NAME)
    if steps is not None:
        ours = summary[settings["pipeline"]]["seconds_per_sequence"]
        theirs = steps["seconds_per_sequence"]
        text += ["", f"Time per sequence: {settings['pipeline']} {ours:.2f} s, STEPS {theirs:.2f} s."]
    return "\n".join(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the archive folder holding radar/ (pysteps' layout)")
    parser.add_argument("--source", default="mch", help="data source of pysteps' pystepsrc (default: mch)")
    parser.add_argument("--events", type=Path, default=None, help="events file, START END per line (default: mch's 3)")
    parser.add_argument("--pipeline", default="prediff-radar-tiny", help="the radar PreDiff pipeline (name or folder)")
    parser.add_argument("--storms-pipeline", default="prediff-storms-tiny", help='scored zero-shot; "none": left out')
    parser.add_argument("--members", type=int, default=8, help="ensemble members (PreDiff and STEPS)")
    parser.add_argument("--num-sequences", type=int, default=24, help="sequences scored, evenly spread")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise, STEPS and the bootstrap")
    parser.add_argument("--window-stride", type=int, default=None, help="frames between windows (default T_out)")
    parser.add_argument("--stride", type=int, default=None, help="pixels between crops (default: the tile)")
    parser.add_argument("--min-wet-fraction", type=float, default=0.05, help="of pixels >= 0.1 mm/h (0.05)")
    parser.add_argument("--whole-domain", action="store_true", help="forecast whole composites by tiling")
    parser.add_argument("--pixel-size-km", type=float, default=None, help="default: the pipeline's, else 2")
    parser.add_argument("--interval-minutes", type=int, default=None, help="default: the pipeline's, else 10")
    parser.add_argument("--inference-steps", type=int, default=None, help="default: the sampler's usual count")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences forecast together")
    parser.add_argument("--device", default=None, help="of the pipelines (default: cuda when there is one, else cpu)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamplings of the sequences for intervals")
    parser.add_argument(
        "--event-probability",
        type=float,
        default=EVENT_PROBABILITY,
        help=f"exceedance probability of the pipeline's event forecasts (default {EVENT_PROBABILITY:g})",
    )
    parser.add_argument(
        "--steps-event-probability",
        type=float,
        default=STEPS_EVENT_PROBABILITY,
        help=f"exceedance probability of STEPS' event forecasts (default {STEPS_EVENT_PROBABILITY:g})",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-radar"), help="folder of the JSON and picture")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    try:
        if not (args.root / "radar").is_dir():
            raise FileNotFoundError(f"{args.root} holds no radar/ folder (pysteps' example archive layout)")
        source = RadarSource.from_pystepsrc(args.source, root=args.root)
        if args.events is not None:
            events = read_radar_events(args.events)
        elif args.source == "mch":
            events = list(MCH_EVENTS)
        else:
            raise ValueError(f"name the events of source {args.source!r} with --events")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = load_forecast_pipeline(args.pipeline, device=device)
        if not isinstance(pipe, PreDiffPipeline):
            raise ValueError(f"--pipeline {args.pipeline!r} is a {type(pipe).__name__}, not a PreDiffPipeline")
        storms = None if args.storms_pipeline == "none" else load_forecast_pipeline(args.storms_pipeline, device)
        if storms is not None and not isinstance(storms, PreDiffPipeline):
            raise ValueError(f"--storms-pipeline {args.storms_pipeline!r} is not a PreDiffPipeline")
        start = time.perf_counter()
        options = ("members", "seed", "num_sequences", "window_stride", "stride", "min_wet_fraction")
        options += ("whole_domain", "pixel_size_km", "interval_minutes", "batch_size", "bootstrap", "out")
        options += ("event_probability", "steps_event_probability")
        result = benchmark(
            source,
            events,
            pipe,
            storms,
            name=Path(args.pipeline).name,
            storms_name=Path(args.storms_pipeline).name,
            num_inference_steps=args.inference_steps,
            **{option: getattr(args, option) for option in options},
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"bench_radar.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(report(result))
    print(f"\nwrote {', '.join(result['files'])} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
