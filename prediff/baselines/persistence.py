"""Persistence: the last observed frame, repeated. The reference every nowcast must beat."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..utils.checks import check_array, check_positive_int

ArrayLike = np.ndarray | torch.Tensor


def check_context(context: Any, num_frames: int) -> None:
    """Raise ``ValueError`` unless ``context`` is finite ``(B, T_in, H, W, C)`` of at least one frame and
    ``num_frames >= 1`` (see [`~prediff.utils.checks.check_array`]). Any dtype is taken: a baseline returns
    the context's own."""
    check_array("context", context, 5, "shape (B, T_in, H, W, C)", real=False)
    if context.shape[1] < 1:
        raise ValueError(f"context must hold at least one frame, got shape {tuple(context.shape)}")
    check_positive_int("num_frames", num_frames)


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
