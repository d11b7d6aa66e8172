"""The intensity cap: a calibration of rain-rate ensembles.

A dB-space error of a few dB is a factor of several in mm/h, so a member that grows a cell far beyond anything in
its context costs much more in mm/h than it ever gains. A pipeline that records `max_intensity_growth` caps every
member at that multiple of the maximum of its context's last frame: of the whole frame, or, with
`intensity_cap_radius_km`, of the neighbourhood within that distance of each pixel (a square of side 2r + 1
pixels), so that a dry corner of a domain cannot grow the intensity of a storm at its other end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["intensity_cap", "radius_in_pixels"]


def radius_in_pixels(radius_km: float | None, pixel_size_km: float | None) -> int | None:
    """The radius rounded to whole pixels (None: the whole frame)."""
    if radius_km is None:
        return None
    return int(round(radius_km / pixel_size_km))


def intensity_cap(last_frame: torch.Tensor, growth: float, radius_px: int | None) -> torch.Tensor:
    """The highest value each pixel's forecast may take.

    Args:
        last_frame: `(B, H, W, C)` the last context frame in physical units; NaN outside the radar domain.
        growth: `max_intensity_growth`, at least 1.
        radius_px: the neighbourhood's radius in pixels; None: the maximum of the whole frame.

    Returns:
        `(B, H, W)` the cap, `growth` times the maximum over the channels and the neighbourhood (-inf where the
        neighbourhood lies wholly outside the domain).
    """
    peak = last_frame.float().nan_to_num(nan=-math.inf).amax(dim=-1)
    if radius_px is None:
        local = peak.amax(dim=(1, 2), keepdim=True).expand_as(peak)
    else:
        local = F.max_pool2d(peak[:, None], kernel_size=2 * radius_px + 1, stride=1, padding=radius_px)[:, 0]
    return local * growth
