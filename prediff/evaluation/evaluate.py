"""The evaluation loop: forecast every sequence of a data set with a pipeline and its reference forecasts, and
accumulate every score per lead time.

For each batch of sequences the context (the first `T_in` frames) is forecast

- by the pipeline: a PreDiff ensemble of `M` members (member `m` of sequence `i` draws its noise from
  `SeedSequence([seed, i, m])`, so results do not depend on the batch size), or one Earthformer forecast;
- by the same PreDiff pipeline steered by the anticipated-intensity knowledge control (same noise, so the
  control is the only difference), when a control is given;
- by the baselines (persistence; optical-flow extrapolation and STEPS through pysteps);

and scored against the observed future (the next `T_out` frames) in the data's physical units:
POD/SUCR/CSI/BIAS at every threshold and pooling size and CSI-M; MSE, RMSE, MAE, SSIM; FSS; for ensembles
CRPS (also pooled), spread-skill and the rank histogram; and, when anticipated intensities are known, the
error of every forecast's mean intensity against them (`kc_*`). Deterministic scores of an ensemble are those
of its mean.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..knowledge.defaults import DEFAULT_CONTROL_METHOD, DEFAULT_CONTROL_SCALE
from ..metrics import (
    SEVIR_POOL_SIZES,
    SEVIR_THRESHOLDS,
    CategoricalScore,
    ContinuousScore,
    EnsembleCRPS,
    FractionsSkillScore,
    KnowledgeControlError,
    RankHistogram,
    SpreadSkill,
    exceedance_point,
)
from ..metrics.defaults import default_thresholds
from ..utils.checks import check_event_probability, check_positive_int, check_seed, to_numpy
from ..utils.units import to_physical
from .report import EvaluationReport, ForecasterScores

__all__ = ["IntensityControlSpec", "ScoreSet", "evaluate_forecasts", "evaluate_pipeline", "load_sequences"]

DEFAULT_FSS_SCALES = (1, 4, 16)
#: Baselines computed by pysteps, an optional extra.
PYSTEPS_BASELINES = ("extrapolation", "steps")
#: SSIM's Gaussian window needs frames at least this large.
_SSIM_MIN_SIZE = 11


@dataclass
class IntensityControlSpec:
    """How [`evaluate_pipeline`] steers its controlled forecasts with the anticipated-intensity control.

    Args:
        target (`float`, *optional*): anticipated mean intensity of every forecast, physical units; when None,
            each sequence's observed future mean intensity times `observed_factor` (what a perfect intensity
            outlook would give; the official PreDiff demonstration uses a factor of 2).
        scale (`float`, defaults to 1): guidance strength (see [`~prediff.knowledge.KnowledgeControl`]).
        method (`str`, defaults to "analytic"): "analytic" or "learned" (see
            [`~prediff.knowledge.AnticipatedIntensityControl`]).
        observed_factor (`float`, defaults to 1): factor on the observed intensity when `target` is None.
        description (`str`, *optional*): how the target was chosen, for the report.
    """

    target: float | None = None
    scale: float = DEFAULT_CONTROL_SCALE
    method: str = DEFAULT_CONTROL_METHOD
    observed_factor: float = 1.0
    description: str | None = None

    def anticipated(self, target_frames: np.ndarray) -> np.ndarray:
        """The anticipated mean intensity `(B,)` for observed futures `(B, T_out, H, W, C)`."""
        if self.target is not None:
            return np.full(target_frames.shape[0], float(self.target))
        return self.observed_factor * target_frames.mean(axis=(1, 2, 3, 4), dtype=np.float64)

    def describe(self) -> str:
        what = (
            f"{self.target:.4g}"
            if self.target is not None
            else "the observed future mean intensity of each sequence"
            + (f" x {self.observed_factor:g}" if self.observed_factor != 1 else "")
        )
        return self.description or what

    def build(self, pipeline: Any, anticipated: np.ndarray) -> Any:
        from ..knowledge import AnticipatedIntensityControl

        return AnticipatedIntensityControl(target=anticipated.tolist(), scale=self.scale, method=self.method)


class ScoreSet:
    """Every accumulating score of one forecaster.

    Args:
        ensemble: the forecasts are ensembles `(B, M, T, H, W, C)` (else `(B, T, H, W, C)`).
        frame_size: `(H, W)`, to leave out the pooling sizes / SSIM that do not fit.
        thresholds, pool_sizes, fss_scales: as in [`evaluate_pipeline`].
        rank_x_min: values below it count as equal in the rank histogram (see [`RankHistogram`]).
        event_probability: an ensemble's categorical scores and FSS are those of its events at this exceedance
            probability (see [`exceedance_point`]) instead of its mean's.
    """

    def __init__(
        self,
        ensemble: bool,
        frame_size: tuple[int, int],
        thresholds: Sequence[float] = SEVIR_THRESHOLDS,
        pool_sizes: Sequence[int] = SEVIR_POOL_SIZES,
        fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
        rank_x_min: float | None = None,
        event_probability: float | None = None,
    ) -> None:
        side = min(frame_size)
        pools = [k for k in pool_sizes if k <= side] or [1]
        self.ensemble = ensemble
        self.event_probability = check_event_probability(event_probability)
        # Scored on the events' field (the mean, or the ensemble at `event_probability`) / on the mean.
        self.categorical = [CategoricalScore(thresholds, pools), FractionsSkillScore(thresholds, fss_scales)]
        self.continuous = [
            ContinuousScore(("mse", "rmse", "mae", "ssim") if side >= _SSIM_MIN_SIZE else ("mse", "rmse", "mae"))
        ]
        self.crps = EnsembleCRPS(pools)
        self.spread = SpreadSkill() if ensemble else None
        self.rank = RankHistogram(x_min=rank_x_min) if ensemble else None
        self.intensity = KnowledgeControlError("mean_intensity")
        self.members: int | None = None
        self.num_sequences = 0
        self._has_intensity = False

    def update(
        self,
        forecast: np.ndarray,
        target: np.ndarray,
        anticipated: np.ndarray | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Add a batch: `forecast` `(B, M, T, H, W, C)` (ensemble) or `(B, T, H, W, C)`, `target`
        `(B, T, H, W, C)`, `anticipated` `(B,)` mean intensities or None, `indices` the `B` sequence ids
        (default `0..B-1`), which seed the rank histogram's tie-breaking per sequence."""
        members = forecast if self.ensemble else forecast[:, None]
        self.members = members.shape[1]
        self.num_sequences += len(target)
        point = members.mean(axis=1) if self.ensemble else forecast
        for metric in self.continuous:
            metric.update(point, target)
        if self.ensemble and self.event_probability is not None:
            point = exceedance_point(members, self.event_probability).numpy()
        for metric in self.categorical:
            metric.update(point, target)
        self.crps.update(members, target)
        if self.spread is not None and self.members >= 2:
            self.spread.update(members, target)
        if self.rank is not None:
            # Ties (dry pixels) are broken per sequence, so batching and process splits give the same histogram.
            for row, index in enumerate(range(len(target)) if indices is None else indices):
                state = np.random.SeedSequence([self.rank.seed, int(index)]).generate_state(1, dtype=np.uint32)
                generator = torch.Generator().manual_seed(int(state[0]))
                self.rank.update(members[row : row + 1], target[row : row + 1], generator=generator)
        if anticipated is not None:
            self.intensity.update(members, anticipated)
            self._has_intensity = True

    def merge(self, other: ScoreSet) -> None:
        """Add the sums and counts `other` accumulated (the same forecaster on other sequences, e.g. another
        process's share)."""
        if other.members is None:
            return
        if self.members is not None and other.members != self.members:
            raise ValueError(f"cannot merge scores of {other.members} members into scores of {self.members}")
        self.members = other.members
        self.num_sequences += other.num_sequences
        metrics = self.categorical + self.continuous + [self.crps, self.spread, self.rank, self.intensity]
        others = other.categorical + other.continuous + [other.crps, other.spread, other.rank, other.intensity]
        for metric, theirs in zip(metrics, others):
            if metric is not None:
                metric.merge(theirs)
        self._has_intensity |= other._has_intensity

    def result(self, knowledge_control: str | None = None) -> ForecasterScores:
        """The accumulated scores as [`ForecasterScores`]."""
        scores: dict[str, float] = {}
        per_lead: dict[str, list[float]] = {}
        metrics = self.categorical + self.continuous + [self.crps]
        if self.spread is not None and self.spread._num_frames is not None:
            metrics.append(self.spread)
        for metric in metrics:
            scores.update(metric.compute())
            per_lead.update({k: np.asarray(v).tolist() for k, v in metric.compute(per_lead_time=True).items()})
        if self._has_intensity:
            scores.update(self.intensity.compute())
        rank = self.rank.compute()["rank_histogram"].tolist() if self.rank is not None else None
        return ForecasterScores(
            kind="ensemble" if self.ensemble else "deterministic",
            members=int(self.members or 1),
            scores={k: float(v) for k, v in scores.items()},
            per_lead_time=per_lead,
            rank_histogram=rank,
            knowledge_control=knowledge_control,
        )


def load_sequences(
    dataset: Dataset,
    indices: Sequence[int],
    num_frames: int,
    value_range: tuple[float, float],
    data_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Items `indices` of a data set (dicts with "frames" `(T, H, W, C)` in [0, 1]) as physical values.

    Args:
        num_frames: frames needed (`T_in + T_out`); longer items are cut to their first `num_frames`.
        value_range: the pipeline's physical range, which the values must lie in.
        data_range: the data set's range (its items' 0 and 1); default: the data set's `value_range`
            attribute, else `value_range`. A data set's `value_transform` attribute (rain rate in dB) is undone
            after it.

    Returns:
        `(len(indices), num_frames, H, W, C)` float32.
    """
    from ..pipelines.context_io import check_context_values

    lo, hi = data_range or getattr(dataset, "value_range", None) or value_range
    frames = []
    for i in indices:
        item = dataset[int(i)]
        x = item["frames"] if isinstance(item, dict) else item
        x = to_numpy(x)
        if x.ndim != 4 or x.shape[0] < num_frames:
            raise ValueError(
                f"item {i} of the data set has frames of shape {tuple(x.shape)}; the pipeline needs "
                f"(T, H, W, C) with T >= {num_frames} (context + forecast frames)"
            )
        frames.append(x[:num_frames])
    transform = getattr(dataset, "value_transform", None)
    batch = to_physical(np.stack(frames).astype(np.float32), (lo, hi), transform)
    return check_context_values(batch, value_range, name=f"sequences {indices[0]}-{indices[-1]} of the data set")


def _baseline_forecast(name: str, fn: Callable[..., Any], context: np.ndarray, num_frames: int, **kwargs: Any):
    try:
        return np.asarray(fn(context, num_frames, **kwargs), dtype=np.float32)
    except ImportError:
        raise
    except ValueError as error:
        raise ValueError(f"baseline {name!r}: {error}") from None


def evaluate_forecasts(
    forecasters: dict[str, Callable[[np.ndarray, np.ndarray, Sequence[int]], np.ndarray]],
    dataset: Dataset,
    context_length: int,
    forecast_length: int,
    value_range: tuple[float, float],
    num_sequences: int | None = None,
    batch_size: int = 4,
    thresholds: Sequence[float] = SEVIR_THRESHOLDS,
    pool_sizes: Sequence[int] = SEVIR_POOL_SIZES,
    fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
    anticipated: Callable[[np.ndarray], np.ndarray] | None = None,
    descriptions: dict[str, str] | None = None,
    rank_x_min: float | None = None,
    progress: bool = True,
    event_probability: float | None = None,
) -> tuple[dict[str, ForecasterScores], int]:
    """Score any forecast functions on a data set (the loop behind [`evaluate_pipeline`]).

    Args:
        forecasters: name -> `f(context, target, indices)`, context `(B, T_in, H, W, C)` physical units,
            returning `(B, M, T_out, H, W, C)` (an ensemble) or `(B, T_out, H, W, C)`; `indices` are the `B`
            sequence ids, so a forecaster can seed its noise per sequence.
        anticipated: maps observed futures `(B, T_out, H, W, C)` to anticipated mean intensities `(B,)`; when
            given every forecaster gets the `kc_*` intensity errors.
        descriptions: forecaster name -> knowledge-control description for the report.
        event_probability: the ensembles' categorical scores and FSS score their events at this exceedance
            probability (an event where at least this fraction of the members reach the threshold) instead of
            their mean's.

    Under `accelerate launch` every process forecasts its own contiguous share of the sequences; the sums and
    counts of every score are then gathered and added, so every process returns the scores of all sequences
    (those of one process, to floating-point summation order).

    Returns:
        name -> [`ForecasterScores`], and the number of sequences scored.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from ..pipelines.processes import launched_processes

    batch_size = check_positive_int("batch_size", batch_size)
    total = len(dataset) if num_sequences is None else check_positive_int("num_sequences", num_sequences)
    if total > len(dataset):
        raise ValueError(f"num_sequences={total} exceeds the data set's {len(dataset)} sequences")
    if total == 0:
        raise ValueError("the data set is empty")
    processes = launched_processes()
    scores: dict[str, ScoreSet] = {}
    with processes.split_between_processes(list(range(total))) as share:
        bar = tqdm(total=len(share), desc="evaluate", unit="seq", disable=not (progress and processes.is_main_process))
        try:
            for start in range(0, len(share), batch_size):
                indices = share[start : start + batch_size]
                frames = load_sequences(dataset, indices, context_length + forecast_length, value_range)
                context, target = frames[:, :context_length], frames[:, context_length:]
                expected = anticipated(target) if anticipated is not None else None
                for name, forecast_fn in forecasters.items():
                    forecast = np.asarray(forecast_fn(context, target, indices), dtype=np.float32)
                    ensemble = forecast.ndim == 6
                    if forecast.shape[:1] + forecast.shape[1 + ensemble :] != target.shape:
                        raise ValueError(
                            f"forecaster {name!r} returned shape {tuple(forecast.shape)} for targets of shape "
                            f"{tuple(target.shape)}"
                        )
                    if name not in scores:
                        scores[name] = ScoreSet(
                            ensemble, target.shape[2:4], thresholds, pool_sizes, fss_scales, rank_x_min,
                            event_probability,
                        )  # fmt: skip
                    scores[name].update(forecast, target, expected, indices)
                bar.update(len(indices))
        finally:
            bar.close()
    # Every process adds up the sums and counts of all processes, in process order.
    merged: dict[str, ScoreSet] = {}
    for process_scores in gather_object([scores]) if processes.num_processes > 1 else [scores]:
        for name, score_set in process_scores.items():
            if name in merged:
                merged[name].merge(score_set)
            else:
                merged[name] = score_set
    scored = {score_set.num_sequences for score_set in merged.values()}
    if scored and scored != {total}:
        raise RuntimeError(f"{total} sequences were to be scored across the processes, but {sorted(scored)} were")
    descriptions = descriptions or {}
    return {name: merged[name].result(descriptions.get(name)) for name in forecasters if name in merged}, total


def evaluate_pipeline(
    pipeline: Any,
    dataset: Dataset,
    num_sequences: int | None = None,
    batch_size: int = 4,
    num_ensemble_members: int = 4,
    num_inference_steps: int | None = None,
    seed: int = 0,
    knowledge_control: IntensityControlSpec | None = None,
    baselines: Sequence[str] = ("persistence",),
    baseline_kwargs: dict[str, dict[str, Any]] | None = None,
    thresholds: Sequence[float] | None = None,
    pool_sizes: Sequence[int] = SEVIR_POOL_SIZES,
    fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
    interval_minutes: float | None = None,
    rank_x_min: float | None = None,
    pipeline_name: str | None = None,
    dataset_name: str | None = None,
    progress: bool = True,
    event_probability: float | None = None,
) -> EvaluationReport:
    """Evaluate a PreDiff or Earthformer pipeline on a data set, next to baselines, with and without knowledge
    control.

    Args:
        pipeline: a [`PreDiffPipeline`], an [`EarthformerPipeline`] or a bare [`EarthformerModel`] (wrapped
            with value range 0-255).
        dataset: items are dicts with "frames" `(T, H, W, C)` in [0, 1] (every prediff data set); `T >= T_in +
            T_out` of the pipeline (the first frames are used), `(H, W, C)` the pipeline's. Values are mapped
            back to physical units with the data set's `value_range` and `value_transform` attributes (else the
            pipeline's range) and must lie inside the pipeline's `physical_range`.
        num_sequences: score the first `num_sequences` items (default: all).
        batch_size: sequences forecast together.
        num_ensemble_members: PreDiff ensemble size `M` (also the STEPS ensemble size).
        num_inference_steps: denoising steps (default: the scheduler's usual count).
        seed: seed of the forecast noise (and of STEPS); the noise is drawn per sequence, so the scores do not
            depend on the batch size or, under `accelerate launch`, on the number of processes.
        knowledge_control: also forecast with the anticipated-intensity control (PreDiff only), as the
            forecaster "prediff+intensity"; every forecaster then gets the intensity errors `kc_mae`,
            `kc_rmse`, `kc_bias` against the anticipated values.
        baselines: names for [`prediff.baselines.get_baseline`]: "persistence", "extrapolation", "steps".
        baseline_kwargs: name -> extra keyword arguments of that baseline.
        thresholds, pool_sizes, fss_scales: categorical thresholds (physical units; by default the SEVIR VIL
            thresholds, or 0.1, 1, 5 and 10 mm/h for a pipeline with a value transform),
            max-pooling sizes and FSS neighbourhoods; sizes larger than the frames are left out.
        interval_minutes: minutes between frames, for lead-time labels.
        rank_x_min: values below it are ties in the rank histogram.
        pipeline_name, dataset_name: labels for the report.
        progress: show a progress bar.
        event_probability: the ensembles' CSI, POD, SUCR, BIAS and FSS score their event forecasts at this
            exceedance probability (an event where at least this fraction of the members reach the threshold, e.g.
            0.375) instead of their mean's events; MSE, MAE and SSIM stay those of the mean.

    Returns:
        An [`EvaluationReport`]: `.to_table()`, `.to_markdown()`, `.to_json()`, `.save(path)`.
    """
    from ..baselines import get_baseline
    from ..pipelines import EarthformerPipeline, PreDiffPipeline
    from ..pipelines.processes import launched_processes, member_generators

    start_time = time.perf_counter()
    if not isinstance(pipeline, (PreDiffPipeline, EarthformerPipeline)):
        config = getattr(pipeline, "config", None)
        if config is not None and "input_shape" in config and "target_shape" in config:
            pipeline = EarthformerPipeline(pipeline.eval())
        else:
            raise ValueError(
                "pipeline must be a PreDiffPipeline, an EarthformerPipeline or an EarthformerModel, got "
                f"{type(pipeline).__name__}"
            )
    is_prediff = isinstance(pipeline, PreDiffPipeline)
    members = check_positive_int("num_ensemble_members", num_ensemble_members)
    event_probability = check_event_probability(event_probability)
    if is_prediff:
        # Before a list of generators per member is built: one context's ensemble must fit at least.
        pipeline.check_forecast_memory(1, members, "num_ensemble_members")
    seed = check_seed(seed)
    if num_inference_steps is not None:
        num_inference_steps = check_positive_int("num_inference_steps", num_inference_steps)
    elif is_prediff:
        num_inference_steps = pipeline.default_num_inference_steps
    if knowledge_control is not None and not is_prediff:
        raise ValueError("knowledge control needs a PreDiff pipeline; an Earthformer forecast is deterministic")
    T_in, H, W, C = pipeline.context_shape
    T_out = pipeline.forecast_shape[0]
    # Physical units (mm/h for a pipeline with a value transform), as the forecasts and the scores are.
    value_range = pipeline.physical_range
    if thresholds is None:
        thresholds = default_thresholds(pipeline.value_transform)
    sample = dataset[0]["frames"] if len(dataset) else None
    if sample is not None and tuple(sample.shape[1:]) != (H, W, C):
        raise ValueError(
            f"the data set's frames are (H, W, C) = {tuple(sample.shape[1:])}, the pipeline needs {(H, W, C)}"
        )
    pipeline.set_progress_bar_config(disable=True)
    main_name = "prediff" if is_prediff else "earthformer"

    def run_pipeline(controlled: bool) -> Callable[[np.ndarray, np.ndarray, Sequence[int]], np.ndarray]:
        def forecast(context: np.ndarray, target: np.ndarray, indices: Sequence[int]) -> np.ndarray:
            if not is_prediff:
                return pipeline(context).frames
            controls = None
            if controlled:
                controls = [knowledge_control.build(pipeline, knowledge_control.anticipated(target))]
            return pipeline(
                context,
                num_inference_steps=num_inference_steps,
                num_ensemble_members=members,
                generator=member_generators(seed, indices, members),
                knowledge_controls=controls,
            ).frames

        return forecast

    forecasters: dict[str, Callable[..., np.ndarray]] = {main_name: run_pipeline(False)}
    descriptions: dict[str, str] = {}
    if knowledge_control is not None:
        name = f"{main_name}+intensity"
        forecasters[name] = run_pipeline(True)
        descriptions[name] = (
            f"anticipated-intensity control towards {knowledge_control.describe()}, scale {knowledge_control.scale:g}"
        )
    baseline_kwargs = dict(baseline_kwargs or {})
    # A rain-rate pipeline (pysteps' dB transform) gives the pysteps baselines its rain threshold, and STEPS the
    # grid and clock the pipeline records.
    transform = pipeline.value_transform or {}
    rain_threshold = transform.get("threshold") if transform.get("kind") == "db" else None
    interval = interval_minutes if interval_minutes is not None else pipeline.frame_interval_minutes
    for baseline in baselines:
        fn = get_baseline(baseline)
        # Before any forecast: without pysteps these baselines would fail only at the first batch.
        if baseline in PYSTEPS_BASELINES and importlib.util.find_spec("pysteps") is None:
            raise ImportError(f'the {baseline!r} baseline needs pysteps: pip install "prediff[pysteps]"')
        kwargs = dict(baseline_kwargs.pop(baseline, {}))
        if baseline in PYSTEPS_BASELINES:
            kwargs.setdefault("value_range", value_range)
            if rain_threshold is not None:
                # As pysteps' examples run them on rain rate: the motion from the dB context.
                kwargs.setdefault("motion_db_threshold", rain_threshold)
        if baseline == "steps":
            if rain_threshold is not None:
                kwargs.setdefault("wet_threshold", rain_threshold)
            for key, recorded in (("km_per_pixel", pipeline.pixel_size_km), ("timestep_minutes", interval)):
                if recorded is not None:
                    kwargs.setdefault(key, float(recorded))
            kwargs.setdefault("num_members", members)
            kwargs.setdefault("show_progress", False)
            # STEPS' cascade needs a few pixels per level: 6 levels on 128 px, fewer on small frames.
            kwargs.setdefault("num_cascade_levels", int(max(1, min(6, np.log2(min(H, W)) - 2))))

        def forecast_baseline(context, target, indices, _name=baseline, _fn=fn, _kwargs=kwargs):
            if _name != "steps" or "seed" in _kwargs:
                return _baseline_forecast(_name, _fn, context, T_out, **_kwargs)
            # One call per sequence: sequence i's channel k draws from seed + i * C + k, as in one call over
            # sequences 0..N-1, whatever the batches and processes.
            return np.concatenate(
                [
                    _baseline_forecast(_name, _fn, context[row : row + 1], T_out, **_kwargs, seed=seed + index * C)
                    for row, index in enumerate(indices)
                ]
            )

        forecasters[baseline] = forecast_baseline
    if baseline_kwargs:
        raise ValueError(f"baseline_kwargs names baselines that are not evaluated: {sorted(baseline_kwargs)}")

    results, total = evaluate_forecasts(
        forecasters,
        dataset,
        T_in,
        T_out,
        value_range,
        num_sequences=num_sequences,
        batch_size=batch_size,
        thresholds=thresholds,
        pool_sizes=pool_sizes,
        fss_scales=fss_scales,
        anticipated=knowledge_control.anticipated if knowledge_control is not None else None,
        descriptions=descriptions,
        rank_x_min=rank_x_min,
        progress=progress,
        event_probability=event_probability,
    )
    lo, hi = value_range
    settings: dict[str, Any] = {
        "pipeline": pipeline_name or str(pipeline.config.get("_name_or_path") or type(pipeline).__name__),
        "pipeline_class": type(pipeline).__name__,
        "dataset": dataset_name or repr(dataset),
        "num_sequences": total,
        "context_frames": T_in,
        "forecast_frames": T_out,
        "frame_shape": [H, W, C],
        "value_range": [lo, hi],
        "value_transform": pipeline.value_transform,
        "members": members if is_prediff else 1,
        "num_inference_steps": num_inference_steps if is_prediff else None,
        "scheduler": type(pipeline.scheduler).__name__ if is_prediff else None,
        "seed": seed,
        "num_processes": launched_processes().num_processes,
        "baselines": list(baselines),
        "thresholds": [float(t) for t in thresholds],
        "pool_sizes": [int(k) for k in pool_sizes if k <= min(H, W)],
        "fss_scales": [int(s) for s in fss_scales],
        "categorical_point": "ensemble mean"
        if event_probability is None
        else f"events where at least {event_probability:g} of the members reach the threshold",
    }
    if knowledge_control is not None:
        settings["anticipated_intensity"] = knowledge_control.describe()
        settings["control_scale"] = knowledge_control.scale
    units = str(pipeline.config.get("units") or getattr(dataset, "units", None) or f"values in [{lo:g}, {hi:g}]")
    minutes = None if interval_minutes is None else [float(interval_minutes) * t for t in range(1, T_out + 1)]
    return EvaluationReport(
        forecasters=results,
        lead_times=list(range(1, T_out + 1)),
        settings=settings,
        units=units,
        lead_time_minutes=minutes,
        seconds=time.perf_counter() - start_time,
    )
