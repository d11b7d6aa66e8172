"""What the pictures share: matplotlib import, frame conversion, figure saving, lead-time labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.checks import check_array
from ..utils.files import atomic_output


def require_matplotlib() -> Any:
    """Import matplotlib, or raise an ``ImportError`` that names the ``plot`` extra."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only without matplotlib
        raise ImportError('Pictures need matplotlib: pip install "prediff[plot]"') from err
    return matplotlib


def new_figure(width: float, height: float) -> Any:
    """A figure drawn by the Agg renderer, independent of pyplot and of the user's chosen backend."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def as_frames(name: str, value: Any, leading: int, channel: int = 0) -> np.ndarray:
    """``value`` as a float numpy array of ``leading`` leading axes then ``(H, W)``.

    Accepts numpy or torch, with or without a trailing channel axis (``channel`` picks one).
    E.g. ``leading=1``: ``(T, H, W)`` or ``(T, H, W, C)`` -> ``(T, H, W)``. Values are not checked (see
    [`~prediff.utils.checks.check_array`]): NaN shows as a blank pixel.
    """
    layout = f"{leading + 2} dimensions (+ an optional channel axis)"
    value = check_array(name, value, (leading + 2, leading + 3), layout, real=False, finite=False, to="numpy")
    if value.ndim == leading + 3:
        if not 0 <= channel < value.shape[-1]:
            raise ValueError(f"channel {channel} is out of range for {name} of shape {value.shape}")
        value = value[..., channel]
    return value.astype(np.float64)


def lead_time_labels(num_context: int, num_forecast: int, interval_minutes: float) -> tuple[list, list]:
    """Titles of the context frames (``-20 min`` ... ``0 min``) and the forecast frames (``+10 min`` ...)."""
    if not interval_minutes > 0:
        raise ValueError(f"interval_minutes must be > 0, got {interval_minutes}")
    context = [f"{-(num_context - 1 - t) * interval_minutes:g} min" for t in range(num_context)]
    forecast = [f"+{(t + 1) * interval_minutes:g} min" for t in range(num_forecast)]
    return context, forecast


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` atomically; the format follows the file extension (``.png``, ``.pdf``, ``.svg``).

    A picture is never the first thing in a folder: a missing folder is a mistyped path, not one to create
    (``make_parents=False``)."""
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ValueError(f"cannot write a figure as {fmt!r} ({path}); use .png, .pdf or .svg")
    with atomic_output(path, overwrite=True, make_parents=False) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return Path(path)


def add_colorbar(fig: Any, image: Any, axes: Any, cmap: str) -> None:
    """Colour bar of an image drawn with ``cmap``: the levels as ticks for a fixed-level map (VIL, rain rate)."""
    from .colormaps import LEVEL_MAPS

    if cmap not in LEVEL_MAPS:
        fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01)
        return
    levels, label = LEVEL_MAPS[cmap]
    bar = fig.colorbar(image, ax=axes, ticks=levels, shrink=0.9, pad=0.01, extend="neither")
    bar.ax.set_yticklabels([f"{level:g}" for level in levels])
    bar.set_label(label)
