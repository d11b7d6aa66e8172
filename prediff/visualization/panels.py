"""A forecast panel: context, observation, ensemble members and ensemble mean, one row each, by lead time."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._utils import add_colorbar, as_frames, lead_time_labels, new_figure, save_figure
from .colormaps import LEVEL_MAPS, imshow_kwargs


def _draw_row(axes_row: Any, frames: np.ndarray | None, titles: list[str], label: str, style: dict) -> Any:
    image = None
    for col, ax in enumerate(axes_row):
        ax.set_xticks([])
        ax.set_yticks([])
        if frames is None or col >= len(frames):
            ax.set_axis_off()
            continue
        image = ax.imshow(frames[col], interpolation="nearest", **style)
        ax.set_title(titles[col], fontsize=8)
        if col == 0:
            ax.set_ylabel(label, fontsize=9)
    return image


def plot_forecast_panel(
    context: Any,
    target: Any | None = None,
    ensemble: Any | None = None,
    *,
    max_members: int = 4,
    show_mean: bool = True,
    interval_minutes: float = 10.0,
    channel: int = 0,
    cmap: str = "vil",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Any:
    """Draw one sample's forecast as a grid: one row per sequence, one column per frame.

    Rows, top to bottom: the context, the observed future (if ``target``), the first ``max_members``
    members and the ensemble mean (if ``ensemble``). Context columns are titled ``-20 min`` ... ``0 min``
    (0 = the last observation), forecast columns ``+10 min`` ... at ``interval_minutes`` per frame.

    Args:
        context: ``(T_in, H, W)`` or ``(T_in, H, W, C)``, numpy or torch.
        target: ``(T_out, H, W[, C])`` observed future, optional.
        ensemble: ``(M, T_out, H, W[, C])`` forecast members (a deterministic forecast: ``M = 1``), optional.
        max_members: members to draw (the mean uses all of them).
        show_mean: add the ensemble-mean row when there are several members.
        channel: channel drawn when inputs have a channel axis.
        cmap: ``"vil"`` (SEVIR VIL levels, 0-255 data), ``"rainrate"`` (mm/h, pysteps' levels) or a matplotlib
            colour map name.
        vmin, vmax: colour range for a named map (default: the range over all drawn frames).
        title: figure title.
        path: if given, the figure is also written there (``.png``, ``.pdf`` or ``.svg``), atomically.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    ctx = as_frames("context", context, 1, channel)
    tgt = None if target is None else as_frames("target", target, 1, channel)
    ens = None if ensemble is None else as_frames("ensemble", ensemble, 2, channel)
    if max_members < 0:
        raise ValueError(f"max_members must be >= 0, got {max_members}")
    shapes = {"context": ctx.shape[-2:]}
    if tgt is not None:
        shapes["target"] = tgt.shape[-2:]
    if ens is not None:
        shapes["ensemble"] = ens.shape[-2:]
        if tgt is not None and ens.shape[1] != tgt.shape[0]:
            raise ValueError(f"ensemble has {ens.shape[1]} lead times but target has {tgt.shape[0]}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"frame sizes differ: { {k: tuple(v) for k, v in shapes.items()} }")

    rows: list[tuple[str, np.ndarray, bool]] = [("Context", ctx, False)]
    if tgt is not None:
        rows.append(("Observed", tgt, True))
    if ens is not None:
        members = ens[:max_members]
        for m, member in enumerate(members):
            rows.append((f"Member {m + 1}" if len(ens) > 1 else "Forecast", member, True))
        if show_mean and len(ens) > 1:
            rows.append((f"Mean of {len(ens)}", ens.mean(axis=0), True))
    num_forecast = max((len(f) for _, f, future in rows if future), default=0)
    context_titles, forecast_titles = lead_time_labels(len(ctx), num_forecast, interval_minutes)

    if cmap not in LEVEL_MAPS and vmin is None and vmax is None:
        vmin = min(float(np.nanmin(f)) for _, f, _ in rows)
        vmax = max(float(np.nanmax(f)) for _, f, _ in rows)
    style = imshow_kwargs(cmap, vmin, vmax)
    num_cols = max(len(f) for _, f, _ in rows)
    fig = new_figure(1.45 * num_cols + 1.2, 1.5 * len(rows) + (0.4 if title else 0.1))
    axes = fig.subplots(len(rows), num_cols, squeeze=False)
    image = None
    for (label, frames, future), axes_row in zip(rows, axes):
        drawn = _draw_row(axes_row, frames, forecast_titles if future else context_titles, label, style)
        image = drawn if drawn is not None else image
    add_colorbar(fig, image, axes, cmap)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig
