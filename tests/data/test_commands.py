"""The ``prediff data`` commands: generate, inspect, refuse to overwrite."""

import os
import stat

import numpy as np
import pytest
import torch

from prediff.cli import main
from prediff.data import ArraySequenceDataset, NBodyDataset, SyntheticStormDataset

h5py = pytest.importorskip("h5py")


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_generate_storms_then_inspect(tmp_path, capsys, suffix):
    out = tmp_path / f"storms{suffix}"
    args = ["data", "generate", "storms", "--out", str(out), "--num-sequences", "3", "--seq-len", "4"]
    args += ["--height", "32", "--width", "32", "--seed", "9", "--quiet"]
    assert main(args) == 0
    reread = ArraySequenceDataset.from_file(out)
    direct = SyntheticStormDataset(3, 4, 32, 32, seed=9)
    for i in range(3):
        assert torch.equal(reread[i]["frames"], direct[i]["frames"])
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames: shape (3, 4, 32, 32, 1)  dtype uint8  range [0, " in text
    assert "generator: SyntheticStormDataset" in text and "seed: 9" in text


def test_generate_nbody_with_state(tmp_path, capsys):
    out = tmp_path / "nbody.h5"
    args = ["data", "generate", "nbody", "--out", str(out), "--num-sequences", "2", "--seq-len", "5"]
    assert main([*args, "--quiet"]) == 0
    direct = NBodyDataset(2, seq_len=5)
    with h5py.File(out, "r") as f:
        assert f["frames"].shape == (2, 5, 64, 64, 1) and f["frames"].dtype == np.uint8
        np.testing.assert_array_equal(f["energy"][1], direct[1]["energy"].numpy())
        np.testing.assert_array_equal(f["positions"][0], direct[0]["positions"].numpy())
        expected = np.round(direct[0]["frames"].numpy() * 255)
        np.testing.assert_array_equal(f["frames"][0], expected)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_data_sets_get_the_permissions_of_plain_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        for name in ("storms.h5", "storms.zarr"):
            args = ["data", "generate", "storms", "--out", str(tmp_path / name), "--num-sequences", "1"]
            assert main([*args, "--seq-len", "2", "--height", "16", "--width", "16", "--quiet"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "storms.h5").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "storms.zarr").stat().st_mode) == 0o777 & ~umask


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert main(["data", "generate", "storms", "--out", str(tmp_path / "x.npy"), "--quiet"]) == 2
    assert "must end in" in capsys.readouterr().err
    args = ["data", "generate", "storms", "--out", str(tmp_path / "x.h5"), "--num-sequences", "0", "--quiet"]
    assert main(args) == 2
    assert "num_sequences" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "missing.h5")]) == 2
    assert not list(tmp_path.iterdir())


def test_inspect_npy_and_refuse_what_is_not_npy(tmp_path, capsys):
    np.save(tmp_path / "ctx.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert main(["data", "inspect", str(tmp_path / "ctx.npy")]) == 0
    assert "format: npy\n  array: shape (2, 3, 4)  dtype float32  range [0, 23]" in capsys.readouterr().out
    (tmp_path / "text.npy").write_text("1 2 3")
    (tmp_path / "text.npz").write_text("1 2 3")
    assert main(["data", "inspect", str(tmp_path / "text.npy")]) == 2
    assert "text.npy is not a NumPy .npy file" in capsys.readouterr().err  # not numpy's "pickled data"
    assert main(["data", "inspect", str(tmp_path / "text.npz")]) == 2
    assert "text.npz is not a NumPy .npz archive" in capsys.readouterr().err


@pytest.mark.parametrize("name, file_format", [("x.h5", "HDF5"), ("x.nc", "netCDF"), ("x.zarr", "a zarr store")])
def test_inspect_unreadable_file_names_it_and_its_format(tmp_path, capsys, name, file_format):
    path = tmp_path / name
    if name.endswith(".zarr"):
        path.mkdir()  # an empty folder: no zarr metadata
    else:
        path.write_text("not really")
    assert main(["data", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prediff data: error: cannot read {path} as {file_format}: "), err
    assert len(err.splitlines()) == 1  # one line, no traceback
