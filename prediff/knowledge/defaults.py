"""Defaults of knowledge control that need no torch: the command line shows them in its help without loading
the controls."""

from __future__ import annotations

__all__ = ["DEFAULT_CONTROL_SCALE"]

#: The default strength: with the default form "x0", the whole Gauss-Newton step at every denoising step.
DEFAULT_CONTROL_SCALE = 1.0
