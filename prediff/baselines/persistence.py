"""Persistence: the last observed frame, repeated. The reference every nowcast must beat."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def check_context(context: Any, num_frames: int) -> None:
    """Raise ``ValueError`` unless ``context`` is finite ``(B, T_in, H, W, C)`` and ``num_frames >= 1``."""
    if not isinstance(context, (np.ndarray, torch.Tensor)):
        raise ValueError(f"context must be a numpy array or a torch tensor, got {type(context).__name__}")
    if context.ndim != 5:
        raise ValueError(f"context must have shape (B, T_in, H, W, C), got shape {tuple(context.shape)}")
    if context.shape[1] < 1:
        raise ValueError(f"context must hold at least one frame, got shape {tuple(context.shape)}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    finite = torch.isfinite(context).all() if isinstance(context, torch.Tensor) else np.isfinite(context).all()
    if not finite:
        raise ValueError("context contains NaN or infinite values")


def persistence(context: ArrayLike, num_frames: int) -> ArrayLike:
    """Repeat the last context frame.

    Args:
        context: ``(B, T_in, H, W, C)`` observed sequence (numpy or torch, any units).
        num_frames: number of frames to forecast.

    Returns:
        ``(B, num_frames, H, W, C)`` of the same type, dtype and device as ``context``.
    """
    check_context(context, num_frames)
    last = context[:, -1:]
    if isinstance(context, torch.Tensor):
        return last.expand(-1, num_frames, -1, -1, -1).clone()
    return np.repeat(last, num_frames, axis=1)
