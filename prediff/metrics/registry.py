"""Metrics by name: ``get_metric("crps")`` builds one, as pysteps' ``get_method`` does.

A module of its own, not the package ``__init__``, so that importing the package loads no metric (and no torch)
until one is used.
"""

from __future__ import annotations

from typing import Any

from ._base import Metric
from .categorical import CategoricalScore
from .continuous import ContinuousScore
from .enso import Nino34Score
from .knowledge import EnergyConservationError, KnowledgeControlError
from .probabilistic import EnsembleCRPS, RankHistogram, SpreadSkill
from .spatial import FractionsSkillScore

__all__ = ["get_metric"]

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
