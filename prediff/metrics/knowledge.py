"""How well a forecast obeys a knowledge control: the error of its statistic against the anticipated value.

PreDiff's anticipated-intensity control steers the average intensity of the forecast sequence towards an
anticipated value (a number, or ``mu + n sigma`` of the training distribution). Its error is measured on the
finished forecast: ``|statistic(forecast) - anticipated|`` per sample (per member for ensembles), summarised as
mean absolute error, root mean squared error and mean signed error (bias). Any other control is measured the
same way by passing its statistic as a function.

The energy-conservation control (N-body) steers the total energy of every future frame to the initial energy.
A frame's energy is a function of the bodies' state, not of its pixels, so :class:`EnergyConservationError`
takes per-frame energies: ``prediff.data.nbody_energy`` of states (the definition the simulator, the data
sets' ``"energy"`` and hence the control's alignment network share), or an estimator's prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ._base import ArrayLike, Metric, as_tensor, finalize


def mean_intensity(x: torch.Tensor) -> torch.Tensor:
    """Average intensity of every sequence: ``(..., T, H, W, C) -> (...)`` (mean over the last 4 axes)."""
    return x.mean(dim=(-4, -3, -2, -1))


def max_intensity(x: torch.Tensor) -> torch.Tensor:
    """Peak intensity of every sequence: ``(..., T, H, W, C) -> (...)``."""
    return x.flatten(start_dim=-4).amax(dim=-1)


STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean_intensity": mean_intensity,
    "max_intensity": max_intensity,
}


def _per_sample(name: str, value: ArrayLike | float | Sequence[float], batch_size: int) -> torch.Tensor:
    """A number, one value or ``batch_size`` values as a float64 tensor of shape ``(batch_size,)``."""
    if isinstance(value, (int, float)):
        return torch.full((batch_size,), float(value), dtype=torch.float64)
    if isinstance(value, (list, tuple)):
        value = np.asarray(value, dtype=np.float64)
    values = as_tensor(name, value).double().reshape(-1)
    if values.numel() == 1:
        values = values.expand(batch_size)
    if values.shape != (batch_size,):
        raise ValueError(f"{name} must be a number or of shape ({batch_size},), got {tuple(values.shape)}")
    return values


class KnowledgeControlError(Metric):
    """Error of a forecast statistic against the anticipated value, accumulated over batches.

    Args:
        statistic (`str` or callable, defaults to `"mean_intensity"`):
            `"mean_intensity"` (PreDiff's anticipated average intensity), `"max_intensity"`, or a function
            mapping forecasts ``(B, T, H, W, C)`` to one value per sample ``(B,)``.

    ``update(pred, anticipated)``: ``pred`` ``(B, T, H, W, C)`` or an ensemble ``(B, M, T, H, W, C)`` (every
    member is scored), ``anticipated`` a number or ``(B,)`` values in the units of the statistic (for the
    intensity statistics: the units of ``pred``, 0-255 for VIL). ``compute()`` returns ``kc_mae``, ``kc_rmse``
    and ``kc_bias`` (mean of statistic minus anticipated). The statistic spans the whole sequence, so there is
    no per-lead-time form.
    """

    names = ("kc_mae", "kc_rmse", "kc_bias")

    def __init__(self, statistic: str | Callable[[torch.Tensor], torch.Tensor] = "mean_intensity") -> None:
        if isinstance(statistic, str):
            if statistic not in STATISTICS:
                raise ValueError(f"statistic must be one of {sorted(STATISTICS)} or a callable, got {statistic!r}")
            statistic = STATISTICS[statistic]
        elif not callable(statistic):
            raise ValueError(f"statistic must be a name or a callable, got {type(statistic).__name__}")
        self.statistic = statistic
        super().__init__()

    additive_states = ("sum_abs", "sum_sq", "sum_signed", "count")

    def _reset_state(self) -> None:
        self.sum_abs = 0.0
        self.sum_sq = 0.0
        self.sum_signed = 0.0
        self.count = 0

    def update(self, pred: ArrayLike, anticipated: ArrayLike | float) -> None:
        """Add a batch of forecasts and the values their control anticipated."""
        pred = as_tensor("pred", pred)
        if pred.ndim not in (5, 6):
            raise ValueError(f"pred must be (B, T, H, W, C) or (B, M, T, H, W, C), got shape {tuple(pred.shape)}")
        b = pred.shape[0]
        members = pred if pred.ndim == 6 else pred.unsqueeze(1)
        flat = members.reshape(-1, *members.shape[2:])
        values = torch.as_tensor(self.statistic(flat)).to(torch.float64)
        if values.shape != (flat.shape[0],):
            raise ValueError(
                f"statistic must return one value per sample, shape ({flat.shape[0]},); got {tuple(values.shape)}"
            )
        values = values.reshape(b, members.shape[1])
        target = _per_sample("anticipated", anticipated, b)
        error = values - target.to(values.device).unsqueeze(1)
        if not torch.isfinite(error).all():
            raise ValueError("statistic returned NaN or infinite values")
        self.sum_abs += float(error.abs().sum())
        self.sum_sq += float((error**2).sum())
        self.sum_signed += float(error.sum())
        self.count += error.numel()
        self._num_frames = members.shape[2]

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """``kc_mae``, ``kc_rmse`` and ``kc_bias`` as floats."""
        if per_lead_time:
            raise ValueError("KnowledgeControlError scores whole sequences; per_lead_time=True is not available")
        self._check_updated()
        return {
            "kc_mae": self.sum_abs / self.count,
            "kc_rmse": (self.sum_sq / self.count) ** 0.5,
            "kc_bias": self.sum_signed / self.count,
        }

    def __call__(self, pred: ArrayLike, anticipated: ArrayLike | float, per_lead_time: bool = False) -> dict:
        """Scores of one batch alone."""
        return super().__call__(pred, anticipated, per_lead_time)


class EnergyConservationError(Metric):
    """Error of a forecast's total energy per frame against the conserved initial energy, accumulated over
    batches: the quantity [`~prediff.EnergyConservationControl`] steers.

    ``update(energy, initial_energy)``: ``energy`` ``(B, T)`` the total energy of every forecast frame, or
    ``(B, M, T)`` for an ensemble (every member is scored); ``initial_energy`` a number or ``(B,)`` values
    (e.g. the energy of the last context frame), in the same units. For N-body states, energies are
    ``prediff.data.nbody_energy(positions, velocities, masses, gravity, softening)``.

    ``compute()`` returns

    * ``energy_mae``, ``energy_rmse``, ``energy_bias``: mean absolute, root mean squared and mean signed
      ``E_t - E_0`` over frames, members and samples (``per_lead_time=True``: one value per frame ``t``);
    * ``energy_violation``: the control's own violation, the L2 norm over the forecast frames of
      ``E_t - E_0``, averaged over members and samples (whole sequences, so absent per lead time).
    """

    names = ("energy_mae", "energy_rmse", "energy_bias", "energy_violation")

    additive_states = ("sums", "sum_violation", "count")

    def _reset_state(self) -> None:
        # Sums over samples and members, one entry per lead time.
        self.sums: dict[str, torch.Tensor] = {}
        self.sum_violation = 0.0
        self.count = 0  # scored sequences (samples x members)

    def update(self, energy: ArrayLike, initial_energy: ArrayLike | float) -> None:
        """Add a batch of per-frame forecast energies and the energies they should conserve."""
        energy = as_tensor("energy", energy).double()
        if energy.ndim not in (2, 3):
            raise ValueError(f"energy must be (B, T) or (B, M, T), got shape {tuple(energy.shape)}")
        members = energy if energy.ndim == 3 else energy.unsqueeze(1)
        target = _per_sample("initial_energy", initial_energy, members.shape[0]).to(members.device)
        self._check_num_frames(members.shape[2])
        error = (members - target[:, None, None]).flatten(end_dim=1)  # (B * M, T)
        for name, values in (("abs", error.abs()), ("sq", error**2), ("signed", error)):
            self.sums[name] = self.sums.get(name, 0.0) + values.sum(0)
        self.sum_violation += float(torch.linalg.vector_norm(error, dim=1).sum())
        self.count += error.shape[0]

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """The scores as floats, or ``(T,)`` arrays of ``energy_mae/rmse/bias`` with ``per_lead_time=True``."""
        self._check_updated()
        means = {
            name: total / self.count if per_lead_time else total.sum() / (self.count * self._num_frames)
            for name, total in self.sums.items()
        }
        scores = {
            "energy_mae": finalize(means["abs"], per_lead_time),
            "energy_rmse": finalize(means["sq"].sqrt(), per_lead_time),
            "energy_bias": finalize(means["signed"], per_lead_time),
        }
        if not per_lead_time:
            scores["energy_violation"] = self.sum_violation / self.count
        return scores

    def __call__(self, energy: ArrayLike, initial_energy: ArrayLike | float, per_lead_time: bool = False) -> dict:
        """Scores of one batch alone."""
        return super().__call__(energy, initial_energy, per_lead_time)


def knowledge_control_error(
    pred: ArrayLike,
    anticipated: ArrayLike | float,
    statistic: str | Callable[[torch.Tensor], torch.Tensor] = "mean_intensity",
) -> float:
    """Mean absolute error of ``statistic(pred)`` against ``anticipated`` (:class:`KnowledgeControlError`).

    Returns a float in the units of the statistic.
    """
    return KnowledgeControlError(statistic)(pred, anticipated)["kc_mae"]
