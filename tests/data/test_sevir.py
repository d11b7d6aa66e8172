"""SEVIR / SEVIR-LR on a miniature tree in the published layout (real CATALOG.csv and HDF5 files)."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from prediff.cli import main as cli_main
from prediff.data import SEVIRDataset, downsample_sevir, earthformer_sevir_splits, prediff_sevir_splits
from prediff.data.sevir import block_max

h5py = pytest.importorskip("h5py")

SIZE, FRAMES = 48, 49
FILES = {
    "2018H1": "vil/2018/SEVIR_VIL_STORMEVENTS_2018_0101_0630.h5",
    "2019H1": "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0101_0630.h5",
    "2019H2": "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5",
    "ir": "ir069/2018/SEVIR_IR069_STORMEVENTS_2018_0101_0630.h5",
}
# (id, file key, file_index, time_utc, pct_missing)
VIL_ROWS = [
    ("S1", "2018H1", 0, "2018-03-01 10:00:00", 0.0),
    ("S2", "2018H1", 1, "2018-05-02 11:00:00", 0.0),
    ("S3", "2018H1", 2, "2018-06-03 12:00:00", 0.4),  # incomplete: dropped
    ("S4", "2019H1", 0, "2019-02-10 01:00:00", 0.0),
    ("S5", "2019H1", 1, "2019-05-31 23:55:00", 0.0),
    ("S6", "2019H1", 2, "2019-06-01 00:00:00", 0.0),  # exactly on the split date: train side
    ("S7", "2019H2", 0, "2019-08-01 00:00:00", 0.0),
    ("S8", "2019H2", 1, "2019-09-01 00:00:00", 0.0),
    ("D1", "2019H2", 2, "2019-10-01 00:00:00", 0.0),  # duplicated id: dropped
    ("D1", "2019H2", 3, "2019-10-02 00:00:00", 0.0),
]
COLUMNS = [
    "id",
    "file_name",
    "file_index",
    "img_type",
    "time_utc",
    "minute_offsets",
    "episode_id",
    "event_id",
    "event_type",
    "llcrnrlat",
    "llcrnrlon",
    "urcrnrlat",
    "urcrnrlon",
    "proj",
    "size_x",
    "size_y",
    "height_m",
    "width_m",
    "data_min",
    "data_max",
    "pct_missing",
]


def _row(event_id, file_name, index, img_type, time, missing):
    offsets = ":".join(str(m) for m in range(-120, 125, 5))
    return [
        event_id,
        file_name,
        index,
        img_type,
        time,
        offsets,
        1,
        2,
        "Hail",
        30.0,
        -100.0,
        33.0,
        -96.0,
        "+proj=laea",
        SIZE,
        SIZE,
        384000.0,
        384000.0,
        0.0,
        255.0,
        missing,
    ]


@pytest.fixture(scope="module")
def sevir_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sevir")
    rng = np.random.default_rng(0)
    rows, counts = [], {}
    for event_id, key, index, time, missing in VIL_ROWS:
        rows.append(_row(event_id, FILES[key], index, "vil", time, missing))
        counts[key] = max(counts.get(key, 0), index + 1)
    rows.append(_row("S1", FILES["ir"], 0, "ir069", "2018-03-01 10:00:00", 0.0))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "CATALOG.csv", index=False)
    for key, count in counts.items():
        path = root / "data" / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            ids = [r[0].encode() for r in VIL_ROWS if r[1] == key]
            f.create_dataset("id", data=np.array(ids, dtype="S"))
            f.create_dataset("vil", data=rng.integers(0, 256, (count, SIZE, SIZE, FRAMES), dtype=np.uint8))
    path = root / "data" / FILES["ir"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("ir069", data=rng.integers(-8000, -1000, (1, SIZE, SIZE, FRAMES), dtype=np.int16))
    return root


def _raw(root, key, index):
    with h5py.File(root / "data" / FILES[key], "r") as f:
        return f["vil"][index]


def test_windows_filters_and_values(sevir_root):
    ds = SEVIRDataset(sevir_root, seq_len=13, stride=6)
    assert list(ds.events["id"]) == ["S1", "S2", "S4", "S5", "S6", "S7", "S8"]
    per_event = 1 + (FRAMES - 13) // 6
    assert len(ds) == 7 * per_event
    item = ds[per_event + 2]  # event S2, third window
    assert item["event_id"] == "S2" and item["start"] == 12
    assert item["time_utc"] == "2018-05-02T11:00:00"
    expected = np.moveaxis(_raw(sevir_root, "2018H1", 1)[:, :, 12:25], -1, 0)[..., None] / 255.0
    assert item["frames"].shape == (13, SIZE, SIZE, 1) and item["frames"].dtype == torch.float32
    np.testing.assert_allclose(item["frames"].numpy(), expected, rtol=1e-6)
    ds25 = SEVIRDataset(sevir_root, seq_len=25, stride=12)
    assert len(ds25) == 7 * (1 + (FRAMES - 25) // 12)
    assert len(SEVIRDataset(sevir_root, seq_len=13, stride=6, drop_missing=False)) == 8 * per_event


def test_date_filters_are_exclusive_start_inclusive_end(sevir_root):
    ds = SEVIRDataset(sevir_root, 13, 6, start_date="2018-05-02 11:00:00", end_date="2019-06-01")
    assert list(ds.events["id"]) == ["S4", "S5", "S6"]
    assert len(SEVIRDataset(sevir_root, 13, 6, event_ids=["S7"])) == 7


def test_other_image_types(sevir_root):
    ds = SEVIRDataset(sevir_root, 13, 12, img_type="ir069")
    item = ds[0]
    with h5py.File(sevir_root / "data" / FILES["ir"], "r") as f:
        raw = np.moveaxis(f["ir069"][0, :, :, :13], -1, 0).astype(np.float64)
    np.testing.assert_allclose(item["frames"][..., 0].numpy(), (raw + 8000) / 7000, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside the declared value_range"):
        SEVIRDataset(sevir_root, 13, 12, img_type="ir069", value_range=(-5000, -1000), clip=False)[0]


def test_bad_input(sevir_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="CATALOG.csv"):
        SEVIRDataset(tmp_path)
    with pytest.raises(ValueError, match="fewer than seq_len=50"):
        SEVIRDataset(sevir_root, seq_len=50)
    with pytest.raises(ValueError, match="does not occur"):
        SEVIRDataset(sevir_root, img_type="vis")
    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    pd.read_csv(sevir_root / "CATALOG.csv").drop(columns=["pct_missing"]).to_csv(broken / "CATALOG.csv")
    with pytest.raises(ValueError, match="pct_missing"):
        SEVIRDataset(broken)
    pd.read_csv(sevir_root / "CATALOG.csv").to_csv(broken / "CATALOG.csv", index=False)
    with pytest.raises(FileNotFoundError, match="SEVIR_VIL_STORMEVENTS_2018_0101_0630.h5"):
        SEVIRDataset(broken)
    assert len(SEVIRDataset(broken, skip_missing_files=True)) == 0
    corrupt = broken / "data" / FILES["2018H1"]
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"truncated download")
    with pytest.raises(ValueError, match=r"cannot read .*SEVIR_VIL_STORMEVENTS_2018_0101_0630\.h5 as HDF5"):
        SEVIRDataset(broken)


def _one_event_root(root, vil, time_utc="2018-03-01 10:00:00"):
    """A SEVIR tree with one VIL event E1: ``vil`` is the file's (1, H, W, T) dataset."""
    path = root / "data" / FILES["2018H1"]
    path.parent.mkdir(parents=True)
    catalog = pd.DataFrame([_row("E1", FILES["2018H1"], 0, "vil", time_utc, 0.0)], columns=COLUMNS)
    catalog.to_csv(root / "CATALOG.csv", index=False)
    with h5py.File(path, "w") as f:
        f.create_dataset("vil", data=vil)
    return root


def test_bad_dtypes_dates_and_catalogs(tmp_path):
    text = np.full((1, 8, 8, 13), b"x", dtype="S1")
    with pytest.raises(ValueError, match=r"SEVIR_VIL_STORMEVENTS_2018_0101_0630\.h5:vil holds \|S1 values"):
        SEVIRDataset(_one_event_root(tmp_path / "text", text))
    # Float VIL is refused with the default range (x / 255 of already scaled data passes every range check)...
    floats = np.random.default_rng(0).random((1, 8, 8, 13)).astype(np.float32)
    root = _one_event_root(tmp_path / "float", floats)
    with pytest.raises(ValueError, match=r":vil holds float32 values, but SEVIR stores vil as uint8"):
        SEVIRDataset(root)
    # ... and read from a declared range.
    item = SEVIRDataset(root, value_range=(0.0, 1.0))[0]
    np.testing.assert_allclose(item["frames"][..., 0].numpy(), np.moveaxis(floats[0], -1, 0), rtol=1e-6)
    with pytest.raises(ValueError, match="outside the declared value_range"):
        SEVIRDataset(root, value_range=(0.0, 0.5))[0]

    vil = np.zeros((1, 8, 8, 13), dtype=np.uint8)
    root = _one_event_root(tmp_path / "date", vil, time_utc="notadate")
    with pytest.raises(ValueError, match=r"CATALOG\.csv: time_utc 'notadate' of event E1 \(line 2\) is not a date"):
        SEVIRDataset(root)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "CATALOG.csv").write_text("")
    with pytest.raises(ValueError, match=r"SEVIR catalog .*empty.CATALOG\.csv is empty"):
        SEVIRDataset(tmp_path / "empty")


def test_dataloader_with_workers(sevir_root):
    ds = SEVIRDataset(sevir_root, seq_len=13, stride=18)
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    frames = torch.cat([batch["frames"] for batch in loader])
    ids = [i for batch in loader for i in batch["event_id"]]
    assert frames.shape == (len(ds), 13, SIZE, SIZE, 1)
    for i in range(len(ds)):
        assert torch.equal(frames[i], ds[i]["frames"]) and ids[i] == ds[i]["event_id"]


def test_prediff_and_earthformer_splits(sevir_root):
    splits = prediff_sevir_splits(sevir_root, seq_len=13, stride=6)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert len(train) + len(val) == 5 * 7 and len(test) == 2 * 7
    assert len(val) == int(0.1 * 35)  # random_split floors each fraction, leftovers go to train
    train_keys = {(train[i]["event_id"], train[i]["start"]) for i in range(len(train))}
    val_keys = {(val[i]["event_id"], val[i]["start"]) for i in range(len(val))}
    assert not train_keys & val_keys
    assert {test[i]["event_id"] for i in range(len(test))} == {"S7", "S8"}
    again = prediff_sevir_splits(sevir_root, seq_len=13, stride=6)
    assert list(again["val"].indices) == list(val.indices)
    ef = earthformer_sevir_splits(sevir_root)
    assert list(ef["train"].events["id"]) == ["S1", "S2"]
    assert list(ef["val"].events["id"]) == ["S4", "S5", "S6"]
    assert list(ef["test"].events["id"]) == ["S7", "S8"]


def _brute_downsample(event):
    h, w, t = event.shape
    out = np.zeros((h // 3, w // 3, (t + 1) // 2), dtype=event.dtype)
    for k, frame in enumerate(range(0, t, 2)):
        for i in range(h // 3):
            for j in range(w // 3):
                out[i, j, k] = event[3 * i : 3 * i + 3, 3 * j : 3 * j + 3, frame].max()
    return out


def test_downsample_to_sevir_lr_and_read_back(sevir_root, tmp_path):
    dst = tmp_path / "sevir_lr"
    previous = os.umask(0o027)
    try:
        written = downsample_sevir(sevir_root, dst, progress=False)
    finally:
        os.umask(previous)
    for path in [*written, dst / "CATALOG.csv"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path  # as open() makes them under umask 027
    assert sorted(p.relative_to(dst / "data").as_posix() for p in written) == sorted(
        FILES[k] for k in ("2018H1", "2019H1", "2019H2")
    )
    assert (dst / "CATALOG.csv").read_bytes() == (sevir_root / "CATALOG.csv").read_bytes()
    with h5py.File(dst / "data" / FILES["2018H1"], "r") as f:
        assert f["vil"].shape == (3, 16, 16, 25) and f["vil"].dtype == np.uint8
        assert list(f["id"][:]) == [b"S1", b"S2", b"S3"]
        for index in (0, 2):
            np.testing.assert_array_equal(f["vil"][index], _brute_downsample(_raw(sevir_root, "2018H1", index)))
    lr = SEVIRDataset(dst, seq_len=13, stride=6)
    assert len(lr) == 7 * (1 + (25 - 13) // 6)
    expected = _brute_downsample(_raw(sevir_root, "2019H1", 0))[:, :, 6:19]
    item = lr[2 * 3 + 1]  # event S4, second window
    assert item["event_id"] == "S4"
    np.testing.assert_allclose(item["frames"][..., 0].numpy(), np.moveaxis(expected, -1, 0) / 255.0, rtol=1e-6)
    with pytest.raises(FileExistsError):
        downsample_sevir(sevir_root, dst, progress=False)


def test_parallel_downsample_writes_the_bytes_of_one_worker(sevir_root, tmp_path):
    one = downsample_sevir(sevir_root, tmp_path / "one", img_types=["vil", "ir069"], progress=False, workers=1)
    many = downsample_sevir(sevir_root, tmp_path / "many", img_types=["vil", "ir069"], progress=False, workers=3)
    assert [p.relative_to(tmp_path / "many") for p in many] == [p.relative_to(tmp_path / "one") for p in one]
    assert len(one) == 4
    for a, b in zip(one, many):
        assert a.read_bytes() == b.read_bytes(), a
    # Nothing but the outputs and the catalog: no temporary file of a worker is left.
    assert sorted(p for p in (tmp_path / "many").rglob("*") if p.is_file()) == sorted(
        [*many, tmp_path / "many" / "CATALOG.csv"]
    )
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        downsample_sevir(sevir_root, tmp_path / "none", progress=False, workers=0)


def test_block_max_pads_without_winning():
    rng = np.random.default_rng(3)
    a = rng.integers(-9000, -1000, (2, 7, 5, 3), dtype=np.int16)
    out = block_max(a, 3, axes=(1, 2))
    assert out.shape == (2, 3, 2, 3)
    for n in range(2):
        for i in range(3):
            for j in range(2):
                np.testing.assert_array_equal(
                    out[n, i, j], a[n, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].max(axis=(0, 1))
                )


def test_cli_downsample_and_inspect(sevir_root, tmp_path, capsys):
    dst = tmp_path / "lr"
    assert cli_main(["data", "downsample-sevir", str(sevir_root), str(dst), "--quiet"]) == 0
    assert (dst / "data" / FILES["2019H2"]).exists()
    assert cli_main(["data", "downsample-sevir", str(sevir_root), str(dst), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["data", "downsample-sevir", str(sevir_root), str(dst), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    assert cli_main(["data", "inspect", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "vil: 10 events (9 with pct_missing == 0)" in out and "(3, 16, 16, 25)" in out
