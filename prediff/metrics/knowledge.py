"""How well a forecast obeys a knowledge control: the error of its statistic against the anticipated value.

PreDiff's built-in control steers the average intensity of the forecast sequence towards an anticipated
value (a number, or ``mu + n sigma`` of the training distribution). Its error is measured on the finished
forecast: ``|statistic(forecast) - anticipated|`` per sample (per member for ensembles), summarised as mean
absolute error, root mean squared error and mean signed error (bias). Any other control is measured the
same way by passing its statistic as a function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._base import ArrayLike, Metric, as_tensor


def mean_intensity(x: torch.Tensor) -> torch.Tensor:
    """Average intensity of every sequence: ``(..., T, H, W, C) -> (...)`` (mean over the last 4 axes)."""
    return x.mean(dim=(-4, -3, -2, -1))


def max_intensity(x: torch.Tensor) -> torch.Tensor:
    """Peak intensity of every sequence: ``(..., T, H, W, C) -> (...)``."""
    return x.flatten(start_dim=-4).amax(dim=-1)


STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean_intensity": mean_intensity,
    "max_intensity": max_intensity,
}


class KnowledgeControlError(Metric):
    """Error of a forecast statistic against the anticipated value, accumulated over batches.

    Args:
        statistic (`str` or callable, defaults to `"mean_intensity"`):
            `"mean_intensity"` (PreDiff's anticipated average intensity), `"max_intensity"`, or a function
            mapping forecasts ``(B, T, H, W, C)`` to one value per sample ``(B,)``.

    ``update(pred, anticipated)``: ``pred`` ``(B, T, H, W, C)`` or an ensemble ``(B, M, T, H, W, C)`` (every
    member is scored), ``anticipated`` a number or ``(B,)`` values in the units of the statistic (for the
    intensity statistics: the units of ``pred``, 0-255 for VIL). ``compute()`` returns ``kc_mae``, ``kc_rmse``
    and ``kc_bias`` (mean of statistic minus anticipated). The statistic spans the whole sequence, so there is
    no per-lead-time form.
    """

    names = ("kc_mae", "kc_rmse", "kc_bias")

    def __init__(self, statistic: str | Callable[[torch.Tensor], torch.Tensor] = "mean_intensity") -> None:
        if isinstance(statistic, str):
            if statistic not in STATISTICS:
                raise ValueError(f"statistic must be one of {sorted(STATISTICS)} or a callable, got {statistic!r}")
            statistic = STATISTICS[statistic]
        elif not callable(statistic):
            raise ValueError(f"statistic must be a name or a callable, got {type(statistic).__name__}")
        self.statistic = statistic
        super().__init__()

    def _reset_state(self) -> None:
        self.sum_abs = 0.0
        self.sum_sq = 0.0
        self.sum_signed = 0.0
        self.count = 0

    def update(self, pred: ArrayLike, anticipated: ArrayLike | float) -> None:
        """Add a batch of forecasts and the values their control anticipated."""
        pred = as_tensor("pred", pred)
        if pred.ndim not in (5, 6):
            raise ValueError(f"pred must be (B, T, H, W, C) or (B, M, T, H, W, C), got shape {tuple(pred.shape)}")
        b = pred.shape[0]
        members = pred if pred.ndim == 6 else pred.unsqueeze(1)
        flat = members.reshape(-1, *members.shape[2:])
        values = torch.as_tensor(self.statistic(flat)).to(torch.float64)
        if values.shape != (flat.shape[0],):
            raise ValueError(
                f"statistic must return one value per sample, shape ({flat.shape[0]},); got {tuple(values.shape)}"
            )
        values = values.reshape(b, members.shape[1])
        if isinstance(anticipated, (int, float)):
            target = torch.full((b,), float(anticipated), dtype=torch.float64)
        else:
            if isinstance(anticipated, (list, tuple)):
                anticipated = np.asarray(anticipated, dtype=np.float64)
            target = as_tensor("anticipated", anticipated).double().reshape(-1)
            if target.numel() == 1:
                target = target.expand(b)
            if target.shape != (b,):
                raise ValueError(f"anticipated must be a number or of shape ({b},), got {tuple(target.shape)}")
        error = values - target.to(values.device).unsqueeze(1)
        if not torch.isfinite(error).all():
            raise ValueError("statistic returned NaN or infinite values")
        self.sum_abs += float(error.abs().sum())
        self.sum_sq += float((error**2).sum())
        self.sum_signed += float(error.sum())
        self.count += error.numel()
        self._num_frames = members.shape[2]

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """``kc_mae``, ``kc_rmse`` and ``kc_bias`` as floats."""
        if per_lead_time:
            raise ValueError("KnowledgeControlError scores whole sequences; per_lead_time=True is not available")
        self._check_updated()
        return {
            "kc_mae": self.sum_abs / self.count,
            "kc_rmse": (self.sum_sq / self.count) ** 0.5,
            "kc_bias": self.sum_signed / self.count,
        }

    def __call__(self, pred: ArrayLike, anticipated: ArrayLike | float, per_lead_time: bool = False) -> dict:
        """Scores of one batch alone."""
        return super().__call__(pred, anticipated, per_lead_time)


def knowledge_control_error(
    pred: ArrayLike,
    anticipated: ArrayLike | float,
    statistic: str | Callable[[torch.Tensor], torch.Tensor] = "mean_intensity",
) -> float:
    """Mean absolute error of ``statistic(pred)`` against ``anticipated`` (:class:`KnowledgeControlError`).

    Returns a float in the units of the statistic.
    """
    return KnowledgeControlError(statistic)(pred, anticipated)["kc_mae"]
