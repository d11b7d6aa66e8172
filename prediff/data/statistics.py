"""Statistics over data sets: the distribution of the future mean intensity, which the anticipated-intensity
knowledge control targets as `mu + n sigma`."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..utils.checks import check_positive_int

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["IntensityStats", "future_intensity_stats"]


class IntensityStats(NamedTuple):
    """Distribution of the mean intensity of the future frames over a data set, in scaled [0, 1] units.

    Knowledge control asks for "mu + n sigma" targets; ``target(n)`` gives them.
    """

    mean: float
    std: float

    def target(self, n_sigma: float) -> float:
        """The anticipated future mean intensity ``mean + n_sigma * std`` (scaled [0, 1] units)."""
        return float(self.mean + n_sigma * self.std)


def future_intensity_stats(
    dataset: Dataset, context_length: int, max_items: int | None = None, progress: bool = False
) -> IntensityStats:
    """Mean and standard deviation (ddof 0) over items of ``frames[context_length:].mean()``.

    Works with any data set whose items are dicts holding ``"frames"`` of shape (T, H, W, C) in [0, 1].
    ``max_items`` limits the computation to the first items (all by default).
    """
    context_length = check_positive_int("context_length", context_length)
    count = len(dataset) if max_items is None else min(len(dataset), check_positive_int("max_items", max_items))
    if count == 0:
        raise ValueError("future_intensity_stats needs a non-empty dataset")
    from tqdm.auto import tqdm

    values = np.empty(count, dtype=np.float64)
    for i in tqdm(range(count), desc="future intensity", disable=not progress):
        frames = dataset[i]["frames"]
        if frames.shape[0] <= context_length:
            raise ValueError(
                f"context_length must be smaller than the sequence length {frames.shape[0]}, got {context_length}"
            )
        values[i] = float(frames[context_length:].double().mean())
    return IntensityStats(float(values.mean()), float(values.std()))
