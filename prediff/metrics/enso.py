"""Nino3.4 skill for ENSO forecasts, as in Earthformer's ICAR-ENSO evaluation.

The Nino3.4 index of a sea-surface-temperature anomaly sequence is its mean over the Nino3.4 box, smoothed
by a 3-month running mean: ``T`` months give ``T - 2`` index values. For every lead month ``l`` the Pearson
correlation ``C_l`` between forecast and observed index is taken across all forecasts of the evaluation set
(the official code adds 1e-6 to the denominator; so does this module). Then

- ``c_nino34_m``  (C-Nino3.4-M)  = ``mean_l C_l``
- ``c_nino34_wm`` (C-Nino3.4-WM) = ``sum_l a_l log(l + 1) C_l / L`` with ``a = 1.5`` for the first 4 leads,
  2 for the next 7, 3 for the next 7 and 4 afterwards (``l`` counted from 0), the weighting of the
  Tianchi ENSO challenge that Earthformer uses
- ``nino34_rmse`` = ``mean_l`` of the RMSE of the index at lead ``l``.
"""

from __future__ import annotations

from typing import Any

import torch

from ._base import ArrayLike, Metric, as_tensor, finalize

#: Running-mean window of the index, in months.
NINO_WINDOW = 3
#: Nino3.4 box on the 24 x 48 ICAR-ENSO grid (rows = latitude, columns = longitude), as in Earthformer.
ICAR_ENSO_NINO34_LAT = slice(10, 13)
ICAR_ENSO_NINO34_LON = slice(19, 30)


def nino34_index(
    sst: ArrayLike,
    lat_slice: slice = ICAR_ENSO_NINO34_LAT,
    lon_slice: slice = ICAR_ENSO_NINO34_LON,
    window: int = NINO_WINDOW,
    channel: int = 0,
) -> torch.Tensor:
    """Nino3.4 index of SST anomaly sequences.

    Args:
        sst: ``(B, T, H, W, C)`` SST anomalies (degrees C), channel ``channel`` used.
        lat_slice, lon_slice: the Nino3.4 box in grid indices.
        window: running-mean length in months.

    Returns:
        ``(B, T - window + 1)`` float64 tensor.
    """
    sst = as_tensor("sst", sst, 5)
    if not 0 <= channel < sst.shape[-1]:
        raise ValueError(f"channel must be in [0, {sst.shape[-1]}), got {channel}")
    box = sst[:, :, lat_slice, lon_slice, channel]
    if box.numel() == 0:
        raise ValueError(
            f"the Nino3.4 box {lat_slice}, {lon_slice} is empty on a grid of shape {tuple(sst.shape[2:4])}"
        )
    if not 1 <= window <= sst.shape[1]:
        raise ValueError(f"window must be in [1, T={sst.shape[1]}], got {window}")
    series = box.double().mean(dim=(2, 3))
    return series.unfold(dimension=1, size=window, step=1).mean(dim=2)


def nino34_lead_weights(num_leads: int) -> torch.Tensor:
    """Earthformer's default lead weights ``a_l log(l + 1)``, ``l = 0 .. num_leads - 1`` (float64)."""
    a = torch.tensor([1.5] * 4 + [2.0] * 7 + [3.0] * 7 + [4.0] * max(num_leads - 18, 0), dtype=torch.float64)
    return a[:num_leads] * torch.log(torch.arange(num_leads, dtype=torch.float64) + 1)


class Nino34Score(Metric):
    """C-Nino3.4-M, C-Nino3.4-WM and the index RMSE, accumulated over batches.

    ``update(pred, target)`` takes SST anomaly sequences ``(B, T, H, W, C)``; ``update_index`` takes index
    series ``(B, L)`` directly. The correlations are exact over all batches: the per-lead means, variances and
    covariance are merged batch by batch with the pairwise update of Chan et al. (no data is kept).

    Args:
        lat_slice, lon_slice (`slice`): the Nino3.4 box in grid indices (ICAR-ENSO defaults).
        window (`int`, defaults to 3): running-mean length of the index.
        weights (`str` or array, defaults to `"default"`): lead weights of C-Nino3.4-WM.
    """

    names = ("c_nino34_m", "c_nino34_wm", "nino34_rmse")

    def __init__(
        self,
        lat_slice: slice = ICAR_ENSO_NINO34_LAT,
        lon_slice: slice = ICAR_ENSO_NINO34_LON,
        window: int = NINO_WINDOW,
        weights: str | ArrayLike = "default",
    ) -> None:
        if isinstance(weights, str) and weights != "default":
            raise ValueError(f"weights must be 'default' or an array of lead weights, got {weights!r}")
        self.lat_slice, self.lon_slice, self.window = lat_slice, lon_slice, int(window)
        self.weights = weights if isinstance(weights, str) else as_tensor("weights", weights, 1).double()
        super().__init__()

    def _reset_state(self) -> None:
        self.n = 0
        self.stats: dict[str, torch.Tensor] = {}

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add SST anomaly sequences ``pred`` and ``target`` ``(B, T, H, W, C)``."""
        pred, target = as_tensor("pred", pred, 5), as_tensor("target", target, 5)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        self.update_index(
            nino34_index(pred, self.lat_slice, self.lon_slice, self.window),
            nino34_index(target, self.lat_slice, self.lon_slice, self.window),
        )

    def update_index(self, nino_pred: ArrayLike, nino_target: ArrayLike) -> None:
        """Add index series ``(B, L)`` (forecast and observation)."""
        p, t = (
            as_tensor("nino_pred", nino_pred, 2).double(),
            as_tensor("nino_target", nino_target, 2).double(),
        )
        if p.shape != t.shape:
            raise ValueError(f"nino_pred shape {tuple(p.shape)} does not match nino_target shape {tuple(t.shape)}")
        self._check_num_frames(p.shape[1])
        t = t.to(p.device)
        nb = p.shape[0]
        mp, mt = p.mean(dim=0), t.mean(dim=0)
        batch = {
            "mean_p": mp,
            "mean_t": mt,
            "m2_p": ((p - mp) ** 2).sum(dim=0),
            "m2_t": ((t - mt) ** 2).sum(dim=0),
            "c_pt": ((p - mp) * (t - mt)).sum(dim=0),
            "sse": ((p - t) ** 2).sum(dim=0),
        }
        if self.n == 0:
            self.n, self.stats = nb, batch
            return
        na, a = self.n, self.stats
        n = na + nb
        dp, dt = batch["mean_p"] - a["mean_p"], batch["mean_t"] - a["mean_t"]
        self.stats = {
            "mean_p": a["mean_p"] + dp * nb / n,
            "mean_t": a["mean_t"] + dt * nb / n,
            "m2_p": a["m2_p"] + batch["m2_p"] + dp**2 * na * nb / n,
            "m2_t": a["m2_t"] + batch["m2_t"] + dt**2 * na * nb / n,
            "c_pt": a["c_pt"] + batch["c_pt"] + dp * dt * na * nb / n,
            "sse": a["sse"] + batch["sse"],
        }
        self.n = n

    def compute(self, per_lead_time: bool = False) -> dict[str, Any]:
        """Scores; with ``per_lead_time=True`` the correlation ``c_nino34`` and ``nino34_rmse`` per lead."""
        self._check_updated()
        s = self.stats
        corr = s["c_pt"] / (torch.sqrt(s["m2_p"] * s["m2_t"]) + 1e-6)
        rmse = torch.sqrt(s["sse"] / self.n)
        if per_lead_time:
            return {"c_nino34": finalize(corr, True), "nino34_rmse": finalize(rmse, True)}
        num_leads = corr.shape[0]
        if isinstance(self.weights, str):
            weights = nino34_lead_weights(num_leads)
        else:
            if self.weights.shape[0] < num_leads:
                raise ValueError(f"weights has {self.weights.shape[0]} entries, fewer than the {num_leads} leads")
            weights = self.weights[:num_leads]
        weights = weights.to(corr.device)
        return {
            "c_nino34_m": finalize(corr.mean(), False),
            "c_nino34_wm": finalize((weights * corr).sum() / num_leads, False),
            "nino34_rmse": finalize(rmse.mean(), False),
        }


def nino34_skill(nino_pred: ArrayLike, nino_target: ArrayLike, weights: str | ArrayLike = "default") -> dict:
    """C-Nino3.4-M, C-Nino3.4-WM and RMSE of index series ``(N, L)`` (see :class:`Nino34Score`)."""
    metric = Nino34Score(weights=weights)
    metric.update_index(nino_pred, nino_target)
    return metric.compute()
