"""The SEVIR verification settings of Earthformer and PreDiff, in a module without torch: the command line shows
them in its help without loading the metrics."""

from __future__ import annotations

__all__ = ["SEVIR_POOL_SIZES", "SEVIR_THRESHOLDS"]

#: SEVIR VIL thresholds (0-255 units) used by Earthformer and PreDiff.
SEVIR_THRESHOLDS: tuple[float, ...] = (16.0, 74.0, 133.0, 160.0, 181.0, 219.0)
#: Max-pooling sizes of the pooled CSI variants (1 = no pooling).
SEVIR_POOL_SIZES: tuple[int, ...] = (1, 4, 16)
