"""N-body digits: the force law, the integrator, the energy formula and the items."""

import numpy as np
import pytest
import torch

from prediff.data import NBodyDataset, nbody_acceleration, nbody_energy, simulate_nbody
from prediff.data.nbody import font_digit_glyphs

G, D = 0.05, 10.0


def brute_energy(x, v, m):
    total = 0.0
    for i in range(len(m)):
        total += 0.5 * m[i] * (v[i][0] ** 2 + v[i][1] ** 2)
        for j in range(i + 1, len(m)):
            r2 = (x[i][0] - x[j][0]) ** 2 + (x[i][1] - x[j][1]) ** 2
            total += G * m[i] * m[j] * (r2 + D**2) ** 0.5
    return total


def brute_step(x, v, m, half, vmax=2.0, low=10.0, high=118.0):
    """One raw step of the official rule, written out body by body."""
    k = len(m)
    acc = [[0.0, 0.0] for _ in range(k)]
    for i in range(k):
        for j in range(k):
            dx, dy = x[j][0] - x[i][0], x[j][1] - x[i][1]
            inv = 1.0 / (dx * dx + dy * dy + D * D) ** 0.5
            acc[i][0] += G * m[j] * dx * inv
            acc[i][1] += G * m[j] * dy * inv
    new_x, new_v = [], []
    for i in range(k):
        vel = [min(max(v[i][c] + acc[i][c], -vmax), vmax) for c in range(2)]
        pos = [x[i][c] + vel[c] for c in range(2)]
        for c in range(2):
            centre = pos[c] + half[i][c]
            if centre < low:
                vel[c], pos[c] = -vel[c], low - half[i][c]
            elif centre > high:
                vel[c], pos[c] = -vel[c], high - half[i][c]
        new_x.append(pos)
        new_v.append(vel)
    return new_x, new_v


def test_energy_matches_brute_force_loop():
    rng = np.random.default_rng(0)
    x, v, m = rng.uniform(0, 128, (6, 4, 2)), rng.uniform(-2, 2, (6, 4, 2)), rng.uniform(0.5, 2, 4)
    got = nbody_energy(x, v, m, G, D)
    assert got.shape == (6,)
    for t in range(6):
        assert got[t] == pytest.approx(brute_energy(x[t].tolist(), v[t].tolist(), m.tolist()), rel=1e-12)


def test_acceleration_is_minus_potential_gradient_over_mass():
    rng = np.random.default_rng(1)
    x, m = rng.uniform(0, 128, (5, 2)), rng.uniform(0.5, 2, 5)
    xt = torch.tensor(x, requires_grad=True)
    mt = torch.tensor(m)
    dist = torch.sqrt(((xt[:, None] - xt[None]) ** 2).sum(-1) + D**2)
    potential = 0.5 * (G * mt[:, None] * mt[None] * dist).sum()  # each pair once (diagonal is constant)
    (grad,) = torch.autograd.grad(potential, xt)
    np.testing.assert_allclose(nbody_acceleration(x, m, G, D), -grad.numpy() / m[:, None], rtol=1e-10)


def test_simulation_matches_step_by_step_reference():
    rng = np.random.default_rng(2)
    x0, v0, m = rng.uniform(0, 100, (3, 2)), rng.uniform(-2, 2, (3, 2)), np.ones(3)
    sizes = rng.integers(8, 20, (3, 2)).astype(float)
    xs, vs = simulate_nbody(x0, v0, m, sizes, num_steps=60, gravity=G, softening=D)
    x, v = x0.tolist(), v0.tolist()
    half = (sizes / 2).tolist()
    for step in range(1, 61):
        x, v = brute_step(x, v, m.tolist(), half)
        np.testing.assert_allclose(xs[step], x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(vs[step], v, rtol=1e-12, atol=1e-12)
    assert np.abs(vs).max() <= 2.0
    centres = xs + sizes / 2
    assert centres.min() >= 10.0 - 1e-9 and centres.max() <= 118.0 + 1e-9


def test_items_carry_state_and_are_deterministic():
    ds = NBodyDataset(num_sequences=3, seq_len=6, num_bodies=3, seed=4)
    item = ds[1]
    assert item["frames"].shape == (6, 64, 64, 1) and item["frames"].dtype == torch.float32
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    assert float(item["frames"].max()) > 0.5  # the digits are drawn
    assert item["positions"].shape == (6, 3, 2) and item["velocities"].shape == (6, 3, 2)
    assert item["energy"].shape == (6,)
    expected = nbody_energy(item["positions"].double().numpy(), item["velocities"].double().numpy(), np.ones(3), G, D)
    np.testing.assert_allclose(item["energy"].numpy(), expected, rtol=1e-5)
    assert set(item["digits"].tolist()) <= set(range(10))
    again = NBodyDataset(num_sequences=3, seq_len=6, num_bodies=3, seed=4)[1]
    assert torch.equal(item["frames"], again["frames"]) and torch.equal(item["positions"], again["positions"])
    other = NBodyDataset(num_sequences=3, seq_len=6, num_bodies=3, seed=5)[1]
    assert not torch.equal(item["frames"], other["frames"])


def test_frames_follow_positions():
    # With the resize disabled, each kept frame shows the glyphs at the reported positions.
    ds = NBodyDataset(num_sequences=1, seq_len=4, num_bodies=1, seed=0, frame_size=128)
    item = ds[0]
    for t in range(4):
        frame = item["frames"][t, ..., 0].numpy()
        ys, xs = np.nonzero(frame > 0.3)
        x, y = item["positions"][t].numpy()[0]
        w, h = item["glyph_sizes"].numpy()[0]
        assert x - 1 <= xs.min() and xs.max() <= x + w + 1
        assert y - 1 <= ys.min() and ys.max() <= y + h + 1


def test_font_glyphs_and_mnist_npz(tmp_path):
    glyphs, labels = font_digit_glyphs()
    assert len(glyphs) == len(labels) == 20
    assert all(g.dtype == np.float32 and 0 <= g.min() and g.max() <= 1 and g.shape[0] >= 15 for g in glyphs)
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    for i in range(5):
        images[i, 6 : 20 + i, 10:16] = 255  # bars of different heights
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=np.arange(5))
    ds = NBodyDataset(num_sequences=2, seq_len=3, seed=0, mnist_path=tmp_path / "mnist.npz")
    item = ds[0]
    assert item["glyph_sizes"][:, 0].tolist() == [6.0, 6.0, 6.0]
    assert set(item["digits"].tolist()) <= set(range(5))
    np.savez(tmp_path / "bad.npz", images=images)
    with pytest.raises(ValueError, match="x_train"):
        NBodyDataset(num_sequences=1, mnist_path=tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        NBodyDataset(num_sequences=1, mnist_path=tmp_path / "missing.npz")


def test_bad_arguments():
    with pytest.raises(ValueError, match="gravity"):
        NBodyDataset(1, gravity=0)
    with pytest.raises(ValueError, match="num_bodies"):
        NBodyDataset(1, num_bodies=0)
    with pytest.raises(ValueError, match="masses"):
        NBodyDataset(1, masses=[1.0, -1.0, 1.0])
