"""Reference forecasts to compare a model with: persistence, optical-flow extrapolation and STEPS.

Every baseline takes a context ``(B, T_in, H, W, C)`` (numpy or torch) and a number of frames; deterministic
ones return ``(B, T_out, H, W, C)``, ensembles ``(B, M, T_out, H, W, C)``, of the context's type and device.
``extrapolation`` and ``steps`` need pysteps (``pip install "prediff[pysteps]"``).
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .optical_flow import estimate_motion, extrapolation, steps
    from .persistence import persistence
    from .registry import get_baseline

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".optical_flow": ["estimate_motion", "extrapolation", "steps"],
        ".persistence": ["persistence"],
        ".registry": ["get_baseline"],
    },
)

__all__ = ["estimate_motion", "extrapolation", "get_baseline", "persistence", "steps"]
