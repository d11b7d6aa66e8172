"""Forecast verification: categorical, continuous, probabilistic, spatial, ENSO and knowledge-control scores.

Every score exists as an accumulating object (``update(pred, target)`` per batch, ``compute()`` at the end,
``compute(per_lead_time=True)`` for one value per lead time) and as a function of one batch. Forecasts and
observations are channels-last ``(B, T, H, W, C)``, ensembles ``(B, M, T, H, W, C)``, numpy arrays or torch
tensors, in the units of the data (0-255 for SEVIR VIL). ``get_metric(name, **kwargs)`` builds a metric
by name, as pysteps' ``get_method`` does.
"""

from __future__ import annotations

from typing import Any

from ._base import SEVIR_POOL_SIZES, SEVIR_THRESHOLDS, Metric
from .categorical import (
    CategoricalScore,
    categorical_scores,
    contingency_counts,
    csi,
    frequency_bias,
    max_pool_frames,
    pod,
    sucr,
)
from .continuous import ContinuousScore, mae, mse, ssim, ssim_per_frame
from .enso import Nino34Score, nino34_index, nino34_lead_weights, nino34_skill
from .knowledge import (
    EnergyConservationError,
    KnowledgeControlError,
    knowledge_control_error,
    max_intensity,
    mean_intensity,
)
from .probabilistic import (
    EnsembleCRPS,
    RankHistogram,
    SpreadSkill,
    crps_ensemble,
    crps_ensemble_elementwise,
    ensemble_ranks,
    rank_histogram,
    spread_skill_ratio,
)
from .spatial import FractionsSkillScore, fss

_METRICS: dict[str, tuple[type[Metric], dict[str, Any]]] = {
    "categorical": (CategoricalScore, {}),
    "csi": (CategoricalScore, {}),
    "continuous": (ContinuousScore, {}),
    "mse": (ContinuousScore, {"scores": ("mse",)}),
    "rmse": (ContinuousScore, {"scores": ("rmse",)}),
    "mae": (ContinuousScore, {"scores": ("mae",)}),
    "ssim": (ContinuousScore, {"scores": ("ssim",)}),
    "crps": (EnsembleCRPS, {}),
    "rank_histogram": (RankHistogram, {}),
    "spread_skill": (SpreadSkill, {}),
    "fss": (FractionsSkillScore, {}),
    "nino34": (Nino34Score, {}),
    "knowledge_control_error": (KnowledgeControlError, {}),
    "energy_conservation_error": (EnergyConservationError, {}),
}


def get_metric(name: str, **kwargs: Any) -> Metric:
    """A fresh accumulating metric by name; ``kwargs`` go to its constructor.

    Names: ``categorical`` / ``csi`` (POD, SUCR, CSI, BIAS, CSI-M), ``continuous`` (MSE, RMSE, MAE, SSIM),
    ``mse``, ``rmse``, ``mae``, ``ssim``, ``crps``, ``rank_histogram``, ``spread_skill``, ``fss``, ``nino34``,
    ``knowledge_control_error``, ``energy_conservation_error``.
    """
    key = name.lower().replace("-", "_")
    if key not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {sorted(_METRICS)}")
    cls, defaults = _METRICS[key]
    return cls(**{**defaults, **kwargs})


__all__ = [
    "SEVIR_POOL_SIZES",
    "SEVIR_THRESHOLDS",
    "CategoricalScore",
    "ContinuousScore",
    "EnergyConservationError",
    "EnsembleCRPS",
    "FractionsSkillScore",
    "KnowledgeControlError",
    "Metric",
    "Nino34Score",
    "RankHistogram",
    "SpreadSkill",
    "categorical_scores",
    "contingency_counts",
    "crps_ensemble",
    "crps_ensemble_elementwise",
    "csi",
    "ensemble_ranks",
    "frequency_bias",
    "fss",
    "get_metric",
    "knowledge_control_error",
    "mae",
    "max_intensity",
    "max_pool_frames",
    "mean_intensity",
    "mse",
    "nino34_index",
    "nino34_lead_weights",
    "nino34_skill",
    "pod",
    "rank_histogram",
    "spread_skill_ratio",
    "ssim",
    "ssim_per_frame",
    "sucr",
]
