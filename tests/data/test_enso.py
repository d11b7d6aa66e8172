"""ICAR-ENSO on miniature netCDF files in the published layout."""

import numpy as np
import pytest
import torch

from prediff.data import ENSO_SST_RANGE, ENSODataset
from prediff.data.enso import unfold_records
from prediff.metrics import nino34_index

xr = pytest.importorskip("xarray")

# Tiny layout: CMIP6 2 models x 4 years, CMIP5 3 models x 3 years.
LAYOUT = {"cmip6_models": 2, "cmip6_years": 4, "cmip5_models": 3, "cmip5_years": 3}


def _series(rng, months):
    return rng.uniform(-3, 3, (months, 24, 72)).astype(np.float32)


@pytest.fixture(scope="module")
def enso_root(tmp_path_factory):
    """Monthly series per model, cut into overlapping 36-month year-records as in the real files."""
    root = tmp_path_factory.mktemp("enso")
    rng = np.random.default_rng(0)
    records, labels, truth = [], [], []
    for models, years in ((2, 4), (3, 3)):
        for _ in range(models):
            series = _series(rng, years * 12 + 24)
            nino = rng.uniform(-2, 2, years * 12 + 24).astype(np.float32)
            truth.append((series, nino))
            for y in range(years):
                records.append(series[12 * y : 12 * y + 36])
                labels.append(nino[12 * y : 12 * y + 36])
    lon = np.arange(0, 360, 5.0)
    coords = {"year": np.arange(1, len(records) + 1), "month": np.arange(1, 37)}
    xr.Dataset(
        {"sst": (("year", "month", "lat", "lon"), np.stack(records))},
        coords={**coords, "lat": np.arange(-55, 65, 5.0), "lon": lon},
    ).to_netcdf(root / "CMIP_train.nc")
    xr.Dataset({"nino": (("year", "month"), np.stack(labels))}, coords=coords).to_netcdf(root / "CMIP_label.nc")
    return root, truth, (lon >= 95) & (lon <= 330)


def test_windows_values_and_labels(enso_root):
    root, truth, columns = enso_root
    ds = ENSODataset(root, split="all", stride=1, **LAYOUT)
    window = 26
    lengths = [4 * 12 + 24] * 2 + [3 * 12 + 24] * 3
    assert len(ds) == sum(length - window + 1 for length in lengths)
    # The first window of the third model (CMIP5 model 0).
    index = 2 * (72 - window + 1)
    item = ds[index + 5]
    assert (item["source"], item["model"], item["start"]) == ("CMIP5", 0, 5)
    series, nino = truth[2]
    expected = series[5 : 5 + window][:, :, columns]
    low, high = ENSO_SST_RANGE
    assert item["frames"].shape == (26, 24, 48, 1) and item["frames"].dtype == torch.float32
    np.testing.assert_allclose(item["frames"][..., 0].numpy(), (expected - low) / (high - low), rtol=1e-5)
    np.testing.assert_allclose(ds.unscale(item["frames"][..., 0]).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(item["nino"].numpy(), nino[5 + 12 : 5 + 12 + 12])


def test_splits_and_strides(enso_root):
    root, _, _ = enso_root
    train = ENSODataset(root, split="train", **LAYOUT)
    val = ENSODataset(root, split="val", **LAYOUT)
    test = ENSODataset(root, split="test", **LAYOUT)
    assert {(train[i]["source"], train[i]["model"]) for i in range(len(train))} == {
        ("CMIP6", 0),
        ("CMIP6", 1),
        ("CMIP5", 0),
    }
    assert {val[i]["model"] for i in range(len(val))} == {1} and {test[i]["model"] for i in range(len(test))} == {2}
    assert [train[i]["start"] for i in range(4)] == [0, 10, 20, 30]  # Earthformer's training gap
    assert len(test) == len(range(0, 60 - 26 + 1, 11))


def test_unfold_and_nino_index_of_the_data_against_direct_formulas():
    rng = np.random.default_rng(1)
    series = rng.normal(size=(5 * 12 + 24, 2))
    records = np.stack([series[12 * y : 12 * y + 36] for y in range(5)])
    np.testing.assert_array_equal(unfold_records(records), series)
    sst = rng.normal(size=(2, 8, 24, 48))
    got = nino34_index(sst[..., None]).numpy()
    expected = np.zeros((2, 6))
    for b in range(2):
        for t in range(6):
            expected[b, t] = np.mean([sst[b, t + k, 10:13, 19:30].mean() for k in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(nino34_index(torch.from_numpy(sst)[..., None]).numpy(), expected, rtol=1e-12)


def test_bad_input(enso_root, tmp_path):
    root, _, _ = enso_root
    with pytest.raises(FileNotFoundError, match="CMIP_train.nc"):
        ENSODataset(tmp_path, **LAYOUT)
    with pytest.raises(ValueError, match="year-records"):
        ENSODataset(root, cmip6_models=15)
    with pytest.raises(ValueError, match="split"):
        ENSODataset(root, split="validation", **LAYOUT)
    with pytest.raises(ValueError, match="outside the declared value_range"):
        ENSODataset(root, value_range=(-1.0, 1.0), **LAYOUT)[0]
    clipped = ENSODataset(root, value_range=(-1.0, 1.0), clip=True, **LAYOUT)[0]["frames"]
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "CMIP_train.nc").write_bytes(b"not netCDF")
    (corrupt / "CMIP_label.nc").write_bytes((root / "CMIP_label.nc").read_bytes())
    with pytest.raises(ValueError, match=r"cannot read .*CMIP_train\.nc as netCDF"):
        ENSODataset(corrupt, **LAYOUT)
