"""The training distribution of the future mean intensity that a pipeline folder records, and the targets of
the anticipated-intensity knowledge control drawn from it (`mu + n sigma`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import INTENSITY_STATS_FILE

__all__ = ["intensity_target", "pipeline_intensity_stats"]


def pipeline_intensity_stats(pipeline: Any) -> tuple[float, float] | None:
    """`(mean, std)` of the future mean intensity over the pipeline's training data, in physical units, read
    from `future_intensity.json` in the folder the pipeline was loaded from; None when it has none."""
    name = pipeline.config.get("_name_or_path") if hasattr(pipeline, "config") else None
    if not name:
        return None
    path = Path(name) / INTENSITY_STATS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return float(record["mean"]), float(record["std"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} must hold numbers 'mean' and 'std' (physical units): {error}") from None


def intensity_target(
    pipeline: Any,
    target: float | None = None,
    n_sigma: float | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> tuple[float, str]:
    """The anticipated mean intensity (physical units) for the anticipated-intensity control, and where it
    came from.

    Either `target` itself, or `mean + n_sigma * std` with `mean`/`std` given or read from the pipeline's
    `future_intensity.json` ([`pipeline_intensity_stats`]).
    """
    if target is not None:
        if n_sigma is not None:
            raise ValueError(f"give either a target or n_sigma, not both (target={target}, n_sigma={n_sigma})")
        if not np.isfinite(target):
            raise ValueError(f"target must be a finite number, got {target}")
        return float(target), "target given"
    if n_sigma is None:
        raise ValueError("the intensity control needs a target: give --target VALUE or --n-sigma N")
    if (mean is None) != (std is None):
        raise ValueError(f"give both --intensity-mean and --intensity-std, got mean={mean}, std={std}")
    source = "given mean and std"
    if mean is None:
        stats = pipeline_intensity_stats(pipeline)
        if stats is None:
            raise ValueError(
                "n_sigma needs the training distribution of the future mean intensity: the pipeline folder "
                f"has no {INTENSITY_STATS_FILE}; give --intensity-mean and --intensity-std (physical units)"
            )
        mean, std = stats
        source = f"{INTENSITY_STATS_FILE} of the pipeline"
    if not std >= 0:
        raise ValueError(f"the intensity std must be >= 0, got {std}")
    return float(mean + n_sigma * std), f"mu + {n_sigma:g} sigma (mu={mean:.4g}, sigma={std:.4g}; {source})"
