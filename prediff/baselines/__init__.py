"""Reference forecasts to compare a model with: persistence, optical-flow extrapolation and STEPS.

Every baseline takes a context ``(B, T_in, H, W, C)`` (numpy or torch) and a number of frames; deterministic
ones return ``(B, T_out, H, W, C)``, ensembles ``(B, M, T_out, H, W, C)``, of the context's type and device.
``extrapolation`` and ``steps`` need pysteps (``pip install "prediff[pysteps]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .optical_flow import estimate_motion, extrapolation, steps
from .persistence import persistence

_BASELINES: dict[str, Callable[..., Any]] = {
    "persistence": persistence,
    "extrapolation": extrapolation,
    "steps": steps,
}


def get_baseline(name: str) -> Callable[..., Any]:
    """The baseline forecast function called ``name``: "persistence", "extrapolation" or "steps"."""
    if name not in _BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(_BASELINES)}")
    return _BASELINES[name]


__all__ = ["estimate_motion", "extrapolation", "get_baseline", "persistence", "steps"]
