"""Fractions skill score (Roberts and Lean 2008), accumulated over batches.

For a threshold and a neighbourhood of ``scale x scale`` pixels, both fields become binary event maps
(``value >= threshold``), then fractions ``S`` by a moving average over the neighbourhood, with zeros beyond
the domain edge (scipy's ``uniform_filter(mode="constant")``, as pysteps does). Over all accumulated frames

    FSS = 1 - sum (S_f - S_o)^2 / (sum S_f^2 + sum S_o^2)

1 is a perfect forecast at that scale, 0 no skill; the score is NaN when neither field has an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._base import ArrayLike, Metric, check_pair, finalize
from .categorical import threshold_key
from .defaults import SEVIR_THRESHOLDS

DEFAULT_FSS_SCALES: tuple[int, ...] = (1, 4, 16)


def fss_key(threshold: float, scale: int) -> str:
    """Score name, e.g. ``fss_74_scale16``."""
    return f"fss_{threshold_key(threshold)}_scale{scale}"


def neighbourhood_fraction(events: torch.Tensor, scale: int) -> torch.Tensor:
    """Fraction of event pixels in the ``scale x scale`` window around every pixel.

    Args:
        events: ``(N, H, W)`` float tensor of 0/1 values.

    Returns:
        ``(N, H, W)``; the window of an even ``scale`` reaches ``scale // 2`` pixels back and
        ``(scale - 1) // 2`` forward, and counts pixels beyond the edge as 0 (scipy's convention).
    """
    if scale == 1:
        return events
    before, after = scale // 2, (scale - 1) // 2
    # Box sums from an integral image, O(H W) whatever the scale. float32 holds the running event counts
    # exactly while a frame has fewer than 2**24 pixels; the fractions are formed in the caller's precision.
    exact = torch.float32 if (events.shape[-2] + scale) * (events.shape[-1] + scale) < 2**24 else torch.float64
    padded = F.pad(events.to(exact), (before + 1, after, before + 1, after))
    integral = padded.cumsum(dim=2).cumsum(dim=1)
    window = (
        integral[:, scale:, scale:]
        - integral[:, :-scale, scale:]
        - integral[:, scale:, :-scale]
        + integral[:, :-scale, :-scale]
    )
    return window.to(events.dtype) / (scale * scale)


class FractionsSkillScore(Metric):
    """FSS at several thresholds and neighbourhood sizes.

    Args:
        thresholds (`Sequence[float]`, defaults to the SEVIR thresholds):
            Event thresholds in the units of the data.
        scales (`Sequence[int]`, defaults to `(1, 4, 16)`):
            Neighbourhood sizes in pixels.

    ``compute()`` returns ``fss_{threshold}_scale{scale}`` for every pair.
    """

    def __init__(
        self, thresholds: Sequence[float] = SEVIR_THRESHOLDS, scales: Sequence[int] = DEFAULT_FSS_SCALES
    ) -> None:
        if len(thresholds) == 0:
            raise ValueError("thresholds must name at least one threshold, got an empty sequence")
        if len(scales) == 0 or any(int(s) != s or s < 1 for s in scales):
            raise ValueError(f"scales must be positive integers, got {tuple(scales)}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scales = tuple(int(s) for s in scales)
        self.names = tuple(fss_key(t, s) for t in self.thresholds for s in self.scales)
        super().__init__()

    additive_states = ("sums",)

    def _reset_state(self) -> None:
        # (T, thresholds, scales, 3): sum S_f^2, sum S_f S_o, sum S_o^2.
        self.sums: torch.Tensor | None = None

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` and ``target`` ``(B, T, H, W, C)``."""
        pred, target = check_pair(pred, target)
        b, t, h, w, c = pred.shape
        self._check_num_frames(t)
        # Frames as (T, B*C, H, W) so the sums keep the lead-time axis.
        pred = pred.permute(1, 0, 4, 2, 3).reshape(t * b * c, h, w)
        target = target.permute(1, 0, 4, 2, 3).reshape(t * b * c, h, w)
        sums = torch.zeros(t, len(self.thresholds), len(self.scales), 3, dtype=torch.float64, device=pred.device)
        for i, threshold in enumerate(self.thresholds):
            events_f = (pred >= threshold).double()
            events_o = (target >= threshold).double()
            for j, scale in enumerate(self.scales):
                s_f = neighbourhood_fraction(events_f, scale).reshape(t, -1)
                s_o = neighbourhood_fraction(events_o, scale).reshape(t, -1)
                sums[:, i, j, 0] = (s_f * s_f).sum(dim=1)
                sums[:, i, j, 1] = (s_f * s_o).sum(dim=1)
                sums[:, i, j, 2] = (s_o * s_o).sum(dim=1)
        self.sums = sums if self.sums is None else self.sums + sums

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """FSS values: floats, or ``(T,)`` arrays with ``per_lead_time=True`` (NaN where no event at all)."""
        self._check_updated()
        sums = self.sums if per_lead_time else self.sums.sum(dim=0)
        ff, fo, oo = sums.unbind(-1)
        fss = 1.0 - (ff - 2.0 * fo + oo) / (ff + oo)
        return {
            fss_key(threshold, scale): finalize(fss[..., i, j], per_lead_time)
            for i, threshold in enumerate(self.thresholds)
            for j, scale in enumerate(self.scales)
        }


def fss(pred: ArrayLike, target: ArrayLike, threshold: float, scale: int, per_lead_time: bool = False) -> Any:
    """FSS of ``pred`` against ``target`` (``(B, T, H, W, C)``) for one threshold and neighbourhood size."""
    scores = FractionsSkillScore((threshold,), (scale,))(pred, target, per_lead_time)
    return scores[fss_key(float(threshold), scale)]
