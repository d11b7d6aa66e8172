"""The SEVIR verification settings of Earthformer and PreDiff, in a module without torch: the command line shows
them in its help without loading the metrics."""

from __future__ import annotations

__all__ = ["RAIN_RATE_THRESHOLDS", "SEVIR_POOL_SIZES", "SEVIR_THRESHOLDS", "default_thresholds"]

#: SEVIR VIL thresholds (0-255 units) used by Earthformer and PreDiff.
SEVIR_THRESHOLDS: tuple[float, ...] = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)
#: Max-pooling sizes of the pooled CSI variants (1 = no pooling).
SEVIR_POOL_SIZES: tuple[int, ...] = (1, 4, 16)
#: Rain-rate thresholds (mm/h) of radar nowcasting verification, as pysteps' examples use them.
RAIN_RATE_THRESHOLDS: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0)


def default_thresholds(value_transform: dict | None) -> tuple[float, ...]:
    """The event thresholds for a pipeline's units: rain rate in mm/h for a pipeline with a value transform (a
    rain-rate pipeline), else the SEVIR VIL thresholds."""
    return RAIN_RATE_THRESHOLDS if value_transform is not None else SEVIR_THRESHOLDS
