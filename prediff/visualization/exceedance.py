"""Exceedance-probability maps: the share of ensemble members at or above a threshold, e.g. P(R >= 1 mm/h)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._utils import as_frames, lead_time_labels, new_figure, save_figure


def exceedance_probability(ensemble: Any, threshold: float) -> np.ndarray:
    """`(T, H, W)` share of members `>= threshold` at every pixel of an ensemble `(M, T, H, W[, C])` (first
    channel); NaN where every member is NaN (outside the radar domain)."""
    members = np.asarray(ensemble, dtype=np.float32)
    if members.ndim == 5:
        members = members[..., 0]
    if members.ndim != 4 or members.shape[0] == 0:
        raise ValueError(f"ensemble must have shape (M, T, H, W) or (M, T, H, W, C), got {members.shape}")
    valid = ~np.isnan(members)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = ((members >= threshold) & valid).sum(axis=0) / counts
    return np.where(counts > 0, probability, np.nan).astype(np.float32)


def plot_exceedance(
    ensemble: Any,
    threshold: float = 1.0,
    units: str = "mm/h",
    interval_minutes: float = 10.0,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 100,
) -> Any:
    """One row of maps, one per lead time, of the probability that the forecast reaches `threshold`.

    Args:
        ensemble: `(M, T, H, W[, C])` members in physical units (NaN outside the domain, drawn grey).
        threshold: the value to reach, in `units`.
        units: for the title and colour bar.
        interval_minutes: time between frames, for the lead-time labels.
        title: figure title (default names the threshold and the member count).
        path: write the figure there (`.png`, `.pdf`, `.svg`), atomically.

    Returns:
        The matplotlib `Figure`.
    """
    ensemble = as_frames("ensemble", ensemble, 2)
    probability = exceedance_probability(ensemble, threshold)
    T = probability.shape[0]
    _, labels = lead_time_labels(0, T, interval_minutes)
    fig = new_figure(1.45 * T + 1.8, 1.9)  # room for the colour bar's label
    axes = fig.subplots(1, T, squeeze=False)[0]
    from matplotlib import colormaps

    cmap = colormaps["Blues"].with_extremes(bad="#d9d9d9")
    image = None
    for ax, frame, label in zip(axes, probability, labels):
        image = ax.imshow(frame, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01)
    bar.set_label(f"P(≥ {threshold:g} {units})")
    fig.suptitle(title or f"Probability of at least {threshold:g} {units} ({len(np.asarray(ensemble))} members)")
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig
