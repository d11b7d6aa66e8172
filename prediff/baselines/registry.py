"""Baselines by name: ``get_baseline("steps")``.

A module of its own, not the package ``__init__``, so that importing the package loads no baseline (and no
torch) until one is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .optical_flow import extrapolation, steps
from .persistence import persistence

__all__ = ["get_baseline"]

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
