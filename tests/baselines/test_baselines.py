"""Baselines: persistence always; optical-flow extrapolation and STEPS when pysteps is installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from prediff.baselines import estimate_motion, extrapolation, get_baseline, persistence, steps
from prediff.baselines.optical_flow import proesmans_levels
from prediff.metrics import crps_ensemble, mse


def _moving_storm(num_frames=8, size=48, dx=2.0, dy=1.0):
    """A Gaussian cell of peak 200 moving (dx, dy) pixels per frame: ``(1, T, size, size, 1)``."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames = [
        200 * np.exp(-((xx - 14 - dx * t) ** 2 + (yy - 18 - dy * t) ** 2) / (2 * 5.0**2)) for t in range(num_frames)
    ]
    return np.asarray(frames)[None, :, :, :, None]


def test_persistence_numpy_and_torch():
    rng = np.random.default_rng(0)
    context = rng.uniform(0, 255, size=(2, 4, 8, 9, 2)).astype(np.float32)
    forecast = persistence(context, 3)
    assert forecast.shape == (2, 3, 8, 9, 2) and forecast.dtype == np.float32
    for t in range(3):
        np.testing.assert_array_equal(forecast[:, t], context[:, -1])
    tensor = torch.from_numpy(context).double()
    out = persistence(tensor, 3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (2, 3, 8, 9, 2)
    torch.testing.assert_close(out, tensor[:, -1:].expand(-1, 3, -1, -1, -1))
    out[:, 0] += 1  # a real copy, not a view of the context
    torch.testing.assert_close(tensor, torch.from_numpy(context).double())
    assert get_baseline("persistence") is persistence


def test_baseline_input_errors():
    context = np.zeros((1, 4, 8, 8, 1))
    with pytest.raises(ValueError, match=r"\(B, T_in, H, W, C\)"):
        persistence(context[0], 2)
    with pytest.raises(ValueError, match="num_frames"):
        persistence(context, 0)
    bad = context.copy()
    bad[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        persistence(bad, 2)
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        persistence(context.tolist(), 2)
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("climatology")


def test_pysteps_baselines_name_the_extra_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysteps", None)  # makes `import pysteps` fail as if not installed
    with pytest.raises(ImportError, match=r"prediff\[pysteps\]"):
        extrapolation(np.zeros((1, 3, 16, 16, 1)), 2)
    with pytest.raises(ImportError, match=r"prediff\[pysteps\]"):
        steps(np.zeros((1, 3, 16, 16, 1)), 2)


def test_extrapolation_follows_the_storm():
    pytest.importorskip("pysteps")
    seq = _moving_storm()
    context, future = seq[:, :5], seq[:, 5:]
    forecast = extrapolation(context, 3)
    assert forecast.shape == future.shape
    # Moving the cell is far better than leaving it where it was.
    assert mse(forecast, future) < 0.05 * mse(persistence(context, 3), future)
    tensor = extrapolation(torch.from_numpy(context).float(), 3, motion_frames=2)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert mse(tensor, torch.from_numpy(future).float()) < 0.05 * mse(persistence(context, 3), future)


def test_proesmans_pyramid_stops_at_two_pixels():
    # pysteps' default of 6 levels halves 48 x 48 frames down to 1 x 1, where its kernel reads outside its arrays.
    assert proesmans_levels((48, 48)) == 5  # 48, 24, 12, 6, 3
    assert proesmans_levels((64, 200)) == 6  # 64 ... 2: pysteps' default stays
    assert proesmans_levels((384, 384)) == 6
    assert proesmans_levels((3, 100)) == 1
    with pytest.raises(ValueError, match=r"at least 2 x 2 pixels, got \(1, 9\)"):
        proesmans_levels((1, 9))


@pytest.mark.parametrize("size", [24, 33, 48])
def test_motion_of_small_frames_is_the_storm_motion(size):
    pytest.importorskip("pysteps")
    # The cell moves (2, 1) pixels per frame; on frames this small pysteps' own pyramid read garbage memory, and now
    # and then the motion came out as 1e+232 pixels per frame (the forecast then worse than persistence).
    frames = _moving_storm(num_frames=3, size=size, dx=2.0, dy=1.0)[0, :, :, :, 0]
    for _ in range(5):
        velocity = estimate_motion(frames)
        assert np.isfinite(velocity).all() and np.abs(velocity).max() < 4
        np.testing.assert_allclose(velocity[:, 18, 14], [2.0, 1.0], atol=0.3)


def test_steps_ensemble():
    pytest.importorskip("pysteps")
    seq = _moving_storm()
    context, future = seq[:, :5], seq[:, 5:]
    kwargs = {"num_members": 4, "num_cascade_levels": 4, "show_progress": False}
    ensemble = steps(context, 3, seed=1, **kwargs)
    assert ensemble.shape == (1, 4, 3, 48, 48, 1)
    assert ensemble.min() >= 0 and ensemble.max() <= 255
    assert np.abs(ensemble[:, 0] - ensemble[:, 1]).max() > 1.0  # members differ
    # Seeded: the same members again.
    np.testing.assert_allclose(ensemble, steps(context, 3, seed=1, **kwargs), rtol=0, atol=1e-6)
    persistence_mse = mse(persistence(context, 3), future)
    assert mse(ensemble.mean(axis=1), future) < 0.5 * persistence_mse
    assert crps_ensemble(ensemble, future) < np.abs(persistence(context, 3) - future).mean()
    dry = steps(np.zeros((1, 3, 32, 32, 1)), 2, num_members=2, num_cascade_levels=3, show_progress=False)
    assert dry.shape == (1, 2, 2, 32, 32, 1) and not dry.any()
    with pytest.raises(ValueError, match="at least 3 context frames"):
        steps(context[:, :2], 2)
    assert get_baseline("steps") is steps
