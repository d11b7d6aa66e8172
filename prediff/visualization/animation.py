"""Animated GIF of a forecast: observation, members and mean side by side, frame by frame."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_output
from ._utils import add_colorbar, as_frames, lead_time_labels, new_figure
from .colormaps import LEVEL_MAPS, imshow_kwargs


def _render(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_forecast_gif(
    path: str | os.PathLike,
    context: Any,
    target: Any | None = None,
    ensemble: Any | None = None,
    *,
    max_members: int = 3,
    show_mean: bool = True,
    interval_minutes: float = 10.0,
    frame_duration_ms: int = 400,
    channel: int = 0,
    cmap: str = "vil",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    dpi: int = 80,
) -> Path:
    """Write an animated GIF that plays the context, then the forecast.

    Panels, left to right: the observation (context, then ``target`` if given), the first ``max_members``
    members and the ensemble mean. During the context every panel shows the observed frame the forecast
    starts from; the heading gives the time (``-20 min`` ... ``0 min``, then ``+10 min`` ...).

    Args:
        path: output ``.gif`` file (written atomically).
        context: ``(T_in, H, W[, C])``; target: ``(T_out, H, W[, C])``; ensemble: ``(M, T_out, H, W[, C])``.
        frame_duration_ms: display time of every frame; the animation loops.
        Other arguments as in :func:`plot_forecast_panel`.

    Returns:
        The path written. Needs Pillow (``pip install "prediff[plot]"``).
    """
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise ImportError('Animated GIFs need Pillow: pip install "prediff[plot]"') from err
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"path must end in .gif, got {str(path)!r}")
    if frame_duration_ms < 1:
        raise ValueError(f"frame_duration_ms must be >= 1, got {frame_duration_ms}")
    ctx = as_frames("context", context, 1, channel)
    tgt = None if target is None else as_frames("target", target, 1, channel)
    ens = None if ensemble is None else as_frames("ensemble", ensemble, 2, channel)
    if tgt is None and ens is None:
        raise ValueError("give a target, an ensemble or both: there is nothing to animate after the context")
    num_forecast = len(tgt) if tgt is not None else ens.shape[1]
    if ens is not None and ens.shape[1] != num_forecast:
        raise ValueError(f"ensemble has {ens.shape[1]} lead times but target has {num_forecast}")
    if any(x is not None and x.shape[-2:] != ctx.shape[-2:] for x in (tgt, ens)):
        raise ValueError("context, target and ensemble frames must have the same height and width")

    panels: list[tuple[str, np.ndarray | None]] = []
    if tgt is not None:
        panels.append(("Observed", tgt))
    if ens is not None:
        for m in range(min(max_members, len(ens))):
            panels.append((f"Member {m + 1}" if len(ens) > 1 else "Forecast", ens[m]))
        if show_mean and len(ens) > 1:
            panels.append((f"Mean of {len(ens)}", ens.mean(axis=0)))
    if cmap not in LEVEL_MAPS and vmin is None and vmax is None:
        vmin = min(float(np.nanmin(ctx)), *(float(np.nanmin(p)) for _, p in panels))
        vmax = max(float(np.nanmax(ctx)), *(float(np.nanmax(p)) for _, p in panels))
    style = imshow_kwargs(cmap, vmin, vmax)
    context_titles, forecast_titles = lead_time_labels(len(ctx), num_forecast, interval_minutes)

    fig = new_figure(2.0 * len(panels) + 1.0, 2.5)
    fig.set_dpi(dpi)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    images = []
    for ax, (label, _) in zip(axes, panels):
        images.append(ax.imshow(ctx[0], interpolation="nearest", **style))
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    add_colorbar(fig, images[0], axes, cmap)
    heading = fig.suptitle("")

    frames = []
    for t in range(len(ctx)):
        for image in images:
            image.set_data(ctx[t])
        heading.set_text(f"{title + ': ' if title else ''}context {context_titles[t]}")
        frames.append(_render(fig))
    for t in range(num_forecast):
        for image, (_, seq) in zip(images, panels):
            image.set_data(seq[t])
        heading.set_text(f"{title + ': ' if title else ''}forecast {forecast_titles[t]}")
        frames.append(_render(fig))

    pictures = [Image.fromarray(frame) for frame in frames]
    # One shared adaptive palette keeps the VIL colours stable from frame to frame.
    palette = pictures[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    quantized = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]

    # Like a figure, an animation is never the first thing in its folder (see `save_figure`).
    with atomic_output(path, overwrite=True, make_parents=False) as tmp:
        quantized[0].save(
            tmp, format="GIF", save_all=True, append_images=quantized[1:], duration=frame_duration_ms, loop=0
        )
    return path
