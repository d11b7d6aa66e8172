"""Value transforms (prediff.utils.units): pysteps' dB transform and log(R + offset), on numpy, torch and numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prediff.utils.units import (
    check_value_transform,
    from_transformed,
    to_intensity_unit,
    to_physical,
    to_transformed,
    to_unit,
)

DB = {"kind": "db", "threshold": 0.1, "zerovalue": -15.0}
LOG = {"kind": "log", "offset": 0.01}


def rain_rates(seed: int = 0, shape=(4, 16, 16)) -> np.ndarray:
    """Rain rates in mm/h over four orders of magnitude, a third of them dry, a few NaN (outside the domain)."""
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.uniform(np.log(1e-3), np.log(200.0), shape)).astype(np.float32)
    rates[rng.random(shape) < 0.33] = 0.0
    rates[rng.random(shape) < 0.05] = np.nan
    return rates


def test_db_transform_matches_pysteps_both_ways():
    transformation = pytest.importorskip("pysteps.utils.transformation")
    rates = rain_rates()
    expected, metadata = transformation.dB_transform(rates.copy(), threshold=0.1, zerovalue=-15.0)
    np.testing.assert_allclose(to_transformed(rates, DB), expected, rtol=1e-6, equal_nan=True)
    back, _ = transformation.dB_transform(expected.copy(), metadata, inverse=True)
    np.testing.assert_allclose(from_transformed(expected, DB), back, rtol=1e-5, equal_nan=True)


def test_round_trip_keeps_rain_above_threshold_nan_and_dtype():
    rates = rain_rates(1)
    for transform in (DB, LOG, None):
        unit = to_unit(rates, (-15.0, 25.0) if transform is DB else (0.0, 255.0), transform)
        assert unit.dtype == np.float32
        back = to_physical(unit, (-15.0, 25.0) if transform is DB else (0.0, 255.0), transform)
        assert back.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(back), np.isnan(rates))
        wet = rates >= 0.1
        np.testing.assert_allclose(back[wet], rates[wet], rtol=2e-5)
        if transform is DB:  # below the threshold is dry
            assert (back[(rates < 0.1)] == 0).all()
        else:
            np.testing.assert_allclose(back[~np.isnan(rates)], rates[~np.isnan(rates)], rtol=2e-5, atol=1e-6)


def test_torch_numpy_and_numbers_agree():
    rates = rain_rates(2)
    for transform in (DB, LOG):
        as_numpy = to_unit(rates, (-2.0, 6.0), transform)
        tensor = torch.from_numpy(rates)
        as_torch = to_unit(tensor, (-2.0, 6.0), transform)
        assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
        np.testing.assert_allclose(as_torch.numpy(), as_numpy, rtol=1e-6, atol=1e-7, equal_nan=True)
        np.testing.assert_allclose(
            to_physical(as_torch, (-2.0, 6.0), transform).numpy(),
            to_physical(as_numpy, (-2.0, 6.0), transform),
            rtol=1e-5,
            equal_nan=True,
        )
        number = to_unit(5.0, (-2.0, 6.0), transform)
        assert isinstance(number, float)
        assert to_physical(number, (-2.0, 6.0), transform) == pytest.approx(5.0, rel=1e-12)


def test_linear_is_the_old_map_bit_for_bit():
    values = np.random.default_rng(3).uniform(0, 255, (5, 7)).astype(np.float32)
    for transform in (None, {"kind": "linear"}):
        np.testing.assert_array_equal(to_unit(values, (0, 255), transform), (values - 0.0) / 255.0)
        np.testing.assert_array_equal(to_physical(values, (0, 255), transform), values * 255.0 + 0.0)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ({"kind": "sqrt"}, "kind must be one of"),
        ({"kind": "db", "offset": 1.0}, "unknown: \\['offset'\\]"),
        ({"kind": "db", "threshold": 0.0}, "threshold must be > 0"),
        ({"kind": "db", "threshold": 0.1, "zerovalue": 0.0}, "must not exceed the threshold's -10 dB"),
        ({"kind": "log", "offset": float("nan")}, "offset must be a finite number"),
        ({"kind": "log", "offset": -1}, "offset must be > 0"),
        ("db", "must be a mapping"),
    ],
)
def test_bad_transforms_are_refused_by_name(transform, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_value_transform(transform)


def test_defaults_are_filled_in():
    assert check_value_transform({"kind": "db"}) == DB
    assert check_value_transform({"kind": "log"}) == LOG
    assert check_value_transform({"kind": "linear"}) is None


def test_intensity_scale_is_linear_in_rain_rate_between_the_physical_ends():
    db = {"kind": "db", "threshold": 0.1, "zerovalue": -15.0}
    top = 10**2.5  # 25 dB in mm/h
    rates = torch.tensor([0.0, 1.0, 10.0, top])
    np.testing.assert_allclose(to_intensity_unit(rates, (-15.0, 25.0), db), rates / top, rtol=1e-6)
    # The mean of the scale is the scale of the mean rain rate, which the dB scale is not.
    field = torch.tensor([0.0, 0.0, 1.0, 50.0])
    mean = to_intensity_unit(field, (-15.0, 25.0), db).mean()
    torch.testing.assert_close(mean, to_intensity_unit(field.mean(), (-15.0, 25.0), db))
    assert not torch.isclose(to_unit(field, (-15.0, 25.0), db).mean(), to_unit(field.mean(), (-15.0, 25.0), db))
    # Without a transform it is the models' own [0, 1] scale.
    values = torch.linspace(0, 255, 7)
    torch.testing.assert_close(to_intensity_unit(values, (0.0, 255.0)), to_unit(values, (0.0, 255.0)))
