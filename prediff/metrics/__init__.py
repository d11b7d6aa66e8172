"""Forecast verification: categorical, continuous, probabilistic, spatial, ENSO and knowledge-control scores.

Every score exists as an accumulating object (``update(pred, target)`` per batch, ``compute()`` at the end,
``compute(per_lead_time=True)`` for one value per lead time) and as a function of one batch; ``SequenceScores``
keeps the sums of every sequence apart, over a validity mask, for bootstrap intervals over sequences. Forecasts and
observations are channels-last ``(B, T, H, W, C)``, ensembles ``(B, M, T, H, W, C)``, numpy arrays or torch
tensors, in the units of the data (0-255 for SEVIR VIL). ``get_metric(name, **kwargs)`` builds a metric
by name, as pysteps' ``get_method`` does.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from ._base import Metric
    from .categorical import (
        CategoricalScore,
        categorical_scores,
        contingency_counts,
        csi,
        false_alarm_ratio,
        far,
        frequency_bias,
        max_pool_frames,
        pod,
        sucr,
    )
    from .continuous import ContinuousScore, mae, mse, ssim, ssim_per_frame
    from .defaults import SEVIR_POOL_SIZES, SEVIR_THRESHOLDS
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
        crps_ensemble_tensor,
        ensemble_ranks,
        exceedance_point,
        rank_histogram,
        spread_skill_ratio,
    )
    from .registry import get_metric
    from .sequences import SequenceScores, bootstrap_weights, percentile_interval
    from .spatial import FractionsSkillScore, fss

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "._base": ["Metric"],
        ".categorical": [
            "CategoricalScore",
            "categorical_scores",
            "contingency_counts",
            "csi",
            "false_alarm_ratio",
            "far",
            "frequency_bias",
            "max_pool_frames",
            "pod",
            "sucr",
        ],
        ".continuous": ["ContinuousScore", "mae", "mse", "ssim", "ssim_per_frame"],
        ".defaults": ["SEVIR_POOL_SIZES", "SEVIR_THRESHOLDS"],
        ".enso": ["Nino34Score", "nino34_index", "nino34_lead_weights", "nino34_skill"],
        ".knowledge": [
            "EnergyConservationError",
            "KnowledgeControlError",
            "knowledge_control_error",
            "max_intensity",
            "mean_intensity",
        ],
        ".probabilistic": [
            "EnsembleCRPS",
            "RankHistogram",
            "SpreadSkill",
            "crps_ensemble",
            "crps_ensemble_elementwise",
            "crps_ensemble_tensor",
            "ensemble_ranks",
            "exceedance_point",
            "rank_histogram",
            "spread_skill_ratio",
        ],
        ".registry": ["get_metric"],
        ".sequences": ["SequenceScores", "bootstrap_weights", "percentile_interval"],
        ".spatial": ["FractionsSkillScore", "fss"],
    },
)

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
    "SequenceScores",
    "SpreadSkill",
    "bootstrap_weights",
    "categorical_scores",
    "contingency_counts",
    "crps_ensemble",
    "crps_ensemble_elementwise",
    "crps_ensemble_tensor",
    "csi",
    "ensemble_ranks",
    "exceedance_point",
    "false_alarm_ratio",
    "far",
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
    "percentile_interval",
    "pod",
    "rank_histogram",
    "spread_skill_ratio",
    "ssim",
    "ssim_per_frame",
    "sucr",
]
