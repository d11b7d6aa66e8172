"""Categorical (yes/no event) scores at intensity thresholds: POD, SUCR, CSI, frequency BIAS and CSI-M.

An event is ``value >= threshold`` (0-255 VIL units by default). Hits ``H``, misses ``M`` and false alarms
``F`` are summed over the whole evaluation set (Earthformer's ``SEVIRSkillScore`` mode "0") and, when asked,
kept per lead time. The pooled variants (PreDiff's ``sevir_pool{K}``) first max-pool every frame of the
forecast and the observation over non-overlapping ``K x K`` windows, so a forecast gets credit for placing
an event within ``K`` pixels; an ``H`` or ``W`` that ``K`` does not divide drops the remaining border rows
and columns, as ``torch.nn.functional.max_pool2d`` does in the official code.

Scores from the counts (``eps`` = 1e-4 as in the official scripts, so an event never seen scores 0 rather
than NaN):

- POD  = H / (H + M + eps)                probability of detection
- SUCR = H / (H + F + eps)                success ratio, 1 - false alarm ratio
- CSI  = H / (H + M + F + eps)            critical success index
- BIAS = (H + F) / (H + M + eps)          frequency bias (1 = as many forecast events as observed)
- FAR  = F / (H + F + eps)                false alarm ratio (:func:`far`; not among CategoricalScore's names)

``bias_formula="earthformer"`` reproduces the released code's ``((H + F) / (H + M + eps) / ln 2) ** 2``
instead, for comparison with published tables; it is not a frequency bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._base import ArrayLike, Metric, check_pair, finalize
from .defaults import SEVIR_POOL_SIZES, SEVIR_THRESHOLDS

BIAS_FORMULAS = ("standard", "earthformer")


def threshold_key(threshold: float) -> str:
    """``16.0 -> "16"``, ``16.5 -> "16.5"``: the threshold as it appears in score names."""
    return f"{threshold:g}"


def score_key(score: str, threshold: float | None = None, pool_size: int = 1) -> str:
    """Name of one score, e.g. ``csi_74``, ``pod_16_pool4``, ``csi_m``, ``csi_m_pool16``."""
    key = score if threshold is None else f"{score}_{threshold_key(threshold)}"
    return key if pool_size == 1 else f"{key}_pool{pool_size}"


def max_pool_frames(x: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Max over non-overlapping ``pool_size x pool_size`` windows of every frame.

    Args:
        x: ``(B, T, H, W, C)``.

    Returns:
        ``(B, T, H // pool_size, W // pool_size, C)``.
    """
    if pool_size == 1:
        return x
    b, t, h, w, c = x.shape
    if h < pool_size or w < pool_size:
        raise ValueError(f"pool_size {pool_size} is larger than the frame size {h}x{w}")
    frames = x.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
    pooled = F.max_pool2d(frames, kernel_size=pool_size, stride=pool_size)
    return pooled.reshape(b, t, c, h // pool_size, w // pool_size).permute(0, 1, 3, 4, 2)


def _check_settings(thresholds: Sequence[float], pool_sizes: Sequence[int], eps: float, bias_formula: str) -> None:
    if len(thresholds) == 0:
        raise ValueError("thresholds must name at least one threshold, got an empty sequence")
    if len(pool_sizes) == 0 or any(int(k) != k or k < 1 for k in pool_sizes):
        raise ValueError(f"pool_sizes must be positive integers, got {tuple(pool_sizes)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if bias_formula not in BIAS_FORMULAS:
        raise ValueError(f"bias_formula must be one of {BIAS_FORMULAS}, got {bias_formula!r}")


def contingency_counts(
    pred: ArrayLike,
    target: ArrayLike,
    thresholds: Sequence[float] = SEVIR_THRESHOLDS,
    pool_size: int = 1,
) -> torch.Tensor:
    """Hits, misses and false alarms per lead time and threshold.

    Args:
        pred: forecast ``(B, T, H, W, C)``, 0-255 units.
        target: observation ``(B, T, H, W, C)``, same units.
        thresholds: event thresholds.
        pool_size: max-pool both over ``pool_size x pool_size`` windows first.

    Returns:
        float64 tensor ``(T, len(thresholds), 3)``: ``[..., 0]`` hits, ``[..., 1]`` misses,
        ``[..., 2]`` false alarms, summed over batch, space and channels.
    """
    pred, target = check_pair(pred, target)
    num_frames = pred.shape[1]
    # (T, everything else): the sums then run over contiguous memory.
    pred = max_pool_frames(pred, pool_size).transpose(0, 1).reshape(num_frames, -1)
    target = max_pool_frames(target, pool_size).transpose(0, 1).reshape(num_frames, -1)
    counts = torch.zeros(num_frames, len(thresholds), 3, dtype=torch.float64, device=pred.device)
    for i, threshold in enumerate(thresholds):
        p = pred >= threshold
        t = target >= threshold
        hits = (p & t).sum(dim=1).double()
        counts[:, i, 0] = hits
        counts[:, i, 1] = t.sum(dim=1).double() - hits
        counts[:, i, 2] = p.sum(dim=1).double() - hits
    return counts


def scores_from_counts(
    counts: torch.Tensor,
    thresholds: Sequence[float],
    pool_size: int = 1,
    eps: float = 1e-4,
    bias_formula: str = "standard",
) -> dict[str, torch.Tensor]:
    """POD, SUCR, CSI, BIAS per threshold and CSI-M from ``counts`` ``(..., len(thresholds), 3)``.

    Returns tensors of shape ``counts.shape[:-2]`` keyed as in :func:`score_key`.
    """
    hits, misses, false_alarms = counts.unbind(-1)
    bias = (hits + false_alarms) / (hits + misses + eps)
    if bias_formula == "earthformer":
        bias = (bias / math.log(2.0)) ** 2
    per_threshold = {
        "pod": hits / (hits + misses + eps),
        "sucr": hits / (hits + false_alarms + eps),
        "csi": hits / (hits + misses + false_alarms + eps),
        "bias": bias,
    }
    out: dict[str, torch.Tensor] = {}
    for score, values in per_threshold.items():
        for i, threshold in enumerate(thresholds):
            out[score_key(score, threshold, pool_size)] = values[..., i]
    out[score_key("csi_m", None, pool_size)] = per_threshold["csi"].mean(dim=-1)
    return out


class CategoricalScore(Metric):
    """POD, SUCR, CSI, frequency BIAS and CSI-M at several thresholds and pooling sizes, over many batches.

    Args:
        thresholds (`Sequence[float]`, defaults to `(16, 74, 133, 160, 181, 219)`):
            Event thresholds, in the units of the data (SEVIR VIL 0-255).
        pool_sizes (`Sequence[int]`, defaults to `(1, 4, 16)`):
            Max-pooling window sizes; 1 scores the frames as they are.
        eps (`float`, defaults to 1e-4):
            Added to every denominator, as in the official scripts.
        bias_formula (`str`, defaults to `"standard"`):
            `"standard"` frequency bias or the released code's `"earthformer"` variant.

    Example:
        >>> metric = CategoricalScore(pool_sizes=(1, 4))
        >>> for pred, target in batches:  # (B, T, H, W, C), 0-255
        ...     metric.update(pred, target)
        >>> metric.compute()["csi_m"], metric.compute(per_lead_time=True)["csi_74_pool4"]  # float, (T,)
    """

    def __init__(
        self,
        thresholds: Sequence[float] = SEVIR_THRESHOLDS,
        pool_sizes: Sequence[int] = SEVIR_POOL_SIZES,
        eps: float = 1e-4,
        bias_formula: str = "standard",
    ) -> None:
        _check_settings(thresholds, pool_sizes, eps, bias_formula)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.pool_sizes = tuple(int(k) for k in pool_sizes)
        self.eps = float(eps)
        self.bias_formula = bias_formula
        self.names = tuple(
            name
            for k in self.pool_sizes
            for name in scores_from_counts(torch.zeros(len(self.thresholds), 3), self.thresholds, k)
        )
        super().__init__()

    additive_states = ("counts",)

    def _reset_state(self) -> None:
        self.counts: dict[int, torch.Tensor] = {}

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` and ``target`` ``(B, T, H, W, C)`` in the units of the thresholds."""
        pred, target = check_pair(pred, target)
        self._check_num_frames(pred.shape[1])
        for k in self.pool_sizes:
            counts = contingency_counts(pred, target, self.thresholds, k)
            self.counts[k] = self.counts[k] + counts if k in self.counts else counts

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """Scores over all batches: floats, or ``(T,)`` arrays with ``per_lead_time=True``."""
        self._check_updated()
        out: dict[str, Any] = {}
        for k in self.pool_sizes:
            counts = self.counts[k] if per_lead_time else self.counts[k].sum(dim=0)
            scores = scores_from_counts(counts, self.thresholds, k, self.eps, self.bias_formula)
            out.update({name: finalize(value, per_lead_time) for name, value in scores.items()})
        return out


def categorical_scores(
    pred: ArrayLike,
    target: ArrayLike,
    thresholds: Sequence[float] = SEVIR_THRESHOLDS,
    pool_sizes: Sequence[int] = (1,),
    eps: float = 1e-4,
    bias_formula: str = "standard",
    per_lead_time: bool = False,
) -> dict[str, Any]:
    """Functional form of :class:`CategoricalScore` for one batch."""
    metric = CategoricalScore(thresholds, pool_sizes, eps, bias_formula)
    metric.update(pred, target)
    return metric.compute(per_lead_time=per_lead_time)


def _single(score: str):
    def fn(
        pred: ArrayLike,
        target: ArrayLike,
        threshold: float,
        pool_size: int = 1,
        eps: float = 1e-4,
        per_lead_time: bool = False,
    ) -> Any:
        if score == "far":  # not among CategoricalScore's names: from the counts
            counts = contingency_counts(pred, target, (float(threshold),), pool_size)[:, 0]
            return finalize(false_alarm_ratio(counts if per_lead_time else counts.sum(dim=0), eps), per_lead_time)
        scores = categorical_scores(pred, target, (threshold,), (pool_size,), eps, per_lead_time=per_lead_time)
        return scores[score_key(score, float(threshold), pool_size)]

    fn.__name__ = score
    fn.__qualname__ = score
    fn.__doc__ = (
        f"{score.upper()} of ``pred`` against ``target`` (both ``(B, T, H, W, C)``) for events "
        "``>= threshold``, after max-pooling over ``pool_size x pool_size`` windows: a float, or a ``(T,)`` "
        "array with ``per_lead_time=True``."
    )
    return fn


pod = _single("pod")
sucr = _single("sucr")
csi = _single("csi")
frequency_bias = _single("bias")


def false_alarm_ratio(counts: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """FAR = F / (H + F + eps) from ``counts`` ``(..., 3)`` (hits, misses, false alarms, as
    :func:`contingency_counts` gives): the share of forecast events that did not happen, 0 when no event was
    forecast. Not 1 - SUCR, which is ``(F + eps) / (H + F + eps)`` and so 1, not 0, without forecast events."""
    hits, _, false_alarms = counts.unbind(-1)
    return false_alarms / (hits + false_alarms + eps)


far = _single("far")
