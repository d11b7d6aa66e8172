"""Windows over NumPy, HDF5, zarr and xarray arrays; written data sets read back."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from prediff.data import ArraySequenceDataset, write_sequences

h5py = pytest.importorskip("h5py")


@pytest.fixture
def data():
    return np.random.default_rng(0).integers(0, 256, (3, 11, 8, 6, 2), dtype=np.uint8)


def _check(ds, data, seq_len, stride):
    per = 1 + (data.shape[1] - seq_len) // stride
    assert len(ds) == data.shape[0] * per
    for index in range(len(ds)):
        n, w = divmod(index, per)
        item = ds[index]
        assert (item["sequence"], item["start"]) == (n, w * stride)
        expected = data[n, w * stride : w * stride + seq_len].astype(np.float32) / 255.0
        np.testing.assert_allclose(item["frames"].numpy(), expected, rtol=1e-6)


def test_numpy_windows(data):
    _check(ArraySequenceDataset(data, seq_len=4, value_range=(0, 255), stride=3), data, 4, 3)
    _check(ArraySequenceDataset(torch.from_numpy(data), seq_len=11, value_range=(0, 255)), data, 11, 11)


def test_hdf5_zarr_xarray(tmp_path, data):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=data)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        ds = ArraySequenceDataset(f["x"], seq_len=5, value_range=(0, 255), stride=2)
    _check(ds, data, 5, 2)  # reopens the file by name
    frames = torch.cat([b["frames"] for b in DataLoader(ds, batch_size=4, num_workers=2)])
    assert torch.equal(frames, torch.stack([ds[i]["frames"] for i in range(len(ds))]))
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, dtype=data.dtype)
    z[:] = data
    _check(ArraySequenceDataset(z, seq_len=6, value_range=(0, 255), stride=5), data, 6, 5)
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(data.transpose(1, 0, 2, 3, 4), dims=("time", "sample", "y", "x", "band"))
    dims = ("sample", "time", "y", "x", "band")
    _check(ArraySequenceDataset(da, seq_len=3, value_range=(0, 255), stride=4, dims=dims), data, 3, 4)


def test_written_file_round_trip(tmp_path, data):
    for name in ("w.h5", "w.zarr"):
        path = write_sequences(
            tmp_path / name,
            iter(data),
            num_sequences=3,
            frame_shape=data.shape[1:],
            metadata={"generator": "test", "value_range": [0, 255]},
            progress=False,
            chunk_sequences=2,
        )
        _check(ArraySequenceDataset.from_file(path, seq_len=4, stride=4), data, 4, 4)
        with pytest.raises(FileExistsError):
            write_sequences(path, iter(data), 3, data.shape[1:], progress=False)
    with pytest.raises(ValueError, match="expected num_sequences=4"):
        write_sequences(tmp_path / "short.h5", iter(data), 4, data.shape[1:], progress=False)
    assert not (tmp_path / "short.h5").exists()  # nothing half-written is left behind
    with pytest.raises(ValueError, match="more than num_sequences=2"):
        write_sequences(tmp_path / "long.zarr", iter(data), 2, data.shape[1:], progress=False)
    assert not list(tmp_path.glob("*long*")) and not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="must end in"):
        write_sequences(tmp_path / "x.npy", iter(data), 3, data.shape[1:], progress=False)


def test_bad_input(data):
    with pytest.raises(ValueError, match="5 dimensions"):
        ArraySequenceDataset(data[..., 0], seq_len=2, value_range=(0, 255))
    with pytest.raises(ValueError, match="exceeds"):
        ArraySequenceDataset(data, seq_len=12, value_range=(0, 255))
    with pytest.raises(ValueError, match="value_range"):
        ArraySequenceDataset(data, seq_len=2, value_range=(5, 5))
    with pytest.raises(ValueError, match="dtype"):
        ArraySequenceDataset(data.astype(bool), seq_len=2, value_range=(0, 1))
    ds = ArraySequenceDataset(data, seq_len=2, value_range=(0, 100))
    with pytest.raises(ValueError, match=r"window 0 .*outside the declared value_range \[0, 100\]"):
        ds[0]
    clipped = ArraySequenceDataset(data, seq_len=2, value_range=(0, 100), clip=True)[0]["frames"]
    assert float(clipped.max()) == 1.0
