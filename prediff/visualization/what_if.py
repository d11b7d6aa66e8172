"""PreDiff's "what-if" figure: the same context forecast under different anticipated storm intensities.

PreDiff's knowledge control lets a forecaster ask "what if the coming hour is as intense as ``mu + n sigma``
of the usual future average intensity?" (``n`` in -4, -2, 0, 2, 4 in the paper). This figure shows the
context, the observed future, optionally the forecast without control, and one row per anticipated value,
labelled with ``n``, the anticipated value and the mean intensity the forecast actually reached.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._utils import add_colorbar, as_frames, lead_time_labels, new_figure, save_figure
from .colormaps import LEVEL_MAPS, imshow_kwargs

#: Anticipated intensities of PreDiff's what-if study, in standard deviations from the mean.
DEFAULT_N_SIGMAS: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)


def sigma_label(n: float) -> str:
    """``-4 -> "μ − 4σ"``, ``0 -> "μ"``, ``2 -> "μ + 2σ"``."""
    if n == 0:
        return "μ"
    return f"μ {'+' if n > 0 else '−'} {abs(n):g}σ"


def plot_what_if(
    context: Any,
    forecasts: Mapping[float, Any] | Sequence[Any] | Any,
    *,
    n_sigmas: Sequence[float] = DEFAULT_N_SIGMAS,
    mu: float | None = None,
    sigma: float | None = None,
    target: Any | None = None,
    uncontrolled: Any | None = None,
    num_context: int | None = None,
    interval_minutes: float = 10.0,
    channel: int = 0,
    cmap: str = "vil",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Any:
    """Draw the what-if figure for one sample.

    Args:
        context: ``(T_in, H, W[, C])``.
        forecasts: one forecast ``(T_out, H, W[, C])`` per anticipated intensity: a mapping ``n -> forecast``
            (its keys replace ``n_sigmas``), a sequence aligned with ``n_sigmas``, or an array
            ``(len(n_sigmas), T_out, H, W[, C])``.
        n_sigmas: the ``n`` of each anticipated intensity ``mu + n * sigma``.
        mu, sigma: mean and standard deviation of the future average intensity over the training data, in
            data units; when given, rows show the anticipated value.
        target: observed future ``(T_out, H, W[, C])``, optional.
        uncontrolled: forecast without knowledge control ``(T_out, H, W[, C])``, optional.
        num_context: how many of the last context frames to draw (default: all).
        Other arguments as in :func:`plot_forecast_panel`.

    Returns:
        The ``matplotlib.figure.Figure`` (also written to ``path`` if given).
    """
    if isinstance(forecasts, Mapping):
        n_sigmas = [float(n) for n in forecasts]
        items = list(forecasts.values())
    elif isinstance(forecasts, (list, tuple)):
        items = list(forecasts)
    else:
        stacked = as_frames("forecasts", forecasts, 2, channel)
        items = list(stacked)
    if len(items) != len(n_sigmas) or len(items) == 0:
        raise ValueError(f"forecasts has {len(items)} entries but n_sigmas has {len(n_sigmas)}: {tuple(n_sigmas)}")
    if (mu is None) != (sigma is None):
        raise ValueError(f"give both mu and sigma or neither, got mu={mu}, sigma={sigma}")
    rows_data = [as_frames(f"forecasts[{i}]", f, 1, channel) for i, f in enumerate(items)]
    ctx = as_frames("context", context, 1, channel)
    if num_context is not None:
        if not 1 <= num_context <= len(ctx):
            raise ValueError(f"num_context must be in [1, {len(ctx)}], got {num_context}")
        ctx = ctx[-num_context:]
    tgt = None if target is None else as_frames("target", target, 1, channel)
    unc = None if uncontrolled is None else as_frames("uncontrolled", uncontrolled, 1, channel)
    num_forecast = rows_data[0].shape[0]
    for name, seq in [("target", tgt), ("uncontrolled", unc)] + [
        (f"forecasts[{i}]", r) for i, r in enumerate(rows_data)
    ]:
        if seq is not None and (seq.shape[0] != num_forecast or seq.shape[1:] != ctx.shape[1:]):
            raise ValueError(
                f"{name} has shape {seq.shape}; expected ({num_forecast}, {ctx.shape[1]}, {ctx.shape[2]})"
            )

    rows: list[tuple[str, np.ndarray, bool]] = [("Context", ctx, False)]
    if tgt is not None:
        rows.append((f"Observed\nmean {tgt.mean():.1f}", tgt, True))
    if unc is not None:
        rows.append((f"No control\nmean {unc.mean():.1f}", unc, True))
    for n, seq in zip(n_sigmas, rows_data):
        label = sigma_label(n)
        if mu is not None:
            label += f" = {mu + n * sigma:.1f}"
        rows.append((f"{label}\nmean {seq.mean():.1f}", seq, True))

    if cmap not in LEVEL_MAPS and vmin is None and vmax is None:
        vmin = min(float(np.nanmin(f)) for _, f, _ in rows)
        vmax = max(float(np.nanmax(f)) for _, f, _ in rows)
    style = imshow_kwargs(cmap, vmin, vmax)
    context_titles, forecast_titles = lead_time_labels(len(ctx), num_forecast, interval_minutes)
    num_cols = max(len(ctx), num_forecast)
    fig = new_figure(1.45 * num_cols + 1.6, 1.5 * len(rows) + (0.4 if title else 0.1))
    axes = fig.subplots(len(rows), num_cols, squeeze=False)
    image = None
    for (label, frames, future), axes_row in zip(rows, axes):
        titles = forecast_titles if future else context_titles
        for col, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(frames):
                ax.set_axis_off()
                continue
            image = ax.imshow(frames[col], interpolation="nearest", **style)
            ax.set_title(titles[col], fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    add_colorbar(fig, image, axes, cmap)
    fig.suptitle(title or "Knowledge control: forecasts for an anticipated mean intensity μ + nσ")
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig
