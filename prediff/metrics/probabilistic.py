"""Scores of an ensemble forecast: CRPS, rank histogram and spread-skill ratio.

Ensembles are ``(B, M, T, H, W, C)`` (M members), observations ``(B, T, H, W, C)``, in the units of the data
(0-255 for VIL).

- CRPS (Gneiting and Raftery 2007), the ensemble estimator ``E|X - y| - 1/2 E|X - X'|`` with ``X, X'``
  independent draws from the M members (the same value as pysteps' Hersbach decomposition), averaged over
  pixels; with ``fair=True`` the second expectation leaves out ``X = X'`` (the unbiased "fair" CRPS of
  Ferro 2014). The pairwise term costs ``O(M log M)`` per pixel through the sorted members:
  ``sum_ij |x_i - x_j| = 2 sum_i (2 i - M - 1) x_(i)`` (``x_(1) <= ... <= x_(M)``).
- Rank histogram (Hamill 2001): how many members fall below the observation, ties broken at random
  uniformly among the tied positions (as pysteps does); a flat histogram means a reliable ensemble.
- Spread-skill ratio (Fortin et al. 2014): ``sqrt((M + 1) / M) * spread / RMSE``, with ``spread`` the root
  of the mean unbiased member variance and RMSE that of the ensemble mean; 1 for a reliable ensemble,
  below 1 for an under-dispersive one.
- Event forecasts at an exceedance probability: an event wherever at least a fraction ``p`` of the members reach
  the threshold. For every threshold at once that is the ``ceil(p M)``-th largest member reaching it, so
  [`exceedance_point`] gives the one field whose events are those of the ensemble at probability ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils.checks import check_array, check_event_probability
from ._base import ArrayLike, Metric, check_pair, finalize
from .categorical import max_pool_frames


def max_pool_ensemble(pred: torch.Tensor, pool_size: int) -> torch.Tensor:
    """[`max_pool_frames`] of every member of an ensemble ``(B, M, T, H, W, C)``, differentiable."""
    b, m = pred.shape[:2]
    pooled = max_pool_frames(pred.reshape(b * m, *pred.shape[2:]), pool_size)
    return pooled.reshape(b, m, *pooled.shape[1:])


def exceedance_point(pred: ArrayLike, probability: float) -> torch.Tensor:
    """The ``ceil(probability * M)``-th largest of the ``M`` members along axis 1: ``(B, T, H, W, C)``.

    It reaches a threshold exactly where at least a fraction ``probability`` (in (0, 1]) of the members do, so
    its events at every threshold are the ensemble's event forecast at that exceedance probability (1/2 of an odd
    ensemble: the median's events; 1: the smallest member).
    """
    if check_event_probability(probability, "probability") is None:
        raise ValueError("probability must be in (0, 1], got None")
    members = check_array("pred", pred, 6, "shape (B, M, T, H, W, C)", to="tensor")
    # The tolerance keeps p = k / M at k members despite rounding.
    k = max(1, math.ceil(probability * members.shape[1] - 1e-9))
    return members.topk(k, dim=1).values[:, k - 1]


def crps_ensemble_elementwise(pred: ArrayLike, target: ArrayLike, fair: bool = False) -> torch.Tensor:
    """CRPS of every pixel.

    Args:
        pred: ensemble ``(B, M, T, H, W, C)``.
        target: observation ``(B, T, H, W, C)``.
        fair: use the fair (unbiased) estimator, which needs ``M >= 2``.

    Returns:
        ``(B, T, H, W, C)`` float64 tensor of CRPS values in the units of the data.
    """
    pred, target = check_pair(pred, target, ensemble=True)
    return crps_ensemble_tensor(pred.double(), target.double(), fair)


def crps_ensemble_tensor(pred: torch.Tensor, target: torch.Tensor, fair: bool = False) -> torch.Tensor:
    """The CRPS of every pixel as [`crps_ensemble_elementwise`] computes it, on tensors as they are (no conversion,
    no NaN check) and differentiable: a training loss. `pred` `(B, M, ...)`, `target` `(B, ...)` -> `(B, ...)` in
    `pred`'s dtype."""
    if pred.ndim < 2 or tuple(target.shape) != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)} (B, M, ...): expected "
            f"target of shape {(pred.shape[0], *pred.shape[2:]) if pred.ndim >= 2 else '(B, ...)'}"
        )
    m = pred.shape[1]
    if fair and m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got M={m}")
    skill = (pred - target.unsqueeze(1)).abs().mean(dim=1)
    ordered = pred.sort(dim=1).values
    shape = (1, m) + (1,) * (pred.ndim - 2)
    weights = (2 * torch.arange(1, m + 1, dtype=pred.dtype, device=pred.device) - m - 1).reshape(shape)
    # (weights * ordered).sum(1) = 1/2 sum_ij |x_i - x_j|.
    half_pair_sum = (weights * ordered).sum(dim=1)
    spread = half_pair_sum / (m * (m - 1) if fair else m * m)
    return skill - spread


class EnsembleCRPS(Metric):
    """Mean ensemble CRPS over batches, optionally also after K x K max-pooling (as for pooled CSI).

    Args:
        pool_sizes (`Sequence[int]`, defaults to `(1,)`):
            Pooling sizes; scores are named `crps`, `crps_pool4`, ...
        fair (`bool`, defaults to `False`):
            Use the fair estimator.
    """

    def __init__(self, pool_sizes: Sequence[int] = (1,), fair: bool = False) -> None:
        if len(pool_sizes) == 0 or any(int(k) != k or k < 1 for k in pool_sizes):
            raise ValueError(f"pool_sizes must be positive integers, got {tuple(pool_sizes)}")
        self.pool_sizes = tuple(int(k) for k in pool_sizes)
        self.fair = bool(fair)
        self.names = tuple("crps" if k == 1 else f"crps_pool{k}" for k in self.pool_sizes)
        super().__init__()

    additive_states = ("sums", "counts")

    def _reset_state(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, torch.Tensor] = {}

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` ``(B, M, T, H, W, C)``, ``target`` ``(B, T, H, W, C)``."""
        pred, target = check_pair(pred, target, ensemble=True)
        self._check_num_frames(pred.shape[2])
        for k in self.pool_sizes:
            crps = crps_ensemble_elementwise(max_pool_ensemble(pred, k), max_pool_frames(target, k), self.fair)
            total = crps.sum(dim=(0, 2, 3, 4))
            count = torch.full_like(total, float(crps[:, 0].numel()))
            self.sums[k] = self.sums[k] + total if k in self.sums else total
            self.counts[k] = self.counts[k] + count if k in self.counts else count

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """Mean CRPS: floats, or ``(T,)`` arrays with ``per_lead_time=True``."""
        self._check_updated()
        out = {}
        for name, k in zip(self.names, self.pool_sizes):
            s, n = (self.sums[k], self.counts[k]) if per_lead_time else (self.sums[k].sum(), self.counts[k].sum())
            out[name] = finalize(s / n, per_lead_time)
        return out


def crps_ensemble(pred: ArrayLike, target: ArrayLike, fair: bool = False, per_lead_time: bool = False) -> Any:
    """Mean CRPS of ensemble ``pred`` ``(B, M, T, H, W, C)`` against ``target``: float or ``(T,)`` array."""
    return EnsembleCRPS(fair=fair)(pred, target, per_lead_time)["crps"]


def ensemble_ranks(
    pred: ArrayLike,
    target: ArrayLike,
    x_min: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every observation among the members, in ``0..M``.

    Args:
        pred: ensemble ``(B, M, T, H, W, C)``.
        target: observation ``(B, T, H, W, C)``.
        x_min: if given, values below it count as equal (so "no rain" ties are spread at random) and
            pixels where the observation and every member are below it are left out, as in pysteps.
        generator: random generator for breaking ties (on ``pred``'s device).

    Returns:
        ``ranks`` ``(B, T, H, W, C)`` int64 and ``valid`` ``(B, T, H, W, C)`` bool (pixels that count).
    """
    pred, target = check_pair(pred, target, ensemble=True)
    if x_min is not None:
        valid = (target >= x_min) | (pred >= x_min).any(dim=1)
        # Everything below x_min becomes one value, so those members tie with a dry observation.
        floor = torch.tensor(x_min - 1.0, dtype=pred.dtype, device=pred.device)
        pred = torch.where(pred < x_min, floor, pred)
        target = torch.where(target < x_min, floor, target)
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
    y = target.unsqueeze(1)
    below = (pred < y).sum(dim=1)
    ties = (pred == y).sum(dim=1)
    u = torch.rand(below.shape, generator=generator, device=pred.device, dtype=torch.float64)
    # Uniform over the ties + 1 positions the observation may take among equal members.
    ranks = below + torch.floor(u * (ties + 1)).long().clamp(max=ties)
    return ranks, valid


class RankHistogram(Metric):
    """Rank histogram of an ensemble, accumulated over batches.

    Args:
        x_min (`float`, *optional*):
            Values below it are treated as equal; pixels where observation and all members are below it are
            skipped (pysteps' ``X_min``).
        normalize (`bool`, defaults to `True`):
            Return frequencies summing to 1 instead of counts.
        seed (`int`, defaults to 0):
            Seed of the tie-breaking random numbers, so results are reproducible.

    ``compute()`` returns ``{"rank_histogram": (M + 1,) array}``, or ``(T, M + 1)`` per lead time.
    """

    names = ("rank_histogram",)

    def __init__(self, x_min: float | None = None, normalize: bool = True, seed: int = 0) -> None:
        self.x_min = None if x_min is None else float(x_min)
        self.normalize = bool(normalize)
        self.seed = int(seed)
        super().__init__()

    additive_states = ("counts",)

    def _reset_state(self) -> None:
        self.counts: torch.Tensor | None = None
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def update(self, pred: ArrayLike, target: ArrayLike, generator: torch.Generator | None = None) -> None:
        """Add a batch: ``pred`` ``(B, M, T, H, W, C)``, ``target`` ``(B, T, H, W, C)``.

        ``generator`` (on ``pred``'s device) breaks the ties instead of the metric's own, e.g. one seeded per
        sequence so the histogram does not depend on how sequences are batched or split across processes.
        """
        pred, target = check_pair(pred, target, ensemble=True)
        b, m, t = pred.shape[:3]
        self._check_num_frames(t)
        if self.counts is not None and self.counts.shape[1] != m + 1:
            raise ValueError(
                f"every batch must have the same number of members; got M={m} after M={self.counts.shape[1] - 1}"
            )
        ranks, valid = ensemble_ranks(pred, target, self.x_min, generator or self._generator(pred.device))
        lead = torch.arange(t, device=pred.device).reshape(1, t, 1, 1, 1).expand_as(ranks)
        index = (lead * (m + 1) + ranks)[valid]
        counts = torch.bincount(index, minlength=t * (m + 1)).reshape(t, m + 1).double()
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """The histogram: ``(M + 1,)``, or ``(T, M + 1)`` with ``per_lead_time=True``."""
        self._check_updated()
        counts = self.counts if per_lead_time else self.counts.sum(dim=0)
        if self.normalize:
            counts = counts / counts.sum(dim=-1, keepdim=True).clamp(min=1)
        return {"rank_histogram": counts.cpu().numpy()}


def rank_histogram(
    pred: ArrayLike, target: ArrayLike, x_min: float | None = None, normalize: bool = True, seed: int = 0
) -> np.ndarray:
    """Rank histogram ``(M + 1,)`` of ensemble ``pred`` ``(B, M, T, H, W, C)`` against ``target``."""
    return RankHistogram(x_min, normalize, seed)(pred, target)["rank_histogram"]


class SpreadSkill(Metric):
    """Ensemble spread, RMSE of the ensemble mean and their ratio, accumulated over batches.

    ``compute()`` returns ``spread`` (root mean unbiased member variance), ``rmse_mean`` (RMSE of the ensemble
    mean) and ``spread_skill_ratio`` = ``sqrt((M + 1) / M) * spread / rmse_mean``; needs ``M >= 2``.
    """

    names = ("spread", "rmse_mean", "spread_skill_ratio")

    additive_states = ("sum_variance", "sum_squared_error", "count")

    def _reset_state(self) -> None:
        self.sum_variance: torch.Tensor | None = None
        self.sum_squared_error: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.num_members: int | None = None

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` ``(B, M, T, H, W, C)``, ``target`` ``(B, T, H, W, C)``."""
        pred, target = check_pair(pred, target, ensemble=True)
        m, t = pred.shape[1], pred.shape[2]
        if m < 2:
            raise ValueError(f"spread needs at least 2 members, got M={m}")
        if self.num_members is not None and m != self.num_members:
            raise ValueError(f"every batch must have the same number of members; got M={m} after M={self.num_members}")
        self._check_num_frames(t)
        self.num_members = m
        pred, target = pred.double(), target.double()
        variance = pred.var(dim=1, unbiased=True).sum(dim=(0, 2, 3, 4))
        squared_error = ((pred.mean(dim=1) - target) ** 2).sum(dim=(0, 2, 3, 4))
        count = torch.full_like(variance, float(target[:, 0].numel()))
        if self.count is None:
            self.sum_variance, self.sum_squared_error, self.count = variance, squared_error, count
        else:
            self.sum_variance += variance
            self.sum_squared_error += squared_error
            self.count += count

    def merge(self, other: Metric) -> None:
        """Add the state of `other` (see [`Metric.merge`]); both must have seen the same ensemble size."""
        if isinstance(other, SpreadSkill) and other.num_members is not None:
            if self.num_members is not None and other.num_members != self.num_members:
                raise ValueError(
                    f"cannot merge spread of M={other.num_members} members into spread of M={self.num_members}"
                )
            self.num_members = other.num_members
        super().merge(other)

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """Spread, RMSE of the mean and their ratio: floats, or ``(T,)`` arrays per lead time."""
        self._check_updated()
        reduce = (lambda x: x) if per_lead_time else (lambda x: x.sum())
        spread = (reduce(self.sum_variance) / reduce(self.count)).sqrt()
        rmse = (reduce(self.sum_squared_error) / reduce(self.count)).sqrt()
        m = self.num_members
        ratio = np.sqrt((m + 1) / m) * spread / rmse
        return {
            "spread": finalize(spread, per_lead_time),
            "rmse_mean": finalize(rmse, per_lead_time),
            "spread_skill_ratio": finalize(ratio, per_lead_time),
        }


def spread_skill_ratio(pred: ArrayLike, target: ArrayLike, per_lead_time: bool = False) -> Any:
    """Spread-skill ratio of ensemble ``pred`` ``(B, M, T, H, W, C)`` against ``target``."""
    return SpreadSkill()(pred, target, per_lead_time)["spread_skill_ratio"]
