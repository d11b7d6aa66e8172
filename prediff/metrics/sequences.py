"""Scores kept per sequence, over the pixels a mask marks valid: what bootstrap intervals over sequences need.

The accumulating metrics of this package add everything up as it comes. A confidence interval by resampling
sequences (the bootstrap) needs the sums of every sequence apart instead: [`SequenceScores`] keeps, for every
sequence and lead time, the sums behind each score of one forecaster, restricted to the pixels a mask marks valid
(inside a radar's domain), and computes the scores from them for all sequences or for any resampling of them:

- CRPS of the ensemble ([`crps_ensemble_elementwise`]; a deterministic forecast's CRPS is its MAE);
- MSE and MAE of the ensemble mean, and the mean forecast (ensemble mean) and observed values;
- POD, SUCR, CSI, frequency BIAS and FAR (= F / (H + F)) of a point forecast (the ensemble median by default, the
  mean of the two middle members for an even ensemble; or the ensemble mean) at every threshold, per pixel;
- optionally the same scores of an ensemble's event forecast: an event where at least a fraction
  ``event_probability`` of the members reach the threshold (the exceedance probability a forecaster issues a
  warning at), as ``event_csi_{t}`` etc.;
- FSS of that point forecast for every threshold and neighbourhood (see [`~prediff.metrics.spatial`]); pixels
  outside the mask count as no event in both fields, as pysteps counts NaN, and the sums run over the whole
  frame;
- for ensembles of at least 2 members, the spread-skill ratio (as [`SpreadSkill`]) and the rank histogram (as
  [`RankHistogram`], ties broken per sequence with a generator seeded by ``(seed, sequence id)``).

Every score is a ratio of sums over pixels and sequences, so the scores of all sequences equal those of the
accumulating metrics on the same data (tested), and a bootstrap draw is a weighting of the sequences: how often
each was drawn ([`bootstrap_weights`]). Drawing the same weights for several forecasters gives paired intervals,
e.g. of a CRPS difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils.checks import check_array, check_event_probability, check_positive_int, check_seed, to_numpy
from ._base import ArrayLike, check_pair
from .categorical import false_alarm_ratio, scores_from_counts, threshold_key
from .probabilistic import crps_ensemble_elementwise, ensemble_ranks, exceedance_point
from .spatial import fss_key, neighbourhood_fraction

__all__ = ["POINT_FORECASTS", "SequenceScores", "bootstrap_weights", "percentile_interval"]

#: How an ensemble becomes the point forecast of the categorical scores and the FSS.
POINT_FORECASTS = ("median", "mean")


def bootstrap_weights(num_sequences: int, num_draws: int = 1000, seed: int = 0) -> np.ndarray:
    """``(num_draws, num_sequences)`` int64: how often each sequence is drawn in each of ``num_draws`` resamplings
    with replacement of ``num_sequences`` sequences (multinomial counts summing to ``num_sequences``), from
    ``numpy.random.default_rng(seed)``."""
    num_sequences = check_positive_int("num_sequences", num_sequences)
    num_draws = check_positive_int("num_draws", num_draws)
    rng = np.random.default_rng(check_seed(seed))
    return rng.multinomial(num_sequences, np.full(num_sequences, 1.0 / num_sequences), size=num_draws)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval (percentile method) of the draws ``values`` ``(num_draws,)``, NaN draws
    left out; ``(nan, nan)`` when every draw is NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def _median(members: torch.Tensor) -> torch.Tensor:
    """Median over axis 1; the mean of the two middle values for an even count (as ``numpy.median``)."""
    ordered = members.sort(dim=1).values
    m = members.shape[1]
    middle = ordered[:, (m - 1) // 2]
    return middle if m % 2 else 0.5 * (middle + ordered[:, m // 2])


class SequenceScores:
    """The scores of one forecaster as sums per sequence and lead time over valid pixels.

    Args:
        thresholds (`Sequence[float]`, defaults to `(1.0, 5.0)`): event thresholds of the categorical scores, in
            the units of the data (mm/h for rain rate); an event is ``value >= threshold``.
        fss_thresholds (`Sequence[float]`, defaults to `(5.0,)`): event thresholds of the FSS.
        fss_scales (`Sequence[int]`, defaults to `(8,)`): FSS neighbourhood sizes in pixels (16 km at 2 km).
        point (`str`, defaults to `"median"`): the point forecast of the categorical scores and the FSS, one of
            `POINT_FORECASTS`. MSE and MAE are always those of the ensemble mean.
        rank_x_min (`float`, *optional*): values below it tie in the rank histogram, and pixels where the
            observation and every member lie below it are left out (pysteps' ``X_min``).
        seed (`int`, defaults to 0): seed of the rank histogram's tie-breaking.
        event_probability (`float`, *optional*): in (0, 1]; also score the event forecast "at least this fraction
            of the members reach the threshold" (``event_pod_{t}``, ``event_sucr_{t}``, ``event_csi_{t}``,
            ``event_bias_{t}``, ``event_far_{t}``). For an odd ensemble, 0.5 is the median's events; a
            deterministic forecast's events are its point forecast's for any value.

    Example:
        >>> scores = SequenceScores(thresholds=(1.0, 5.0))
        >>> scores.update(ensemble, observed, mask=inside, indices=[0, 1])  # (B, M, T, H, W, C), (B, T, H, W, C)
        >>> scores.compute()["crps"], scores.compute(per_lead_time=True)["csi_5"]  # float, (T,)
        >>> draws = scores.compute(weights=bootstrap_weights(scores.num_sequences))  # every score as (1000,)
    """

    def __init__(
        self,
        thresholds: Sequence[float] = (1.0, 5.0),
        fss_thresholds: Sequence[float] = (5.0,),
        fss_scales: Sequence[int] = (8,),
        point: str = "median",
        rank_x_min: float | None = None,
        seed: int = 0,
        event_probability: float | None = None,
    ) -> None:
        if len(thresholds) == 0:
            raise ValueError("thresholds must name at least one threshold, got an empty sequence")
        if any(int(s) != s or s < 1 for s in fss_scales):
            raise ValueError(f"fss_scales must be positive integers, got {tuple(fss_scales)}")
        if point not in POINT_FORECASTS:
            raise ValueError(f"point must be one of {POINT_FORECASTS}, got {point!r}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.fss_thresholds = tuple(float(t) for t in fss_thresholds)
        self.fss_scales = tuple(int(s) for s in fss_scales)
        self.point = point
        self.rank_x_min = None if rank_x_min is None else float(rank_x_min)
        self.seed = check_seed(seed)
        self.event_probability = check_event_probability(event_probability)
        self.members: int | None = None
        self.num_frames: int | None = None
        self.indices: list[int] = []
        self._parts: dict[str, list[np.ndarray]] = {}

    @property
    def num_sequences(self) -> int:
        """How many sequences were added."""
        return len(self.indices)

    def _check_sizes(self, members: int, frames: int) -> None:
        if self.members is not None and members != self.members:
            raise ValueError(f"every batch must have the same number of members; got M={members} after {self.members}")
        if self.num_frames is not None and frames != self.num_frames:
            raise ValueError(
                f"every batch must have the same number of lead times; got T={frames} after {self.num_frames}"
            )
        self.members, self.num_frames = members, frames

    def update(
        self,
        forecast: ArrayLike,
        target: ArrayLike,
        mask: ArrayLike | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Add a batch of sequences.

        Args:
            forecast: an ensemble ``(B, M, T, H, W, C)`` or a deterministic forecast ``(B, T, H, W, C)``; NaN
                allowed outside the mask.
            target: the observation ``(B, T, H, W, C)``; NaN allowed outside the mask.
            mask: bool ``(B, T, H, W, C)``, True where a pixel counts (default: everywhere).
            indices: the ``B`` sequence ids (default: counting on from the sequences added so far); they seed
                the rank histogram's tie-breaking, so the result does not depend on the batching.
        """
        layout = "shape (B, M, T, H, W, C) or (B, T, H, W, C)"
        forecast = check_array("forecast", forecast, (5, 6), layout, finite=False)
        target = to_numpy(check_array("target", target, 5, "shape (B, T, H, W, C)", finite=False)).astype(np.float64)
        members = to_numpy(forecast).astype(np.float64)
        if members.ndim == 5:
            members = members[:, None]
        if members.shape[:1] + members.shape[2:] != target.shape:
            raise ValueError(
                f"forecast of shape {tuple(forecast.shape)} does not match the target of shape {target.shape}"
            )
        if mask is None:
            valid = np.ones(target.shape, dtype=bool)
        else:
            valid = to_numpy(check_array("mask", mask, 5, real=False, finite=False)).astype(bool)
            if valid.shape != target.shape:
                raise ValueError(f"mask of shape {valid.shape} does not match the target of shape {target.shape}")
        if np.isnan(target[valid]).any() or np.isnan(members[np.broadcast_to(valid[:, None], members.shape)]).any():
            raise ValueError("forecast or target holds NaN inside the mask; mark such pixels invalid in the mask")
        b, m, t = members.shape[:3]
        self._check_sizes(m, t)
        if indices is None:
            indices = range(self.num_sequences, self.num_sequences + b)
        indices = [int(i) for i in indices]
        if len(indices) != b:
            raise ValueError(f"indices must name the {b} sequences of the batch, got {len(indices)}")
        # Outside the mask both become 0: finite for the helpers, no event, and multiplied away in the sums.
        pred, obs = check_pair(np.where(valid[:, None], members, 0.0), np.where(valid, target, 0.0), ensemble=True)
        keep = torch.from_numpy(valid)
        weight = keep.double()

        def per_sequence(values: torch.Tensor) -> np.ndarray:
            """(B, T, H, W, C) -> (B, T) sums over the valid pixels."""
            return (values.double() * weight).sum(dim=(2, 3, 4)).numpy()

        mean = pred.mean(dim=1)
        point = mean if self.point == "mean" else _median(pred)
        parts: dict[str, np.ndarray] = {
            "count": weight.sum(dim=(2, 3, 4)).numpy(),
            "crps": per_sequence(crps_ensemble_elementwise(pred, obs)),
            "squared_error": per_sequence((mean - obs) ** 2),
            "absolute_error": per_sequence((mean - obs).abs()),
            "forecast_sum": per_sequence(mean),
            "observed_sum": per_sequence(obs),
        }
        parts["contingency"] = self._contingency(point, obs, keep)
        if self.event_probability is not None:
            parts["event_contingency"] = self._contingency(exceedance_point(pred, self.event_probability), obs, keep)
        parts["fss"] = self._fss_sums(point, obs, keep)
        if m >= 2:
            parts["variance"] = per_sequence(pred.var(dim=1, unbiased=True))
            ranks = np.zeros((b, t, m + 1))
            for row, index in enumerate(indices):
                state = np.random.SeedSequence([self.seed, index]).generate_state(1, dtype=np.uint32)
                generator = torch.Generator().manual_seed(int(state[0]))
                rank, counted = ensemble_ranks(pred[row : row + 1], obs[row : row + 1], self.rank_x_min, generator)
                counted = counted[0] & keep[row]
                lead = torch.arange(t).reshape(t, 1, 1, 1).expand_as(rank[0])
                index_of = (lead * (m + 1) + rank[0])[counted]
                ranks[row] = torch.bincount(index_of, minlength=t * (m + 1)).reshape(t, m + 1).double().numpy()
            parts["rank"] = ranks
        for name, value in parts.items():
            self._parts.setdefault(name, []).append(value)
        self.indices += indices

    def _contingency(self, field: torch.Tensor, obs: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
        """(B, T, thresholds, 3): hits, misses and false alarms over the valid pixels of each sequence, of the
        events ``field >= threshold`` (``field`` shaped as ``obs``)."""
        b, t = obs.shape[:2]
        counts = np.zeros((b, t, len(self.thresholds), 3))
        for i, threshold in enumerate(self.thresholds):
            forecast_events, observed_events = (field >= threshold) & keep, (obs >= threshold) & keep
            hits = (forecast_events & observed_events).sum(dim=(2, 3, 4)).double()
            counts[:, :, i, 0] = hits.numpy()
            counts[:, :, i, 1] = (observed_events.sum(dim=(2, 3, 4)).double() - hits).numpy()
            counts[:, :, i, 2] = (forecast_events.sum(dim=(2, 3, 4)).double() - hits).numpy()
        return counts

    def _fss_sums(self, point: torch.Tensor, obs: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
        """(B, T, thresholds, scales, 3): sums of S_f^2, S_f S_o and S_o^2 over every pixel of each sequence."""
        b, t, h, w, c = point.shape
        sums = np.zeros((b, t, len(self.fss_thresholds), len(self.fss_scales), 3))

        def frames(events: torch.Tensor) -> torch.Tensor:
            return events.double().permute(0, 1, 4, 2, 3).reshape(b * t * c, h, w)

        for i, threshold in enumerate(self.fss_thresholds):
            events_f, events_o = frames((point >= threshold) & keep), frames((obs >= threshold) & keep)
            for j, scale in enumerate(self.fss_scales):
                s_f = neighbourhood_fraction(events_f, scale).reshape(b, t, -1)
                s_o = neighbourhood_fraction(events_o, scale).reshape(b, t, -1)
                sums[:, :, i, j, 0] = (s_f * s_f).sum(dim=2).numpy()
                sums[:, :, i, j, 1] = (s_f * s_o).sum(dim=2).numpy()
                sums[:, :, i, j, 2] = (s_o * s_o).sum(dim=2).numpy()
        return sums

    def _categorical(self, contingency: np.ndarray) -> dict[str, np.ndarray]:
        """POD, SUCR, CSI, BIAS and FAR per threshold from summed counts ``(..., thresholds, 3)``."""
        counts = torch.from_numpy(contingency)
        out = {k: v.numpy() for k, v in scores_from_counts(counts, self.thresholds).items() if k != "csi_m"}
        far = false_alarm_ratio(counts).numpy()
        for i, threshold in enumerate(self.thresholds):
            out[f"far_{threshold_key(threshold)}"] = far[..., i]
        return out

    def sums(self) -> dict[str, np.ndarray]:
        """The per-sequence sums, each ``(num_sequences, T, ...)`` float64: ``count`` (valid pixels), ``crps``,
        ``squared_error``, ``absolute_error``, ``forecast_sum``, ``observed_sum`` (of the ensemble mean and the
        observation), ``contingency`` ``(..., thresholds, 3)`` (hits, misses, false alarms; also
        ``event_contingency`` with an ``event_probability``), ``fss`` ``(..., fss_thresholds, fss_scales, 3)``, and
        for ensembles ``variance`` and ``rank`` ``(..., M + 1)``."""
        if not self.indices:
            raise ValueError("SequenceScores holds no sequence yet: call update() first")
        return {name: np.concatenate(parts) for name, parts in self._parts.items()}

    def compute(self, weights: ArrayLike | None = None, per_lead_time: bool = False) -> dict[str, Any]:
        """The scores from the sums of the sequences, each counted ``weights`` times.

        Args:
            weights: ``(num_sequences,)`` or ``(num_draws, num_sequences)`` counts (see [`bootstrap_weights`]);
                default: every sequence once.
            per_lead_time: keep the lead-time axis.

        Returns:
            name -> float, or arrays with a leading ``num_draws`` axis for 2-D weights and a ``T`` axis per lead
            time: ``crps``, ``mse``, ``mae``, ``mean_forecast``, ``mean_observed``, ``pod_{t}``, ``sucr_{t}``,
            ``csi_{t}``, ``bias_{t}``, ``far_{t}`` for every threshold (and ``event_``-prefixed ones with an
            ``event_probability``), ``fss_{t}_scale{s}``, and for ensembles
            ``spread``, ``rmse_mean``, ``spread_skill_ratio`` and ``rank_histogram`` (frequencies over the last
            axis, ``M + 1`` bins). A score without any valid pixel is NaN.
        """
        sums = self.sums()
        n = self.num_sequences
        w = np.ones(n) if weights is None else to_numpy(weights).astype(np.float64)
        if w.ndim not in (1, 2) or w.shape[-1] != n:
            raise ValueError(
                f"weights must have shape (num_sequences,) or (num_draws, num_sequences), {n} sequences; got {w.shape}"
            )
        totals = {name: np.tensordot(w, value, axes=(-1, 0)) for name, value in sums.items()}
        if not per_lead_time:
            lead_axis = w.ndim - 1
            totals = {name: value.sum(axis=lead_axis) for name, value in totals.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            count = totals["count"]
            mse = totals["squared_error"] / count
            out: dict[str, Any] = {
                "crps": totals["crps"] / count,
                "mse": mse,
                "mae": totals["absolute_error"] / count,
                "mean_forecast": totals["forecast_sum"] / count,
                "mean_observed": totals["observed_sum"] / count,
            }
            out.update(self._categorical(totals["contingency"]))
            if "event_contingency" in totals:
                out.update({f"event_{k}": v for k, v in self._categorical(totals["event_contingency"]).items()})
            ff, fo, oo = np.moveaxis(totals["fss"], -1, 0)
            fss = 1.0 - (ff - 2.0 * fo + oo) / (ff + oo)
            for i, threshold in enumerate(self.fss_thresholds):
                for j, scale in enumerate(self.fss_scales):
                    out[fss_key(threshold, scale)] = fss[..., i, j]
            if "variance" in totals:
                m = self.members
                spread = np.sqrt(totals["variance"] / count)
                rmse = np.sqrt(mse)
                out.update(spread=spread, rmse_mean=rmse, spread_skill_ratio=np.sqrt((m + 1) / m) * spread / rmse)
                ranks = totals["rank"]
                out["rank_histogram"] = ranks / np.maximum(ranks.sum(axis=-1, keepdims=True), 1.0)
        return {name: float(v) if np.ndim(v) == 0 else np.asarray(v, dtype=np.float64) for name, v in out.items()}
