"""Defaults of knowledge control that need no torch: the command line shows them in its help without loading
the controls."""

from __future__ import annotations

__all__ = ["CONTROL_METHODS", "DEFAULT_CONTROL_METHOD", "DEFAULT_CONTROL_SCALE", "control_method"]

#: The default strength: with the default form "x0", the whole Gauss-Newton step at every denoising step.
DEFAULT_CONTROL_SCALE = 1.0

#: How the anticipated-intensity control measures a forecast's intensity: "learned" with the pipeline's
#: knowledge-alignment network, "analytic" by decoding the clean estimate (see
#: [`~prediff.knowledge.AnticipatedIntensityControl`]).
CONTROL_METHODS = ("learned", "analytic")
#: The method used unless one is chosen: exact and needing no trained network.
DEFAULT_CONTROL_METHOD = "analytic"


def control_method(method: str | None = None) -> str:
    """The anticipated-intensity control's method: `method` where one was chosen (`--control-method`), else
    [`DEFAULT_CONTROL_METHOD`]. The forecast and evaluate commands and the controls all take it from here, so
    that an unchosen method means the same everywhere; the controls check the value."""
    return DEFAULT_CONTROL_METHOD if method is None else method
