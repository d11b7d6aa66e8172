"""Verification metrics against plain reference implementations on random data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from prediff import metrics
from prediff.metrics import (
    CategoricalScore,
    ContinuousScore,
    EnergyConservationError,
    EnsembleCRPS,
    FractionsSkillScore,
    KnowledgeControlError,
    Nino34Score,
    RankHistogram,
    SpreadSkill,
)

THRESHOLDS = (16, 74, 133, 160, 181, 219)


def _vil(rng, shape):
    """Random VIL-like values with many zeros and every threshold crossed."""
    x = rng.uniform(0, 255, size=shape)
    x[rng.uniform(size=shape) < 0.3] = 0.0
    return x


# ---------------------------------------------------------------------------------------------- categorical


def _reference_counts(pred, target, threshold):
    hits = misses = false_alarms = 0
    for p, t in zip(pred.ravel(), target.ravel()):
        hits += (p >= threshold) and (t >= threshold)
        misses += (p < threshold) and (t >= threshold)
        false_alarms += (p >= threshold) and (t < threshold)
    return hits, misses, false_alarms


def _reference_pool(x, k):
    b, t, h, w, c = x.shape
    out = np.zeros((b, t, h // k, w // k, c))
    for i, j in itertools.product(range(h // k), range(w // k)):
        out[:, :, i, j, :] = x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k, :].max(axis=(2, 3))
    return out


@pytest.mark.parametrize("pool_size", [1, 4])
def test_categorical_scores_match_reference(pool_size):
    rng = np.random.default_rng(0)
    pred, target = _vil(rng, (2, 3, 18, 17, 1)), _vil(rng, (2, 3, 18, 17, 1))
    scores = CategoricalScore(pool_sizes=(pool_size,))(pred, target)
    pp, tp = _reference_pool(pred, pool_size), _reference_pool(target, pool_size)
    suffix = "" if pool_size == 1 else f"_pool{pool_size}"
    csis = []
    for thr in THRESHOLDS:
        h, m, f = _reference_counts(pp, tp, thr)
        eps = 1e-4
        assert scores[f"pod_{thr}{suffix}"] == pytest.approx(h / (h + m + eps), rel=1e-12)
        assert scores[f"sucr_{thr}{suffix}"] == pytest.approx(h / (h + f + eps), rel=1e-12)
        assert scores[f"csi_{thr}{suffix}"] == pytest.approx(h / (h + m + f + eps), rel=1e-12)
        assert scores[f"bias_{thr}{suffix}"] == pytest.approx((h + f) / (h + m + eps), rel=1e-12)
        csis.append(h / (h + m + f + eps))
    assert scores[f"csi_m{suffix}"] == pytest.approx(np.mean(csis), rel=1e-12)


def test_categorical_accumulates_and_reports_per_lead_time():
    rng = np.random.default_rng(1)
    batches = [(_vil(rng, (2, 4, 16, 16, 1)), _vil(rng, (2, 4, 16, 16, 1))) for _ in range(3)]
    metric = CategoricalScore(pool_sizes=(1, 4))
    for pred, target in batches:
        metric.update(pred, target)
    whole = np.concatenate([p for p, _ in batches]), np.concatenate([t for _, t in batches])
    expected = CategoricalScore(pool_sizes=(1, 4))(*whole)
    got = metric.compute()
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12)
    per_lead = metric.compute(per_lead_time=True)
    assert per_lead["csi_74"].shape == (4,)
    for t in range(4):
        one = CategoricalScore(pool_sizes=(4,))(whole[0][:, t : t + 1], whole[1][:, t : t + 1])
        assert per_lead["csi_m_pool4"][t] == pytest.approx(one["csi_m_pool4"], rel=1e-12)


def test_categorical_perfect_and_bias_formulas():
    rng = np.random.default_rng(2)
    x = _vil(rng, (1, 2, 16, 16, 1))
    scores = CategoricalScore()(x, x)
    assert scores["csi_m"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bias_16"] == pytest.approx(1.0, abs=1e-6)
    y = _vil(rng, (1, 2, 16, 16, 1))
    standard = CategoricalScore(pool_sizes=(1,))(x, y)["bias_74"]
    official = CategoricalScore(pool_sizes=(1,), bias_formula="earthformer")(x, y)["bias_74"]
    assert official == pytest.approx((standard / math.log(2.0)) ** 2, rel=1e-12)
    assert metrics.csi(x, y, 74) == CategoricalScore(pool_sizes=(1,))(x, y)["csi_74"]
    assert metrics.pod(x, y, 74, pool_size=4) == CategoricalScore(pool_sizes=(4,))(x, y)["pod_74_pool4"]


def test_numpy_torch_and_uint8_agree():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 256, size=(2, 2, 16, 16, 1)).astype(np.uint8)
    target = rng.integers(0, 256, size=(2, 2, 16, 16, 1)).astype(np.uint8)
    a = CategoricalScore()(pred, target)
    b = CategoricalScore()(torch.from_numpy(pred).float(), torch.from_numpy(target).double())
    assert a == b
    c = ContinuousScore(("mse", "mae"))(pred, target)
    d = ContinuousScore(("mse", "mae"))(torch.from_numpy(pred), torch.from_numpy(target))
    assert c == pytest.approx(d)
    assert c["mse"] == pytest.approx(np.mean((pred.astype(float) - target.astype(float)) ** 2))


# ----------------------------------------------------------------------------------------------- continuous


def _reference_ssim(x, y, data_range=255.0, size=11, sigma=1.5):
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = (win * px).sum(), (win * py).sum()
            vx, vy = (win * (px - mx) ** 2).sum(), (win * (py - my) ** 2).sum()
            cov = (win * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(values)


def test_continuous_scores_match_reference():
    rng = np.random.default_rng(4)
    pred, target = _vil(rng, (2, 3, 14, 13, 1)), _vil(rng, (2, 3, 14, 13, 1))
    target[0, 0] = pred[0, 0] * 0.8 + 10  # one correlated frame, so SSIM is far from 0 somewhere
    scores = ContinuousScore()(pred, target, per_lead_time=True)
    for t in range(3):
        d = pred[:, t] - target[:, t]
        assert scores["mse"][t] == pytest.approx(np.mean(d**2), rel=1e-12)
        assert scores["mae"][t] == pytest.approx(np.mean(np.abs(d)), rel=1e-12)
        ref = np.mean([_reference_ssim(pred[b, t, ..., 0], target[b, t, ..., 0]) for b in range(2)])
        assert scores["ssim"][t] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert scores["rmse"] == pytest.approx(np.sqrt(scores["mse"]))
    assert metrics.ssim(pred, pred) == pytest.approx(1.0)
    assert metrics.mse(pred, target) == pytest.approx(np.mean((pred - target) ** 2))


# --------------------------------------------------------------------------------------------- probabilistic


def _crps_pairwise(pred, target, fair=False):
    """Brute force: mean_i |x_i - y| - 1/2 mean_ij |x_i - x_j| over all (i, j) pairs."""
    m = pred.shape[1]
    skill = np.abs(pred - target[:, None]).mean(axis=1)
    pair_sum = np.abs(pred[:, :, None] - pred[:, None, :]).sum(axis=(1, 2))
    spread = 0.5 * pair_sum / (m * (m - 1) if fair else m * m)
    return skill - spread


@pytest.mark.parametrize("m", [1, 2, 5, 8])
def test_crps_sorted_formula_matches_pairwise(m):
    rng = np.random.default_rng(5 + m)
    pred, target = _vil(rng, (2, m, 3, 8, 8, 1)), _vil(rng, (2, 3, 8, 8, 1))
    fast = metrics.crps_ensemble_elementwise(pred, target).numpy()
    np.testing.assert_allclose(fast, _crps_pairwise(pred, target), rtol=1e-10, atol=1e-9)
    if m >= 2:
        fair = metrics.crps_ensemble_elementwise(pred, target, fair=True).numpy()
        np.testing.assert_allclose(fair, _crps_pairwise(pred, target, fair=True), rtol=1e-10, atol=1e-9)
    if m == 1:
        assert metrics.crps_ensemble(pred, target) == pytest.approx(metrics.mae(pred[:, 0], target))
    per_lead = metrics.crps_ensemble(pred, target, per_lead_time=True)
    np.testing.assert_allclose(per_lead, _crps_pairwise(pred, target).mean(axis=(0, 2, 3, 4)), rtol=1e-10)


@pytest.mark.parametrize("m", [1, 3, 8])
def test_exceedance_point_events_are_the_members_counted(m):
    rng = np.random.default_rng(11 + m)
    pred = np.round(_vil(rng, (2, m, 3, 8, 8, 1)) / 32.0) * 32.0  # ties between members
    for k in range(1, m + 1):
        field = metrics.exceedance_point(pred, k / m).numpy()
        for threshold in (16.0, 74.0, 133.0, 160.0):
            counted = (pred >= threshold).sum(axis=1) >= k
            np.testing.assert_array_equal(field >= threshold, counted)
    if m == 3:
        np.testing.assert_array_equal(metrics.exceedance_point(pred, 0.5).numpy(), np.median(pred, axis=1))
    np.testing.assert_array_equal(metrics.exceedance_point(pred, 1.0).numpy(), pred.min(axis=1))
    for bad in (0.0, 1.5, None, True):
        with pytest.raises(ValueError, match="probability must be in"):
            metrics.exceedance_point(pred, bad)
    with pytest.raises(ValueError, match=r"pred must have shape \(B, M, T, H, W, C\), got shape \(2, 3, 8, 8, 1\)"):
        metrics.exceedance_point(pred[:, 0], 0.5)
    with pytest.raises(ValueError, match="pred contains NaN"):
        metrics.exceedance_point(np.where(pred > 100, np.nan, pred), 0.5)


def test_crps_accumulates_and_pools():
    rng = np.random.default_rng(6)
    batches = [(_vil(rng, (1, 3, 2, 16, 16, 1)), _vil(rng, (1, 2, 16, 16, 1))) for _ in range(2)]
    metric = EnsembleCRPS(pool_sizes=(1, 4))
    for pred, target in batches:
        metric.update(pred, target)
    pred = np.concatenate([p for p, _ in batches])
    target = np.concatenate([t for _, t in batches])
    got = metric.compute()
    assert got["crps"] == pytest.approx(_crps_pairwise(pred, target).mean(), rel=1e-10)
    pooled_pred = np.stack([_reference_pool(pred[:, i], 4) for i in range(3)], axis=1)
    ref = _crps_pairwise(pooled_pred, _reference_pool(target, 4)).mean()
    assert got["crps_pool4"] == pytest.approx(ref, rel=1e-10)


def test_rank_histogram_matches_counting_and_is_flat_for_a_reliable_ensemble():
    rng = np.random.default_rng(7)
    m = 4
    pred, target = rng.normal(size=(4, m, 2, 16, 16, 1)), rng.normal(size=(4, 2, 16, 16, 1))
    counts = RankHistogram(normalize=False)(pred, target, per_lead_time=True)["rank_histogram"]
    ref = np.zeros((2, m + 1))
    for t in range(2):
        ranks = (pred[:, :, t] < target[:, None, t]).sum(axis=1)  # no ties with continuous values
        ref[t] = np.bincount(ranks.ravel(), minlength=m + 1)
    np.testing.assert_array_equal(counts, ref)
    hist = metrics.rank_histogram(pred, target)
    assert hist.shape == (m + 1,) and hist.sum() == pytest.approx(1.0)
    assert np.abs(hist - 1 / (m + 1)).max() < 0.03
    # Under-dispersive ensemble: the observation falls outside the members too often (U shape).
    narrow = metrics.rank_histogram(0.2 * pred, target)
    assert narrow[0] > 0.3 and narrow[-1] > 0.3


def test_rank_histogram_ties_and_x_min():
    pred = np.zeros((2, 3, 1, 32, 32, 1))
    target = np.zeros((2, 1, 32, 32, 1))
    # All tied: the rank is uniform over the 4 positions.
    hist = metrics.rank_histogram(pred, target, seed=1)
    assert np.abs(hist - 0.25).max() < 0.04
    # With x_min every dry pixel is skipped; only the wet one counts, ranked above all members.
    target[0, 0, 3, 3, 0] = 50.0
    counts = RankHistogram(x_min=1.0, normalize=False)(pred, target)["rank_histogram"]
    np.testing.assert_array_equal(counts, [0, 0, 0, 1])
    a = RankHistogram(seed=3)(pred, target)["rank_histogram"]
    b = RankHistogram(seed=3)(pred, target)["rank_histogram"]
    np.testing.assert_array_equal(a, b)


def test_spread_skill_ratio():
    rng = np.random.default_rng(8)
    m = 5
    truth_and_members = rng.normal(size=(8, m + 1, 2, 16, 16, 1))
    pred, target = truth_and_members[:, :m], truth_and_members[:, m]
    scores = SpreadSkill()(pred, target)
    assert scores["spread_skill_ratio"] == pytest.approx(1.0, abs=0.05)
    assert scores["spread"] == pytest.approx(np.sqrt(pred.var(axis=1, ddof=1).mean()), rel=1e-10)
    assert scores["rmse_mean"] == pytest.approx(np.sqrt(((pred.mean(1) - target) ** 2).mean()), rel=1e-10)
    assert metrics.spread_skill_ratio(0.3 * pred, target) < 0.5


# ------------------------------------------------------------------------------------------------- spatial


def _reference_fss(pred, target, threshold, scale):
    num = den = 0.0
    before, after = scale // 2, (scale - 1) // 2
    for frame_f, frame_o in zip(pred.reshape(-1, *pred.shape[2:4]), target.reshape(-1, *target.shape[2:4])):
        h, w = frame_f.shape
        ef, eo = (frame_f >= threshold).astype(float), (frame_o >= threshold).astype(float)
        for i, j in itertools.product(range(h), range(w)):
            rows = slice(max(i - before, 0), min(i + after + 1, h))
            cols = slice(max(j - before, 0), min(j + after + 1, w))
            sf, so = ef[rows, cols].sum() / scale**2, eo[rows, cols].sum() / scale**2
            num += (sf - so) ** 2
            den += sf**2 + so**2
    return 1 - num / den


@pytest.mark.parametrize("scale", [1, 3, 4])
def test_fss_matches_reference(scale):
    rng = np.random.default_rng(9)
    pred, target = _vil(rng, (2, 2, 10, 9, 1)), _vil(rng, (2, 2, 10, 9, 1))
    got = metrics.fss(pred, target, 74, scale)
    assert got == pytest.approx(_reference_fss(pred, target, 74, scale), rel=1e-10)
    assert metrics.fss(pred, pred, 74, scale) == pytest.approx(1.0)
    per_lead = FractionsSkillScore((74,), (scale,))(pred, target, per_lead_time=True)
    assert per_lead[f"fss_74_scale{scale}"][1] == pytest.approx(
        _reference_fss(pred[:, 1:], target[:, 1:], 74, scale), rel=1e-10
    )


# ---------------------------------------------------------------------------------------------------- ENSO


def _official_enso(pred, true, weights=None):
    p = pred - pred.mean(axis=0, keepdims=True)
    t = true - true.mean(axis=0, keepdims=True)
    cor = (p * t).sum(0) / (np.sqrt((p**2).sum(0) * (t**2).sum(0)) + 1e-6)
    acc = cor.sum() if weights is None else (weights * cor).sum()
    return acc / pred.shape[1], np.sqrt(((pred - true) ** 2).mean(axis=0)).mean()


def test_nino34_index_and_skill():
    rng = np.random.default_rng(10)
    sst_true = rng.normal(size=(12, 26, 24, 48, 1))
    sst_pred = sst_true + rng.normal(scale=1.0, size=sst_true.shape)
    index = metrics.nino34_index(sst_true).numpy()
    box = sst_true[:, :, 10:13, 19:30, 0].mean(axis=(2, 3))
    np.testing.assert_allclose(index, (box[:, :-2] + box[:, 1:-1] + box[:, 2:]) / 3, rtol=1e-12)
    assert index.shape == (12, 24)
    weights = np.array([1.5] * 4 + [2] * 7 + [3] * 7 + [4] * 6) * np.log(np.arange(24) + 1)
    np.testing.assert_allclose(metrics.nino34_lead_weights(24).numpy(), weights)
    metric = Nino34Score()
    for chunk in (slice(0, 5), slice(5, 6), slice(6, 12)):  # uneven batches, merged exactly
        metric.update(sst_pred[chunk], sst_true[chunk])
    got = metric.compute()
    p_index = metrics.nino34_index(sst_pred).numpy()
    m, rmse = _official_enso(p_index, index)
    wm, _ = _official_enso(p_index, index, weights)
    assert got["c_nino34_m"] == pytest.approx(m, rel=1e-9)
    assert got["c_nino34_wm"] == pytest.approx(wm, rel=1e-9)
    assert got["nino34_rmse"] == pytest.approx(rmse, rel=1e-9)
    assert metric.compute(per_lead_time=True)["c_nino34"].shape == (24,)
    assert metrics.nino34_skill(index, index)["c_nino34_m"] == pytest.approx(1.0, abs=1e-5)


# ----------------------------------------------------------------------------------------- knowledge control


def test_knowledge_control_error():
    rng = np.random.default_rng(11)
    ensemble = _vil(rng, (3, 2, 2, 8, 8, 1))
    anticipated = np.array([50.0, 100.0, 150.0])
    scores = KnowledgeControlError()(ensemble, anticipated)
    err = ensemble.mean(axis=(2, 3, 4, 5)) - anticipated[:, None]
    assert scores["kc_mae"] == pytest.approx(np.abs(err).mean())
    assert scores["kc_rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert scores["kc_bias"] == pytest.approx(err.mean())
    det = ensemble[:, 0]
    expected = np.abs(det.mean(axis=(1, 2, 3, 4)) - 60).mean()
    assert metrics.knowledge_control_error(det, 60.0) == pytest.approx(expected)
    peak = KnowledgeControlError("max_intensity")(det, [255.0, 255.0, 255.0])["kc_mae"]
    assert peak == pytest.approx(np.abs(det.max(axis=(1, 2, 3, 4)) - 255).mean())
    custom = KnowledgeControlError(lambda x: x[:, -1].mean(dim=(1, 2, 3)))(det, 0.0)["kc_bias"]
    assert custom == pytest.approx(det[:, -1].mean())
    with pytest.raises(ValueError, match="per_lead_time"):
        KnowledgeControlError()(det, 0.0, per_lead_time=True)
    with pytest.raises(ValueError, match="anticipated"):
        KnowledgeControlError()(det, [1.0, 2.0])


def test_energy_conservation_error_on_nbody_states():
    from prediff.data import NBodyDataset, nbody_energy

    data = NBodyDataset(3, seq_len=8, seed=5)
    items = [data[i] for i in range(3)]
    initial = np.array([float(item["energy"][3]) for item in items])  # the last of 4 context frames
    # Two "members" per sample: the simulated future, and one whose bodies move 10% faster.
    energies = np.empty((3, 2, 4))
    for b, item in enumerate(items):
        positions, velocities = item["positions"][4:].double().numpy(), item["velocities"][4:].double().numpy()
        for m, speed in enumerate((1.0, 1.1)):
            energies[b, m] = nbody_energy(positions, speed * velocities, data.masses, data.gravity, data.softening)
    np.testing.assert_allclose(energies[:, 0], np.stack([item["energy"][4:].numpy() for item in items]), rtol=1e-5)

    metric = EnergyConservationError()
    metric.update(energies[:2], initial[:2])
    metric.update(energies[2:], initial[2:])  # accumulates like one batch of 3
    got, per_lead = metric.compute(), metric.compute(per_lead_time=True)
    error = energies - initial[:, None, None]
    assert got["energy_mae"] == pytest.approx(np.abs(error).mean(), rel=1e-12)
    assert got["energy_rmse"] == pytest.approx(np.sqrt((error**2).mean()), rel=1e-12)
    assert got["energy_bias"] == pytest.approx(error.mean(), rel=1e-12)
    # The control's violation: the L2 norm over the forecast frames, per sequence.
    violation = np.mean([np.sqrt(sum(e**2 for e in error[b, m])) for b in range(3) for m in range(2)])
    assert got["energy_violation"] == pytest.approx(violation, rel=1e-12)
    np.testing.assert_allclose(per_lead["energy_mae"], np.abs(error).mean(axis=(0, 1)), rtol=1e-12)
    assert "energy_violation" not in per_lead and per_lead["energy_bias"].shape == (4,)
    # Deterministic forecasts (B, T); faster bodies carry more kinetic energy.
    plain, faster = (EnergyConservationError()(energies[:, m], initial)["energy_bias"] for m in range(2))
    assert faster > plain
    # A single initial energy for every sample; get_metric builds the same metric.
    one = metrics.get_metric("energy_conservation_error")(energies[:, 0], float(initial[0]))
    assert one["energy_mae"] == pytest.approx(np.abs(energies[:, 0] - initial[0]).mean(), rel=1e-12)
    with pytest.raises(ValueError, match=r"energy must be \(B, T\) or \(B, M, T\)"):
        metric.update(energies[..., None], initial)
    with pytest.raises(ValueError, match=r"initial_energy must be a number or of shape \(3,\)"):
        metric.update(energies, initial[:2])


# -------------------------------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(12)
    x = _vil(rng, (1, 2, 16, 16, 1))
    bad = x.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="pred contains NaN"):
        CategoricalScore()(bad, x)
    with pytest.raises(ValueError, match="target contains NaN"):
        ContinuousScore()(x, bad)
    with pytest.raises(ValueError, match="does not match"):
        CategoricalScore()(x, x[:, :1])
    with pytest.raises(ValueError, match="5 dimensions"):
        ContinuousScore()(x[0], x[0])
    with pytest.raises(ValueError, match="6 dimensions"):
        EnsembleCRPS()(x, x)
    with pytest.raises(ValueError, match=r"target shape .* expected target of shape \(1, 2, 16, 16, 1\)"):
        EnsembleCRPS()(x[:, None], x[:, :1])
    metric = CategoricalScore()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    metric.update(x, x)
    with pytest.raises(ValueError, match="same number of lead times"):
        metric.update(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="pool_sizes"):
        CategoricalScore(pool_sizes=(0,))
    with pytest.raises(ValueError, match="bias_formula"):
        CategoricalScore(bias_formula="log")
    with pytest.raises(ValueError, match="at least 2 members"):
        SpreadSkill()(x[:, None], x)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get_metric("accuracy")
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        ContinuousScore()(x.tolist(), x)


def test_get_metric_and_call_leaves_state():
    rng = np.random.default_rng(13)
    x, y = _vil(rng, (1, 2, 16, 16, 1)), _vil(rng, (1, 2, 16, 16, 1))
    metric = metrics.get_metric("MSE")
    assert isinstance(metric, ContinuousScore) and metric.names == ("mse",)
    metric.update(x, y)
    before = metric.compute()
    metric(y, y)  # scoring one batch on the side does not touch the accumulated state
    assert metric.compute() == before
    assert metrics.get_metric("fss", thresholds=(74,), scales=(2,)).names == ("fss_74_scale2",)
    assert isinstance(metrics.get_metric("crps"), EnsembleCRPS)


def test_crps_tensor_is_the_metric_and_differentiable():
    rng = np.random.default_rng(11)
    pred = torch.tensor(rng.normal(size=(2, 4, 2, 3, 3, 1)), requires_grad=True)
    target = torch.tensor(rng.normal(size=(2, 2, 3, 3, 1)))
    for fair in (False, True):
        loss = metrics.crps_ensemble_tensor(pred, target, fair=fair)
        np.testing.assert_allclose(
            loss.detach().numpy(), _crps_pairwise(pred.detach().numpy(), target.numpy(), fair=fair), rtol=1e-12
        )
        assert torch.autograd.gradcheck(lambda p, f=fair: metrics.crps_ensemble_tensor(p, target, fair=f), (pred,))
    # The fair CRPS of members that all sit on the observation is 0; spreading them costs skill but pays spread.
    same = target.unsqueeze(1).expand(-1, 4, -1, -1, -1, -1)
    assert float(metrics.crps_ensemble_tensor(same, target, fair=True).abs().max()) == 0.0
    with pytest.raises(ValueError, match="does not match pred shape"):
        metrics.crps_ensemble_tensor(pred, target[:, :1])
    with pytest.raises(ValueError, match="at least 2 members"):
        metrics.crps_ensemble_tensor(pred[:, :1], target, fair=True)
