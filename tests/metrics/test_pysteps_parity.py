"""Our verification scores agree with pysteps' on random data (skipped when pysteps is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

from prediff import metrics

pysteps_verification = pytest.importorskip("pysteps.verification")


def _fields(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, size=shape)
    x[rng.uniform(size=shape) < 0.3] = 0.0
    return x


@pytest.mark.parametrize("threshold", [16, 74, 181])
def test_categorical_scores_agree_with_pysteps(threshold):
    pred, target = _fields(0, (2, 3, 24, 24, 1)), _fields(1, (2, 3, 24, 24, 1))
    ours = metrics.CategoricalScore(thresholds=(threshold,), pool_sizes=(1,), eps=0.0)(pred, target)
    theirs = pysteps_verification.det_cat_fct(pred, target, threshold, scores=["POD", "FAR", "CSI", "BIAS"])
    assert ours[f"pod_{threshold}"] == pytest.approx(theirs["POD"], rel=1e-12)
    assert ours[f"sucr_{threshold}"] == pytest.approx(1.0 - theirs["FAR"], rel=1e-12)
    assert ours[f"csi_{threshold}"] == pytest.approx(theirs["CSI"], rel=1e-12)
    assert ours[f"bias_{threshold}"] == pytest.approx(theirs["BIAS"], rel=1e-12)
    # With the official eps the difference is negligible at these counts.
    default = metrics.CategoricalScore(thresholds=(threshold,), pool_sizes=(1,))(pred, target)
    assert default[f"csi_{threshold}"] == pytest.approx(theirs["CSI"], rel=1e-6)


def test_crps_agrees_with_pysteps():
    # Continuous values: pysteps' Hersbach decomposition uses strict inequalities and gives no weight to an
    # observation equal to a member, so the two only agree where there are no ties (checked below).
    rng = np.random.default_rng(2)
    pred, target = rng.uniform(0, 255, size=(1, 6, 2, 20, 20, 1)), rng.uniform(0, 255, size=(1, 2, 20, 20, 1))
    ours = metrics.crps_ensemble(pred, target)
    theirs = pysteps_verification.probscores.CRPS(pred[0], target[0])  # members first
    assert ours == pytest.approx(theirs, rel=1e-10)


def test_crps_with_ties_is_the_exact_integral():
    # Members (0, 0, 1), observation 0: F = 2/3 on [0, 1), so CRPS = integral of (2/3 - 1)^2 = 1/9.
    pred = np.array([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1, 1, 1)
    target = np.zeros((1, 1, 1, 1, 1))
    assert metrics.crps_ensemble(pred, target) == pytest.approx(1 / 9, rel=1e-12)


@pytest.mark.parametrize(("threshold", "scale"), [(16, 1), (74, 3), (133, 8)])
def test_fss_agrees_with_pysteps(threshold, scale):
    pred, target = _fields(4, (1, 3, 32, 32, 1)), _fields(5, (1, 3, 32, 32, 1))
    ours = metrics.FractionsSkillScore((threshold,), (scale,))(pred, target)[f"fss_{threshold}_scale{scale}"]
    state = pysteps_verification.spatialscores.fss_init(threshold, scale)
    for t in range(3):
        pysteps_verification.spatialscores.fss_accum(state, pred[0, t, :, :, 0], target[0, t, :, :, 0])
    assert ours == pytest.approx(pysteps_verification.spatialscores.fss_compute(state), rel=1e-10)


def test_rank_histogram_agrees_with_pysteps():
    rng = np.random.default_rng(6)
    pred, target = rng.normal(size=(1, 5, 2, 24, 24, 1)), rng.normal(size=(1, 2, 24, 24, 1))
    ours = metrics.rank_histogram(pred, target, normalize=False)
    theirs = pysteps_verification.ensscores.rankhist(pred[0], target[0], normalize=False)
    np.testing.assert_array_equal(ours, theirs)
    # With X_min the tie-breaking is random in both, so compare the normalized histograms loosely.
    wet_pred, wet_target = _fields(7, (1, 4, 2, 48, 48, 1)), _fields(8, (1, 2, 48, 48, 1))
    ours = metrics.rank_histogram(wet_pred, wet_target, x_min=16.0)
    theirs = pysteps_verification.ensscores.rankhist(wet_pred[0], wet_target[0], X_min=16.0)
    np.testing.assert_allclose(ours, theirs, atol=0.02)
