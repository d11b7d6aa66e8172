"""Argument checks shared by every part of prediff: counts, seeds, indices, value ranges and arrays of frames.

A bad argument should fail at once with a message naming it, what was expected and what was given, the same
message wherever it is given: data sets, pipelines, metrics, baselines, pictures and commands check through these
functions. Nothing here imports torch: a torch tensor is recognised only once torch is loaded, as none can exist
before.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_array",
    "check_index",
    "check_int",
    "check_positive_int",
    "check_seed",
    "check_value_range",
    "holds_real_numbers",
    "is_tensor",
    "to_numpy",
]


# ---------------------------------------------------------------------------------------------- numbers


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer (Python or numpy, not a bool) >= ``minimum``.

    The message says "a positive integer" for ``minimum=1`` and "a non-negative integer" for ``minimum=0``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer >= 1 (a count or a size)."""
    return check_int(name, value, minimum=1)


def check_seed(value: Any, name: str = "seed") -> int:
    """Seeds are non-negative integers (they feed ``numpy.random.SeedSequence``)."""
    return check_int(name, value, minimum=0)


def check_index(index: Any, length: int, what: str = "windows") -> int:
    """An index in ``[-length, length)`` of a data set of ``length`` ``what`` (windows, sequences) as a
    non-negative int; ``TypeError`` / ``IndexError`` otherwise, as Python's sequences raise."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an integer, got {type(index).__name__}")
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} {what}")
    return int(index)


def check_value_range(value: Any, name: str = "value_range") -> tuple[float, float]:
    """A declared physical range ``(low, high)`` as two floats, finite with ``low < high``: the values mapped
    to 0 and 1 (see [`~prediff.utils.units`]), which an empty or reversed range would make meaningless."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"{name} must be finite with low < high, got {value!r}")
    return low, high


def check_intensity_growth(value: Any, name: str = "max_intensity_growth") -> float | None:
    """A cap on forecast intensity relative to the context's last frame: None, or a finite number of at least 1
    (below 1 the cap would forbid the context's own intensity)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise ValueError(f"{name} must be None or a finite number of at least 1, got {value!r}")
    return float(value)


def check_event_probability(value: Any, name: str = "event_probability") -> float | None:
    """An exceedance probability of event forecasts: None, or a number in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def check_cap_radius(radius_km: Any, pixel_size_km: float | None) -> float | None:
    """`intensity_cap_radius_km`: None (the cap of the whole frame) or a positive distance, which needs the
    pipeline's `pixel_size_km` to become pixels."""
    if radius_km is None:
        return None
    if isinstance(radius_km, bool) or not isinstance(radius_km, (int, float)) or not math.isfinite(radius_km):
        raise ValueError(f"intensity_cap_radius_km must be None or a positive number, got {radius_km!r}")
    if radius_km <= 0:
        raise ValueError(f"intensity_cap_radius_km must be None or a positive number, got {radius_km!r}")
    if pixel_size_km is None:
        raise ValueError(
            "intensity_cap_radius_km needs the pipeline's pixel_size_km, which is not recorded; record the grid "
            "or leave the radius None (the cap of the whole frame)"
        )
    return float(radius_km)


# ---------------------------------------------------------------------------------------------- arrays


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch: none exists before torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def holds_real_numbers(values: Any) -> bool:
    """Whether a numpy array or torch tensor holds integers or floats (not bools, complex numbers, strings or
    Python objects), the values every frame of prediff is made of."""
    if is_tensor(values):
        return values.dtype != sys.modules["torch"].bool and not values.is_complex()
    return isinstance(values, np.ndarray) and values.dtype.kind in "iuf"


def to_numpy(values: Any) -> np.ndarray:
    """A torch tensor as a numpy array on the CPU (bfloat16, which numpy lacks, as float32), anything else
    through ``numpy.asarray``."""
    if is_tensor(values):
        values = values.detach().cpu()
        if values.dtype == sys.modules["torch"].bfloat16:
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def check_array(
    name: str,
    value: Any,
    ndim: int | Collection[int] | None = None,
    layout: str | None = None,
    sizes: Sequence[int | None] | None = None,
    real: bool = True,
    finite: bool = True,
    to: str | None = None,
) -> Any:
    """Check an array of frames (a context, a forecast, a target, an ensemble) given as a numpy array or a
    torch tensor, and return it, converted when ``to`` says so.

    Pipelines, metrics, baselines and pictures take the same kinds of arrays; checked here, they refuse the same
    mistakes with the same messages, each naming ``name``.

    Args:
        name: what the messages call the array (``"context"``, ``"pred"``).
        ndim: the number of dimensions it must have, or the numbers it may have; None: any.
        layout: what the dimension message says is expected, e.g. ``"shape (B, T_in, H, W, C)"``; default:
            ``"{ndim} dimensions"``.
        sizes: the size each axis must have (None: any), shown after ``layout`` as ``= (?, 3, 32, 32, 1)``.
        real: refuse dtypes other than integers and floats.
        finite: refuse NaN and infinite values.
        to: ``"tensor"`` (a numpy array becomes a tensor sharing its memory where it can), ``"numpy"`` (see
            [`to_numpy`]) or None (returned as given).

    Raises:
        ValueError: ``"{name} must be a numpy array or a torch tensor"``, ``"... must hold real numbers"``,
            ``"... must have {layout}, got shape ..."``, ``"... contains NaN or infinite values"``.
    """
    tensor = is_tensor(value)
    if not (tensor or isinstance(value, np.ndarray)):
        of_layout = f" of {layout}" if layout is not None else ""
        raise ValueError(f"{name} must be a numpy array or a torch tensor{of_layout}, got {type(value).__name__}")
    if real and not holds_real_numbers(value):
        raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}")
    shape = tuple(value.shape)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    wrong_sizes = sizes is not None and any(e is not None and s != e for s, e in zip(shape, sizes))
    if (allowed is not None and len(shape) not in allowed) or wrong_sizes:
        expected = layout if layout is not None else f"{' or '.join(map(str, sorted(allowed or ())))} dimensions"
        if sizes is not None:
            expected += " = (" + ", ".join("?" if v is None else str(v) for v in sizes) + ")"
        raise ValueError(f"{name} must have {expected}, got shape {shape}")
    if finite:
        torch = sys.modules.get("torch")
        all_finite = torch.isfinite(value).all() if tensor else np.isfinite(value).all()
        if not all_finite:
            raise ValueError(f"{name} contains NaN or infinite values")
    if to == "numpy":
        return to_numpy(value)
    if to == "tensor" and not tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(value))
    return value
