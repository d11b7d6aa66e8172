"""Physical units <-> the [0, 1] scale the networks work in, written once.

Every network of prediff sees values mapped from physical units to [0, 1] in two stages:

1. an optional *value transform* recorded with the data or the pipeline (``value_transform``), for quantities
   whose distribution spans orders of magnitude such as rain rate in mm/h:
   - ``{"kind": "db", "threshold": 0.1, "zerovalue": -15.0}``: pysteps' dB transform, ``10 log10(R)`` where
     ``R >= threshold`` (physical units) and ``zerovalue`` (dB) below it; back: ``10 ** (dB / 10)``, and 0 below
     the threshold;
   - ``{"kind": "log", "offset": 0.01}``: ``log(R + offset)``; back: ``exp(y) - offset``, floored at 0;
   - ``None`` (or ``{"kind": "linear"}``): nothing, as for VIL levels;
2. a linear map of the declared range ``value_range = (lo, hi)`` of the transformed values to [0, 1].

Data sets, pipelines, knowledge controls, trainers, evaluation and the demo map between the two through the
functions here only, so the maps cannot drift apart (one clamping, another computing in another precision). They
work on numpy arrays, torch tensors and plain numbers alike, keep NaN (outside a radar's domain) as NaN, and import
numpy or torch only for values of those types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "VALUE_TRANSFORMS",
    "check_value_transform",
    "from_transformed",
    "to_physical",
    "to_intensity_unit",
    "to_transformed",
    "to_unit",
]

Values = TypeVar("Values")

#: The value transforms and their parameters with defaults (pysteps' dB defaults: 0.1 mm/h, threshold - 5 dB).
VALUE_TRANSFORMS: dict[str, dict[str, float]] = {
    "linear": {},
    "db": {"threshold": 0.1, "zerovalue": -15.0},
    "log": {"offset": 0.01},
}


def check_value_transform(transform: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A value transform with its defaults filled in, ``None`` for the linear one; a clear error otherwise.

    Args:
        transform: ``None``, or a mapping with ``"kind"`` one of [`VALUE_TRANSFORMS`] and that kind's parameters.
    """
    if transform is None:
        return None
    if not isinstance(transform, Mapping):
        raise TypeError(f"value_transform must be a mapping such as {{'kind': 'db'}} or None, got {transform!r}")
    kind = transform.get("kind")
    if kind not in VALUE_TRANSFORMS:
        raise ValueError(f"value_transform kind must be one of {sorted(VALUE_TRANSFORMS)}, got {kind!r}")
    unknown = sorted(set(transform) - {"kind"} - set(VALUE_TRANSFORMS[kind]))
    if unknown:
        raise ValueError(f"value_transform {kind!r} takes {sorted(VALUE_TRANSFORMS[kind])}; unknown: {unknown}")
    if kind == "linear":
        return None
    checked: dict[str, Any] = {"kind": kind}
    for name, default in VALUE_TRANSFORMS[kind].items():
        value = transform.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"value_transform {kind!r}: {name} must be a finite number, got {value!r}")
        checked[name] = float(value)
    if kind == "db" and checked["threshold"] <= 0:
        raise ValueError(f"value_transform 'db': threshold must be > 0 (physical units), got {checked['threshold']}")
    if kind == "db" and checked["zerovalue"] > 10.0 * math.log10(checked["threshold"]):
        raise ValueError(
            f"value_transform 'db': zerovalue {checked['zerovalue']} dB must not exceed the threshold's "
            f"{10.0 * math.log10(checked['threshold']):.3g} dB"
        )
    if kind == "log" and checked["offset"] <= 0:
        raise ValueError(f"value_transform 'log': offset must be > 0 (physical units), got {checked['offset']}")
    return checked


class _Ops:
    """The few elementwise functions the transforms need, for torch tensors, numpy arrays and numbers."""

    def __init__(self, values: Any):
        if type(values).__module__.split(".")[0] == "torch":
            import torch

            self.lib, self.where, self.isnan = torch, torch.where, torch.isnan
            self.maximum = lambda x, floor: x.clamp_min(floor)
        else:
            import numpy as np

            self.lib, self.where, self.isnan = np, np.where, np.isnan
            self.maximum = np.maximum
        self.scalar = isinstance(values, int | float)

    def done(self, values: Any) -> Any:
        return float(values) if self.scalar else values


def to_transformed(values: Values, transform: Mapping[str, Any] | None) -> Values:
    """Physical units -> transformed values (dB, log), keeping type, dtype and device; NaN stays NaN."""
    transform = check_value_transform(transform)
    if transform is None:
        return values
    ops = _Ops(values)
    x = ops.lib.asarray(values, dtype=ops.lib.float64) if ops.scalar else values
    if transform["kind"] == "db":
        threshold = transform["threshold"]
        decibels = 10.0 * ops.lib.log10(ops.maximum(x, threshold))
        # NaN >= threshold is False: keep NaN explicitly instead of turning it into dry zerovalue.
        out = ops.where(x >= threshold, decibels, ops.where(ops.isnan(x), x, transform["zerovalue"]))
    else:
        out = ops.lib.log(ops.maximum(x, 0.0) + transform["offset"])  # maximum keeps NaN
    return ops.done(out)


def from_transformed(values: Values, transform: Mapping[str, Any] | None) -> Values:
    """Transformed values -> physical units, the inverse of [`to_transformed`] above its threshold: a dB value
    below the threshold's becomes 0, a log value below ``log(offset)`` becomes 0. NaN stays NaN."""
    transform = check_value_transform(transform)
    if transform is None:
        return values
    ops = _Ops(values)
    y = ops.lib.asarray(values, dtype=ops.lib.float64) if ops.scalar else values
    if transform["kind"] == "db":
        rate = ops.lib.exp(y * (math.log(10.0) / 10.0))
        out = ops.where(rate < transform["threshold"], 0.0, rate)  # NaN < threshold is False: NaN stays
    else:
        out = ops.maximum(ops.lib.exp(y) - transform["offset"], 0.0)  # maximum keeps NaN
    return ops.done(out)


def _bounds(value_range: Any) -> tuple[float, float]:
    # Python floats: numpy and torch apply them in the array's own floating dtype (a float32 array stays
    # float32, bit for bit as with float32 bounds), where a numpy float64 bound would promote it.
    lo, hi = value_range
    return float(lo), float(hi)


def to_physical(values: Values, value_range: Any, transform: Mapping[str, Any] | None = None) -> Values:
    """[0, 1] -> physical units: ``values * (hi - lo) + lo``, then the inverse of the value transform, keeping the
    type, dtype and device of ``values``. Not clamped, as in the official code: without a transform, values
    outside [0, 1] stay outside the range."""
    lo, hi = _bounds(value_range)
    return from_transformed(values * (hi - lo) + lo, transform)


def to_unit(values: Values, value_range: Any, transform: Mapping[str, Any] | None = None) -> Values:
    """Physical units -> [0, 1]: the value transform, then ``(values - lo) / (hi - lo)``, keeping the type, dtype
    and device of ``values``. Not clamped: values outside the range land outside [0, 1]."""
    lo, hi = _bounds(value_range)
    return (to_transformed(values, transform) - lo) / (hi - lo)


def to_intensity_unit(values: Values, value_range: Any, transform: Mapping[str, Any] | None = None) -> Values:
    """Physical units -> [0, 1] linearly between the physical ends of the range (``to_physical`` of 0 and 1),
    keeping the type of ``values``; equal to [`to_unit`] without a transform.

    Mean intensities are taken on this scale: the mean of rain rate in dB is not the dB of the mean rain rate,
    and an anticipated mean rain rate is a mean in mm/h.
    """
    low, high = (float(to_physical(end, value_range, transform)) for end in (0.0, 1.0))
    return (values - low) / (high - low)
