"""Synthetic storms: determinism, structure, statistics, disk cache and DataLoader workers."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from prediff.data import SyntheticStormDataset, future_intensity_stats, generate_storm_sequence
from prediff.data.storm_generator import _bilinear_border, _power_law_noise


def test_items_shape_dtype_range():
    ds = SyntheticStormDataset(num_sequences=3, seq_len=6, height=64, width=48, seed=1)
    item = ds[2]
    frames = item["frames"]
    assert frames.shape == (6, 64, 48, 1) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    # Values are VIL levels / 255 exactly.
    levels = frames * 255
    assert torch.equal(levels, levels.round())
    assert item["index"] == 2 and item["seed"] == 1
    assert len(ds) == 3 and ds[-1]["index"] == 2
    assert torch.equal(ds[-1]["frames"], ds[2]["frames"])


def test_deterministic_per_seed_and_index_and_differs_across_seeds():
    a = generate_storm_sequence(seed=5, index=3, seq_len=5, height=64, width=64)
    b = generate_storm_sequence(seed=5, index=3, seq_len=5, height=64, width=64)
    c = generate_storm_sequence(seed=6, index=3, seq_len=5, height=64, width=64)
    d = generate_storm_sequence(seed=5, index=4, seq_len=5, height=64, width=64)
    assert a.dtype == np.uint8 and a.shape == (5, 64, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # An item does not depend on which items were generated before it.
    ds = SyntheticStormDataset(6, 5, 64, 64, seed=5)
    np.testing.assert_array_equal(ds.generate(3)[..., 0], a)


def test_radar_like_structure():
    seqs = np.stack([generate_storm_sequence(0, i, 13) for i in range(8)]).astype(np.float64)
    rainy = (seqs > 0).mean()
    assert 0.1 < rainy < 0.9, rainy  # rain and rain-free areas
    assert (seqs >= 74).mean() > 0.01  # heavy cores exist
    assert (seqs >= 219).mean() < 0.05  # but saturation is rare
    # Multi-scale texture: strong pixel-to-pixel variation inside rain, not smooth blobs.
    inside = seqs[:, :, :, 1:] > 30
    jumps = np.abs(np.diff(seqs, axis=3))[inside]
    assert np.percentile(jumps, 90) > 5

    # Advection and life cycles: frames evolve smoothly, so near frames correlate more than distant ones.
    def corr(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    near = np.mean([corr(s[0], s[1]) for s in seqs])
    far = np.mean([corr(s[0], s[12]) for s in seqs])
    assert near > 0.8 and far < near - 0.1, (near, far)


def test_power_law_noise_spectrum_and_bilinear():
    rng = np.random.default_rng(0)
    fields = _power_law_noise(rng, 64, [2.0, 3.5], min_wavelength_cutoff=64)
    np.testing.assert_allclose(fields.std(axis=(1, 2)), 1.0, rtol=1e-4)
    # The steeper spectrum gives a smoother field: smaller neighbour differences.
    rough = np.abs(np.diff(fields, axis=2)).mean(axis=(1, 2))
    assert rough[1] < rough[0]
    field = rng.normal(size=(5, 7, 2))
    x, y = rng.uniform(-1, 8, size=(3, 4)), rng.uniform(-1, 6, size=(3, 4))
    got = _bilinear_border(field, x, y)
    for i in range(3):
        for j in range(4):
            xc, yc = min(max(x[i, j], 0), 6), min(max(y[i, j], 0), 4)
            x0, y0 = min(int(xc), 5), min(int(yc), 3)
            fx, fy = xc - x0, yc - y0
            ref = (
                field[y0, x0] * (1 - fx) * (1 - fy)
                + field[y0, x0 + 1] * fx * (1 - fy)
                + field[y0 + 1, x0] * (1 - fx) * fy
                + field[y0 + 1, x0 + 1] * fx * fy
            )
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-12)


def test_future_intensity_stats_match_direct_computation():
    ds = SyntheticStormDataset(5, 6, 32, 32, seed=2)
    values = [float(ds[i]["frames"][4:].double().mean()) for i in range(5)]
    stats = ds.future_intensity_stats(context_length=4)
    assert stats.mean == pytest.approx(np.mean(values), rel=1e-9)
    assert stats.std == pytest.approx(np.std(values), rel=1e-9)
    mu, sigma = stats
    assert stats.target(2) == pytest.approx(mu + 2 * sigma)
    assert future_intensity_stats(ds, 4, max_items=2).mean == pytest.approx(np.mean(values[:2]), rel=1e-9)
    with pytest.raises(ValueError, match="context_length"):
        ds.future_intensity_stats(context_length=6)


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_disk_cache_round_trip(tmp_path, suffix):
    path = tmp_path / f"storms{suffix}"
    cached = SyntheticStormDataset(4, 5, 32, 32, seed=3, cache_path=path, progress=False)
    assert path.exists()
    fresh = SyntheticStormDataset(4, 5, 32, 32, seed=3)
    for i in range(4):
        assert torch.equal(cached[i]["frames"], fresh[i]["frames"])
    again = SyntheticStormDataset(4, 5, 32, 32, seed=3, cache_path=path)
    assert torch.equal(again[3]["frames"], fresh[3]["frames"])
    with pytest.raises(ValueError, match="seed"):
        SyntheticStormDataset(4, 5, 32, 32, seed=4, cache_path=path)


def test_dataloader_workers_and_pickle():
    ds = SyntheticStormDataset(4, 4, 32, 32, seed=7)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1]["frames"], ds[1]["frames"])
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    stacked = torch.cat([b["frames"] for b in batches])
    assert stacked.shape == (4, 4, 32, 32, 1)
    for i in range(4):
        assert torch.equal(stacked[i], ds[i]["frames"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sequences": 0, "seq_len": 4}, "num_sequences"),
        ({"num_sequences": 2, "seq_len": 1.5}, "seq_len"),
        ({"num_sequences": 2, "seq_len": 4, "height": 8}, "at least 16"),
        ({"num_sequences": 2, "seq_len": 4, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticStormDataset(**kwargs)


def test_index_errors():
    ds = SyntheticStormDataset(2, 4, 32, 32)
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds[0.5]
