"""Synthetic storms calibrated to a radar archive, for pretraining a rain-rate pipeline on more storms than the
archive holds.

A few hours of radar hold few storms. The synthetic storm generator makes any number, but with its own
intensities, texture, speeds and life cycles. [`calibrate_storm_generator`] fits them to the sequences of a
radar archive (a sequence file in mm/h, as `prediff data radar` writes) by matching what
[`measure_rain_statistics`] measures on both:

- **motion**: the median speed of the motion field that the pipelines' own [`MotionExtrapolator`] fits to the
  frames (the generator's mean-wind range is scaled);
- **power spectrum**: the slope of the radially averaged power spectrum of the dB fields between 4 and 32 pixels
  (the exponent of the generator's convective texture is shifted, then its log-amplitude scaled);
- **growth and decay**: the Lagrangian correlation, between each later frame and the last earlier frame advected
  to it, over the leads of the sequence: how much of a field survives its motion (cell lifetimes are shortened
  and the texture evolves faster, by one time-scale factor);
- **intensity distribution**: a table from the generator's 256 levels to rain rate by quantile matching of all
  pixels, dry ones included, so the wet fraction and every quantile of the rain rate follow the archive's.

Each of the first three is searched over a small grid, in this order, on `num_samples` generated sequences,
with the intensity table refitted for every candidate. The result, a [`StormCalibration`], is saved as JSON
and generates sequences of rain rate with [`StormCalibration.generate`] (`prediff data generate storms
--calibration FILE`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.checks import check_positive_int
from ..utils.files import atomic_output
from .storm_generator import StormParameters, generate_storm_sequence

__all__ = [
    "RAIN_THRESHOLD",
    "RainStatistics",
    "StormCalibration",
    "calibrate_storm_generator",
    "fit_level_table",
    "measure_rain_statistics",
]

#: Rain rate (mm/h) from which a pixel counts as wet, and the threshold of the dB transform the statistics use.
RAIN_THRESHOLD = 0.1
#: Rain rate (mm/h) from which a pixel counts as heavy rain.
HEAVY_RAIN = 5.0
_DB_TRANSFORM = {"kind": "db", "threshold": RAIN_THRESHOLD, "zerovalue": -15.0}
#: dB range mapped to [0, 1] for the motion fit, as the radar pipelines scale rain rate.
_DB_RANGE = (-15.0, 25.0)
#: Wavelengths (pixels) over which the spectral slope is fitted: above the smallest features, within a 64 tile.
_SPECTRUM_WAVELENGTHS = (4.0, 32.0)
#: Quantiles of the wet rain rate that the statistics report.
_WET_QUANTILES = (0.5, 0.9, 0.99, 0.999)
#: The search grids: texture exponent shifts, texture amplitude factors, then time-scale factors (x faster life
#: cycles and texture).
TEXTURE_BETA_SHIFTS = (0.0, -0.3, -0.6, -0.9, -1.2, -1.5)
TEXTURE_SIGMA_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)
TIME_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
CALIBRATION_FORMAT = "prediff storm calibration 1"


@dataclass(frozen=True)
class RainStatistics:
    """What a set of rain-rate sequences is calibrated on (see [`measure_rain_statistics`]).

    Attributes:
        wet_fraction: fraction of pixels at [`RAIN_THRESHOLD`] mm/h or more.
        heavy_fraction: fraction of pixels at 5 mm/h or more.
        wet_quantiles: the 50, 90, 99 and 99.9% quantiles of the wet pixels' rain rate, mm/h.
        spectral_slope: ``beta`` of the radially averaged power spectrum ``P(k) ~ k ** -beta`` of the dB fields
            between wavelengths of 4 and 32 pixels (larger is smoother).
        median_speed: median over sequences of the mean speed of the fitted motion, pixels per frame.
        lagrangian_correlation: per lead ``1 .. T - T0``, the correlation of the (scaled dB) frame ``T0 - 1 +
            lead`` with frame ``T0 - 1`` advected along the motion of the first ``T0 = T // 2`` frames.
        growth_std: standard deviation over sequences of ``log`` of the mean rain rate of the later half over
            that of the earlier half.
    """

    wet_fraction: float
    heavy_fraction: float
    wet_quantiles: tuple[float, ...]
    spectral_slope: float
    median_speed: float
    lagrangian_correlation: tuple[float, ...]
    growth_std: float

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RainStatistics:
        values = dict(values)
        for name in ("wet_quantiles", "lagrangian_correlation"):
            values[name] = tuple(float(v) for v in values[name])
        return cls(**values)

    def summary(self) -> list[str]:
        """The statistics as table cells, in the order of [`RainStatistics.HEADER`]."""
        return [
            f"{self.wet_fraction:.3f}",
            f"{self.heavy_fraction:.4f}",
            " / ".join(f"{q:.2f}" for q in self.wet_quantiles),
            f"{self.spectral_slope:.2f}",
            f"{self.median_speed:.2f}",
            " / ".join(f"{c:.3f}" for c in self.lagrangian_correlation),
            f"{self.growth_std:.3f}",
        ]

    HEADER = (
        "wet fraction",
        "fraction >= 5 mm/h",
        "wet quantiles 50/90/99/99.9% (mm/h)",
        "spectral slope",
        "median speed (px/frame)",
        "Lagrangian correlation per lead",
        "std log growth",
    )


def _check_rain_rate(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 5 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim != 4:
        raise ValueError(f"rain-rate sequences must be (N, T, H, W) or (N, T, H, W, 1), got shape {frames.shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"rain-rate sequences must be floating point (mm/h), got dtype {frames.dtype}")
    n, length, height, width = frames.shape
    if n < 2 or length < 3 or min(height, width) < 32:
        raise ValueError(
            f"the statistics need at least 2 sequences of 3 frames of 32 x 32 pixels, got shape {frames.shape}"
        )
    if np.isnan(frames).all():
        raise ValueError("the rain-rate sequences hold only NaN")
    if np.nanmin(frames) < 0:
        raise ValueError(f"rain rate must be >= 0 mm/h, got a minimum of {np.nanmin(frames)}")
    return frames


def _spectral_slope(decibels: np.ndarray) -> float:
    """``beta`` of the mean radially averaged power spectrum of (M, H, W) fields (Hann-windowed)."""
    _, height, width = decibels.shape
    anomalies = decibels - decibels.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(height), np.hanning(width))
    power = (np.abs(np.fft.fft2(anomalies * window)) ** 2).mean(axis=0)
    k = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    lowest, highest = 1.0 / _SPECTRUM_WAVELENGTHS[1], 1.0 / _SPECTRUM_WAVELENGTHS[0]
    edges = np.geomspace(lowest, highest, 12)
    inside = (k >= lowest) & (k <= highest)
    bins = np.digitize(k[inside], edges)
    log_k, log_power = [], []
    for b in np.unique(bins):
        chosen = bins == b
        log_k.append(np.log(k[inside][chosen].mean()))
        log_power.append(np.log(power[inside][chosen].mean()))
    return float(-np.polyfit(log_k, log_power, 1)[0])


def measure_rain_statistics(frames: np.ndarray, batch_size: int = 64) -> RainStatistics:
    """The statistics of rain-rate sequences that [`calibrate_storm_generator`] matches.

    Args:
        frames: (N, T, H, W) or (N, T, H, W, 1) rain rate in mm/h, N >= 2, T >= 3, H, W >= 32. NaN (outside a
            radar's domain) is left out of the intensity statistics and counts as dry elsewhere.
        batch_size: sequences per motion fit.
    """
    import torch

    from ..models.extrapolation import MotionExtrapolator
    from ..utils.units import to_transformed, to_unit

    frames = _check_rain_rate(frames)
    rain = frames[~np.isnan(frames)]
    wet = rain[rain >= RAIN_THRESHOLD]
    quantiles = tuple(float(q) for q in np.quantile(wet, _WET_QUANTILES)) if wet.size else (0.0,) * 4
    filled = np.nan_to_num(frames, nan=0.0).astype(np.float32)
    decibels = to_transformed(filled, _DB_TRANSFORM)
    slope = _spectral_slope(decibels.reshape(-1, *decibels.shape[2:]))

    extrapolator = MotionExtrapolator()
    length = frames.shape[1]
    context = length // 2
    scaled = torch.from_numpy(to_unit(decibels, _DB_RANGE).clip(0.0, 1.0)).unsqueeze(-1)
    speeds, advected = [], []
    for start in range(0, len(scaled), batch_size):
        batch = scaled[start : start + batch_size, :context]
        speeds.append(extrapolator.estimate_motion(batch).norm(dim=1).mean(dim=(1, 2)))
        advected.append(extrapolator(batch, length - context)[..., 0])
    moved = torch.cat(advected).numpy()
    observed = scaled[:, context:, ..., 0].numpy()
    correlation = tuple(
        float(np.corrcoef(moved[:, lead].ravel(), observed[:, lead].ravel())[0, 1]) for lead in range(length - context)
    )
    mean_rain = filled.mean(axis=(2, 3))
    growth = np.log((mean_rain[:, context:].mean(1) + 1e-3) / (mean_rain[:, :context].mean(1) + 1e-3))
    return RainStatistics(
        wet_fraction=float((rain >= RAIN_THRESHOLD).mean()),
        heavy_fraction=float((rain >= HEAVY_RAIN).mean()),
        wet_quantiles=quantiles,
        spectral_slope=slope,
        median_speed=float(torch.cat(speeds).median()),
        lagrangian_correlation=correlation,
        growth_std=float(growth.std()),
    )


def fit_level_table(levels: np.ndarray, rain_rate: np.ndarray) -> np.ndarray:
    """The rain rate (mm/h) of each of the 256 generator levels, by quantile matching: level ``v`` gets the
    archive's quantile at the generated levels' mid-rank of ``v``; below [`RAIN_THRESHOLD`] it is dry (0).

    Args:
        levels: generated uint8 levels, any shape.
        rain_rate: the archive's rain rate, any shape, NaN ignored.
    """
    rain = np.sort(np.asarray(rain_rate, dtype=np.float64)[~np.isnan(rain_rate)].ravel())
    if rain.size == 0:
        raise ValueError("the archive's rain rate holds no value that is not NaN")
    counts = np.bincount(np.asarray(levels, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    below = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    mid_rank = (below + 0.5 * counts) / counts.sum()
    table = np.quantile(rain, np.clip(mid_rank, 0.0, 1.0))
    table = np.maximum.accumulate(np.where(table < RAIN_THRESHOLD, 0.0, table))
    return table.astype(np.float32)


@dataclass
class StormCalibration:
    """The storm generator fitted to a radar archive: its parameters and a table from its levels to mm/h.

    Attributes:
        parameters: the generator's [`StormParameters`].
        level_rain_rate: (256,) rain rate in mm/h of each generator level (non-decreasing, 0 where dry).
        pixel_size_km, frame_interval_minutes: the archive's grid and clock, which generated files record.
        source: what the archive was (file and its record).
        statistics: ``"archive"``, ``"default"`` (the uncalibrated generator) and ``"calibrated"``
            [`RainStatistics`].
        search: every candidate tried, ``{"stage", "value", "error"}``, for the record.
    """

    parameters: StormParameters
    level_rain_rate: np.ndarray
    pixel_size_km: float | None = None
    frame_interval_minutes: float | None = None
    source: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, RainStatistics] = field(default_factory=dict)
    search: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        table = np.asarray(self.level_rain_rate, dtype=np.float32)
        if table.shape != (256,) or not np.isfinite(table).all() or (table < 0).any() or (np.diff(table) < 0).any():
            raise ValueError("level_rain_rate must be 256 finite, non-negative, non-decreasing rain rates (mm/h)")
        self.level_rain_rate = table

    def generate(self, seed: int, index: int, seq_len: int, height: int, width: int) -> np.ndarray:
        """Sequence ``index`` of data set ``seed`` in mm/h, float32 (seq_len, height, width, 1)."""
        levels = generate_storm_sequence(seed, index, seq_len, height, width, self.parameters)
        return self.level_rain_rate[levels][..., None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "parameters": asdict(self.parameters),
            "level_rain_rate": [round(float(v), 5) for v in self.level_rain_rate],
            "pixel_size_km": self.pixel_size_km,
            "frame_interval_minutes": self.frame_interval_minutes,
            "source": self.source,
            "statistics": {name: asdict(stats) for name, stats in self.statistics.items()},
            "search": self.search,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the calibration as JSON, atomically."""
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StormCalibration:
        """Read a calibration written by [`StormCalibration.save`]."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"storm calibration {str(path)!r} does not exist")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"storm calibration {str(path)!r} is not JSON: {err}") from err
        if not isinstance(values, dict) or values.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"{str(path)!r} is not a storm calibration ({CALIBRATION_FORMAT!r})")
        try:
            parameters = {
                name: tuple(value) if isinstance(value, list) else value
                for name, value in values["parameters"].items()
            }
            return cls(
                parameters=StormParameters(**parameters),
                level_rain_rate=np.asarray(values["level_rain_rate"], dtype=np.float32),
                pixel_size_km=values.get("pixel_size_km"),
                frame_interval_minutes=values.get("frame_interval_minutes"),
                source=values.get("source", {}),
                statistics={name: RainStatistics.from_dict(s) for name, s in values.get("statistics", {}).items()},
                search=values.get("search", []),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"storm calibration {str(path)!r} is damaged: {type(err).__name__}: {err}") from err


def _scaled(values: tuple[float, float], factor: float) -> tuple[float, float]:
    return (values[0] * factor, values[1] * factor)


def calibrate_storm_generator(
    frames: np.ndarray,
    num_samples: int = 128,
    seed: int = 0,
    beta_shifts: Sequence[float] = TEXTURE_BETA_SHIFTS,
    sigma_scales: Sequence[float] = TEXTURE_SIGMA_SCALES,
    time_scales: Sequence[float] = TIME_SCALES,
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> StormCalibration:
    """Fit the storm generator's motion, texture, life cycles and intensities to rain-rate sequences.

    Args:
        frames: the archive's sequences, (N, T, H, W) or (N, T, H, W, 1) rain rate in mm/h (see
            [`measure_rain_statistics`]); the generated samples have their length and frame size.
        num_samples: generated sequences per candidate.
        seed: data-set seed of the generated samples (use one that training data does not).
        beta_shifts: candidate shifts of the convective texture's spectral exponent (floored at 1).
        sigma_scales: candidate factors of the convective texture's log-standard deviation.
        time_scales: candidate factors by which life cycles shorten and the texture evolves faster.
        on_candidate: called with each candidate's record (progress reporting).

    Returns:
        A [`StormCalibration`] with the archive's, the default generator's and the calibrated statistics.
    """
    frames = _check_rain_rate(frames)
    num_samples = check_positive_int("num_samples", num_samples)
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    if not beta_shifts or not sigma_scales or not time_scales or min(*sigma_scales, *time_scales) <= 0:
        raise ValueError("beta_shifts, sigma_scales and time_scales must be non-empty, the factors positive")
    _, length, height, width = frames.shape
    archive = measure_rain_statistics(frames)

    def sample(parameters: StormParameters) -> tuple[np.ndarray, RainStatistics]:
        levels = np.stack(
            [generate_storm_sequence(seed, i, length, height, width, parameters) for i in range(num_samples)]
        )
        table = fit_level_table(levels, frames)
        return table, measure_rain_statistics(table[levels])

    search: list[dict[str, Any]] = []

    def record(stage: str, value: float, error: float) -> None:
        entry = {"stage": stage, "value": float(value), "error": float(error)}
        search.append(entry)
        if on_candidate is not None:
            on_candidate(entry)

    default = StormParameters()
    _, default_stats = sample(default)
    # Motion: the generator's speeds scale the fitted ones almost linearly; two rescalings settle it.
    parameters, stats = default, default_stats
    for _ in range(2):
        factor = archive.median_speed / max(stats.median_speed, 1e-3)
        parameters = replace(parameters, speed_range=_scaled(parameters.speed_range, factor))
        _, stats = sample(parameters)
        factor = parameters.speed_range[1] / default.speed_range[1]
        record("speed factor", factor, stats.median_speed - archive.median_speed)

    def best(stage: str, candidates: list[tuple[float, StormParameters]], error: Callable[[RainStatistics], float]):
        scored = []
        for value, candidate in candidates:
            candidate_stats = sample(candidate)[1]
            record(stage, value, error(candidate_stats))
            scored.append((abs(error(candidate_stats)), candidate))
        return min(scored, key=lambda pair: pair[0])[1]

    low, high = parameters.texture_beta_range
    parameters = best(
        "texture beta shift",
        [
            (shift, replace(parameters, texture_beta_range=(max(low + shift, 1.0), max(high + shift, 1.0))))
            for shift in beta_shifts
        ],
        lambda s: s.spectral_slope - archive.spectral_slope,
    )
    parameters = best(
        "texture sigma factor",
        [
            (factor, replace(parameters, texture_sigma_range=_scaled(parameters.texture_sigma_range, factor)))
            for factor in sigma_scales
        ],
        lambda s: s.spectral_slope - archive.spectral_slope,
    )
    parameters = best(
        "time scale",
        [
            (
                scale,
                replace(
                    parameters,
                    life_range=_scaled(parameters.life_range, 1.0 / scale),
                    shield_life_range=_scaled(parameters.shield_life_range, 1.0 / scale),
                    texture_rate_range=_scaled(parameters.texture_rate_range, scale),
                ),
            )
            for scale in time_scales
        ],
        lambda s: float(np.mean(s.lagrangian_correlation) - np.mean(archive.lagrangian_correlation)),
    )
    table, calibrated = sample(parameters)
    return StormCalibration(
        parameters=parameters,
        level_rain_rate=table,
        statistics={"archive": archive, "default": default_stats, "calibrated": calibrated},
        search=search,
    )
