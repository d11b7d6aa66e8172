"""Continuous scores of a deterministic forecast: MSE, RMSE, MAE and SSIM.

Values are in the units of the data (0-255 for VIL). Earthformer and PreDiff report MSE and MAE on data
scaled to [0, 1]: divide MSE by 255**2 and MAE by 255 to compare with their tables. SSIM is the mean
structural similarity of every frame (Wang et al. 2004): an 11 x 11 Gaussian window of standard deviation
1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range`` 255 by default, averaged over the frame's valid region
(the border a window does not fit in is left out, as scikit-image and torchmetrics do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._base import ArrayLike, Metric, check_pair, finalize

CONTINUOUS_SCORES = ("mse", "rmse", "mae", "ssim")


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_frame(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: float = 255.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity of every frame and channel.

    Args:
        pred, target: ``(B, T, H, W, C)`` with ``H, W >= window_size``.
        data_range: value range of the data (255 for VIL).

    Returns:
        ``(B, T, C)`` float64 tensor of mean SSIM over each frame's valid region.
    """
    pred, target = check_pair(pred, target)
    b, t, h, w, c = pred.shape
    if h < window_size or w < window_size:
        raise ValueError(f"SSIM needs frames of at least {window_size}x{window_size} pixels, got {h}x{w}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    # float64: the variance terms are differences of large numbers at 0-255 scale.
    x = pred.double().permute(0, 1, 4, 2, 3).reshape(b * t * c, 1, h, w)
    y = target.double().permute(0, 1, 4, 2, 3).reshape(b * t * c, 1, h, w)
    g = _gaussian_window(window_size, sigma, x.dtype, x.device)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(-1, 1, h, w)
    # The Gaussian window is separable: filter rows, then columns.
    filtered = F.conv2d(F.conv2d(stacked, g.reshape(1, 1, -1, 1)), g.reshape(1, 1, 1, -1))
    filtered = filtered.reshape(b * t * c, 5, h - window_size + 1, w - window_size + 1)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.unbind(1)
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1)).reshape(b, t, c)


class ContinuousScore(Metric):
    """MSE, RMSE, MAE and SSIM of a deterministic forecast, accumulated over batches.

    Args:
        scores (`Sequence[str]`, defaults to `("mse", "rmse", "mae", "ssim")`):
            Which scores to accumulate (SSIM is the costly one).
        data_range (`float`, defaults to 255.0):
            Value range of the data, for SSIM's stabilising constants.

    ``compute()`` averages over every pixel (MSE, MAE; RMSE is the root of that MSE) or every frame (SSIM).
    """

    def __init__(self, scores: Sequence[str] = CONTINUOUS_SCORES, data_range: float = 255.0) -> None:
        unknown = [s for s in scores if s not in CONTINUOUS_SCORES]
        if unknown or len(scores) == 0:
            raise ValueError(f"scores must be a non-empty subset of {CONTINUOUS_SCORES}, got {tuple(scores)}")
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        self.names = tuple(s for s in CONTINUOUS_SCORES if s in scores)
        self.data_range = float(data_range)
        super().__init__()

    additive_states = ("sum_squared_error", "sum_absolute_error", "sum_ssim", "num_values", "num_frames")

    def _reset_state(self) -> None:
        self.sum_squared_error: torch.Tensor | None = None
        self.sum_absolute_error: torch.Tensor | None = None
        self.sum_ssim: torch.Tensor | None = None
        self.num_values: torch.Tensor | None = None
        self.num_frames: torch.Tensor | None = None

    @staticmethod
    def _add(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        return value if total is None else total + value

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` and ``target`` ``(B, T, H, W, C)``."""
        pred, target = check_pair(pred, target)
        self._check_num_frames(pred.shape[1])
        b, t, h, w, c = pred.shape
        diff = pred.double() - target.double()
        self.sum_squared_error = self._add(self.sum_squared_error, (diff**2).sum(dim=(0, 2, 3, 4)))
        self.sum_absolute_error = self._add(self.sum_absolute_error, diff.abs().sum(dim=(0, 2, 3, 4)))
        values = torch.full((t,), float(b * h * w * c), dtype=torch.float64, device=pred.device)
        self.num_values = self._add(self.num_values, values)
        if "ssim" in self.names:
            frame_ssim = ssim_per_frame(pred, target, data_range=self.data_range)
            self.sum_ssim = self._add(self.sum_ssim, frame_ssim.sum(dim=(0, 2)))
            frames = torch.full((t,), float(b * c), dtype=torch.float64, device=pred.device)
            self.num_frames = self._add(self.num_frames, frames)

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """Scores over all batches: floats, or ``(T,)`` arrays with ``per_lead_time=True``."""
        self._check_updated()
        reduce = (lambda x: x) if per_lead_time else (lambda x: x.sum())
        num_values = reduce(self.num_values)
        mse = reduce(self.sum_squared_error) / num_values
        values = {"mse": mse, "rmse": mse.sqrt(), "mae": reduce(self.sum_absolute_error) / num_values}
        if "ssim" in self.names:
            values["ssim"] = reduce(self.sum_ssim) / reduce(self.num_frames)
        return {name: finalize(values[name], per_lead_time) for name in self.names}


def mse(pred: ArrayLike, target: ArrayLike, per_lead_time: bool = False) -> Any:
    """Mean squared error of ``pred`` against ``target`` (``(B, T, H, W, C)``): float or ``(T,)`` array."""
    return ContinuousScore(("mse",))(pred, target, per_lead_time)["mse"]


def mae(pred: ArrayLike, target: ArrayLike, per_lead_time: bool = False) -> Any:
    """Mean absolute error of ``pred`` against ``target`` (``(B, T, H, W, C)``): float or ``(T,)`` array."""
    return ContinuousScore(("mae",))(pred, target, per_lead_time)["mae"]


def ssim(pred: ArrayLike, target: ArrayLike, data_range: float = 255.0, per_lead_time: bool = False) -> Any:
    """Mean SSIM of the frames of ``pred`` against ``target`` (``(B, T, H, W, C)``): float or ``(T,)``."""
    return ContinuousScore(("ssim",), data_range)(pred, target, per_lead_time)["ssim"]
