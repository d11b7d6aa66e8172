"""What every metric shares: input conversion and checks, and the accumulate-then-compute interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..utils.checks import check_array

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(name: str, value: Any, ndim: int | None = None) -> torch.Tensor:
    """``value`` (numpy array or torch tensor) as a finite floating torch tensor with ``ndim`` dimensions.

    Integer inputs (e.g. uint8 VIL) and half precision become float32, so that sums over many frames stay
    exact enough; float64 stays float64. Raises ``ValueError`` naming ``name`` for a wrong type, a wrong number
    of dimensions or a NaN / infinite value (see [`~prediff.utils.checks.check_array`]).
    """
    tensor = check_array(name, value, ndim, to="tensor").detach()
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    return tensor


def check_pair(pred: Any, target: Any, ensemble: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert and check a forecast against its observation.

    Args:
        pred: ``(B, T, H, W, C)`` or, with ``ensemble=True``, ``(B, M, T, H, W, C)``.
        target: ``(B, T, H, W, C)``.

    Returns:
        Both as tensors on ``pred``'s device, in a common floating dtype.
    """
    pred = as_tensor("pred", pred, 6 if ensemble else 5)
    target = as_tensor("target", target, 5)
    want = pred.shape[:1] + pred.shape[2:] if ensemble else pred.shape
    if tuple(target.shape) != tuple(want):
        layout = "(B, M, T, H, W, C)" if ensemble else "(B, T, H, W, C)"
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)} {layout}: "
            f"expected target of shape {tuple(want)}"
        )
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return pred.to(dtype), target.to(device=pred.device, dtype=dtype)


class Metric:
    """Base of the accumulating metrics.

    ``update(pred, target)`` adds one batch; ``compute()`` returns the scores over everything seen since
    construction or the last ``reset()``. Scores are a ``dict`` name -> value: a Python ``float`` by default,
    or a numpy array over lead times (first axis ``T``) with ``compute(per_lead_time=True)``.
    """

    #: Names of the scores ``compute`` returns, for tables.
    names: tuple[str, ...] = ()
    #: Attributes holding sums and counts (tensors, numbers, dicts of them, or None before any update): the
    #: state ``merge`` adds up. Empty for metrics whose state is not a plain sum.
    additive_states: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._num_frames: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._num_frames = None
        self._reset_state()

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _check_num_frames(self, num_frames: int) -> None:
        # Per-lead-time accumulators need the same number of output frames in every batch.
        if self._num_frames is None:
            self._num_frames = num_frames
        elif num_frames != self._num_frames:
            raise ValueError(
                f"{type(self).__name__}: every batch must have the same number of lead times; "
                f"got T={num_frames} after T={self._num_frames}"
            )

    def _check_updated(self) -> None:
        if self._num_frames is None:
            raise ValueError(f"{type(self).__name__}.compute() called before any update()")

    def merge(self, other: Metric) -> None:
        """Add the state ``other`` accumulated (the same metric and settings, e.g. on another process).

        Sums and counts are added, never scores averaged, so the merged scores are exactly those of all the
        batches of both (up to floating-point summation order).
        """
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        if not self.additive_states:
            raise TypeError(
                f"{type(self).__name__} cannot be merged across processes: its state is not a set of sums and counts"
            )
        if other._num_frames is None:
            return
        self._check_num_frames(other._num_frames)
        for name in self.additive_states:
            setattr(self, name, _add_states(name, getattr(self, name), getattr(other, name)))

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, pred: ArrayLike, target: ArrayLike, per_lead_time: bool = False) -> dict[str, Any]:
        """Scores of one batch alone (the accumulated state is left untouched)."""
        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.reset()
        other.update(pred, target)
        return other.compute(per_lead_time=per_lead_time)


def _add_states(name: str, mine: Any, theirs: Any) -> Any:
    if theirs is None or (isinstance(theirs, dict) and not theirs):
        return mine
    if mine is None or (isinstance(mine, dict) and not mine):
        return theirs
    if isinstance(mine, dict):
        if mine.keys() != theirs.keys():
            raise ValueError(f"cannot merge states {name!r} with keys {sorted(mine)} and {sorted(theirs)}")
        return {key: _add_states(f"{name}[{key!r}]", mine[key], theirs[key]) for key in mine}
    if isinstance(mine, torch.Tensor) and mine.shape != theirs.shape:
        raise ValueError(
            f"cannot merge state {name!r} of shape {tuple(theirs.shape)} into one of shape {tuple(mine.shape)} "
            "(different settings or ensemble sizes)"
        )
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.to(mine.device) if isinstance(mine, torch.Tensor) else theirs
    return mine + theirs


def finalize(values: torch.Tensor, per_lead_time: bool) -> float | np.ndarray:
    """A per-lead-time score tensor as a numpy array, or an already reduced scalar tensor as a float."""
    if per_lead_time:
        return values.detach().cpu().numpy().astype(np.float64)
    return float(values.detach().cpu())
