"""Physical units <-> the [0, 1] scale the networks work in, written once.

Every network of prediff sees values mapped linearly from a declared physical range ``value_range = (lo, hi)``
(e.g. VIL 0-255) to [0, 1]; data sets, pipelines, knowledge controls, trainers, evaluation and the demo map
between the two. Written here only, the two maps cannot drift apart (one clamping, another computing in another
precision). They work on numpy arrays, torch tensors and plain numbers alike, and import neither numpy nor torch.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["to_physical", "to_unit"]

Values = TypeVar("Values")


def _bounds(value_range: Any) -> tuple[float, float]:
    # Python floats: numpy and torch apply them in the array's own floating dtype (a float32 array stays
    # float32, bit for bit as with float32 bounds), where a numpy float64 bound would promote it.
    lo, hi = value_range
    return float(lo), float(hi)


def to_physical(values: Values, value_range: Any) -> Values:
    """``values * (hi - lo) + lo``: [0, 1] -> physical units, keeping the type, dtype and device of
    ``values``. Not clamped, as in the official code: values outside [0, 1] stay outside the range."""
    lo, hi = _bounds(value_range)
    return values * (hi - lo) + lo


def to_unit(values: Values, value_range: Any) -> Values:
    """``(values - lo) / (hi - lo)``: physical units -> [0, 1], keeping the type, dtype and device of
    ``values``. Not clamped: values outside the range land outside [0, 1]."""
    lo, hi = _bounds(value_range)
    return (values - lo) / (hi - lo)
