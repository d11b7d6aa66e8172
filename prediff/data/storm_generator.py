"""The synthetic radar storm generator behind [`SyntheticStormDataset`]: one sequence from a seed, no download.

Each sequence imitates a SEVIR-like VIL radar loop (digital VIL levels 0-255):

* **storm systems** (lines and clusters of convective cells with a trailing stratiform shield) and isolated
  cells, each cell an elliptical envelope with its own life cycle: born, growing, peaking, decaying and dying
  at its own times, so cells appear and vanish inside a sequence;
* **multi-scale texture**: the envelopes are modulated by log-normal noise with a power-law spectrum (as real
  precipitation fields have), which gives peaked convective cores, ragged edges and rain-free gaps; the
  texture itself evolves slowly;
* **advection** by a smooth, divergence-free flow (a drifting, slowly turning mean wind plus large-scale
  eddies that change over time); everything is defined in material coordinates and carried by backward
  trajectories, so texture and cells move and deform together.

The work is vectorised: the smooth parts (trajectories, envelopes) are computed on a grid four times coarser
and upsampled, and the texture is drawn once per sequence by FFT and sampled along the trajectories with one
``grid_sample`` call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["VIL_UNITS", "StormParameters", "generate_storm_sequence"]

#: Trajectories and envelopes are smooth: they are computed on a grid this many times coarser, then upsampled.
_COARSE = 4
#: Storm density per 128 x 128 pixels of the (margin-extended) domain.
_SYSTEMS_PER_TILE = 1.0
_ISOLATED_CELLS_PER_TILE = 2.5

VIL_UNITS = "digital VIL level 0-255 (SEVIR vil encoding)"


@dataclass(frozen=True)
class StormParameters:
    """The ranges the generator draws a sequence's motion, life cycles and texture from.

    The defaults are the built-in storms (SEVIR-LR-like: a few km, 5-10 minutes a frame); a radar archive's
    own values come from [`~prediff.data.calibrate_storm_generator`]. Each range is ``(low, high)`` of a uniform
    draw.

    Args:
        speed_range: mean wind speed, pixels per frame (eddies add up to about half of it).
        life_range: lifetime of a convective cell, frames (born, growing, peaking, decaying, dying).
        shield_life_range: lifetime of a stratiform shield, frames.
        texture_rate_range: how fast the convective texture evolves, radians per frame (0: it only moves).
        texture_beta_range: power-spectrum exponent of the convective texture (``k ** -beta``; lower is rougher).
        texture_sigma_range: log-standard deviation of the convective texture (higher: more peaked cores, more
            rain-free gaps).
        stratiform_beta: power-spectrum exponent of the stratiform texture.
    """

    speed_range: tuple[float, float] = (0.5, 3.0)
    life_range: tuple[float, float] = (8.0, 40.0)
    shield_life_range: tuple[float, float] = (40.0, 120.0)
    texture_rate_range: tuple[float, float] = (0.04, 0.12)
    texture_beta_range: tuple[float, float] = (2.3, 2.9)
    texture_sigma_range: tuple[float, float] = (0.8, 1.05)
    stratiform_beta: float = 3.0

    def __post_init__(self) -> None:
        ranges = ("speed_range", "life_range", "shield_life_range", "texture_rate_range", "texture_beta_range")
        for name in (*ranges, "texture_sigma_range"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple | list)
                or len(value) != 2
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
                or not 0 <= value[0] <= value[1]
            ):
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if self.life_range[0] <= 0 or self.shield_life_range[0] <= 0:
            raise ValueError(
                f"lifetimes must be positive, got life_range={self.life_range}, "
                f"shield_life_range={self.shield_life_range}"
            )
        if not (isinstance(self.stratiform_beta, int | float) and math.isfinite(self.stratiform_beta)):
            raise ValueError(f"stratiform_beta must be a finite number, got {self.stratiform_beta!r}")


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread, restoring the previous setting afterwards.

    Each op here touches only a few hundred thousand values: splitting it across threads gains nothing, and on
    a busy machine the threads' synchronisation made generation several times slower. (``DataLoader`` workers
    already run on one thread each.)
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sequence_rng(seed: int, index: int) -> np.random.Generator:
    # One independent stream per (seed, index): any item can be generated alone, in any order, in any worker.
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _power_law_noise(
    rng: np.random.Generator, size: int, betas: list[float], min_wavelength_cutoff: float
) -> np.ndarray:
    """Periodic unit-variance Gaussian fields with power spectrum ``k ** -beta``: (len(betas), size, size)."""
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    # Scales larger than the cut-off belong to the envelopes, not to the texture.
    k = np.where(k < 1.0 / min_wavelength_cutoff, np.inf, k)
    shape = (len(betas), size, size // 2 + 1)
    spectrum = rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(shape, dtype=np.float32)
    filters = np.stack([k ** (-beta / 2.0) for beta in betas]).astype(np.float32)
    fields = np.fft.irfft2(spectrum * filters, s=(size, size)).astype(np.float32)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True)
    return fields


def _fft_size(minimum: float) -> int:
    """Smallest 2^a 3^b >= ``minimum`` (fast FFT sizes)."""
    return min(2**a * 3**b for a in range(16) for b in range(8) if 2**a * 3**b >= minimum)


def _bilinear_border(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``field`` (h, w, c) at fractional grid indices ``x``, ``y`` (h, w), clamping at the border."""
    h, w = field.shape[:2]
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros_like(x, dtype=np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros_like(y, dtype=np.int64)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _life_shape(t: np.ndarray, birth: np.ndarray, life: np.ndarray, skew: np.ndarray) -> np.ndarray:
    """Life-cycle weight in [0, 1]: 0 before birth and after death, a smooth rise and decay between."""
    s = np.clip((t[None, :] - birth[:, None]) / life[:, None], 0.0, 1.0)
    return np.sin(np.pi * s ** skew[:, None]) ** 2


def generate_storm_sequence(
    seed: int,
    index: int,
    seq_len: int,
    height: int = 128,
    width: int = 128,
    parameters: StormParameters | None = None,
) -> np.ndarray:
    """One synthetic radar sequence, uint8 VIL levels of shape (seq_len, height, width).

    Fully determined by ``(seed, index)`` and ``parameters``. With the default parameters, pixel size and frame
    interval are those of SEVIR-LR-like data (a few km, 5-10 minutes): storms move 0.5-3 pixels per frame and
    cells live 8-40 frames.
    """
    params = StormParameters() if parameters is None else parameters
    rng = _sequence_rng(seed, index)
    T, H, W = seq_len, height, width
    L = float(max(H, W))
    times = np.arange(T, dtype=np.float64)

    # --- flow: drifting, slowly turning mean wind plus two sets of large eddies mixed over time
    speed = rng.uniform(*params.speed_range)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    turn_rate = rng.normal(0.0, 0.015)
    eddy_strength = rng.uniform(0.15, 0.45) * max(speed, 1.0)
    eddy_rate = rng.uniform(0.03, 0.1)
    n_modes = 3
    wavelength = rng.uniform(1.0, 3.0, size=(2, n_modes)) * L
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(2, n_modes))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(2, n_modes))
    kvec = (2.0 * np.pi / wavelength)[..., None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    # Stream-function amplitude so that each eddy set has a velocity scale of ``eddy_strength``.
    amp = eddy_strength * wavelength / (2.0 * np.pi) / np.sqrt(n_modes)

    hc, wc = math.ceil(H / _COARSE), math.ceil(W / _COARSE)
    # Coarse cell centres in full-resolution pixel coordinates (consistent with align_corners=False
    # upsampling).
    gx = (np.arange(wc) + 0.5) * _COARSE - 0.5
    gy = (np.arange(hc) + 0.5) * _COARSE - 0.5
    grid = np.stack(np.meshgrid(gx, gy, indexing="xy"), axis=-1)  # (hc, wc, 2) as (x, y)

    # Eddy velocities of both sets on the coarse grid: u = d(psi)/dy, v = -d(psi)/dx (divergence-free).
    arg = np.einsum("hwc,smc->smhw", grid, kvec) + phase[..., None, None]
    cos_arg = amp[..., None, None] * np.cos(arg)
    eddy = np.stack(
        [np.einsum("smhw,sm->shw", cos_arg, kvec[..., 1]), -np.einsum("smhw,sm->shw", cos_arg, kvec[..., 0])],
        axis=-1,
    )  # (2, hc, wc, 2)

    def velocity(t: float) -> np.ndarray:
        direction = heading + turn_rate * t
        mean = speed * np.array([np.cos(direction), np.sin(direction)])
        return mean + np.cos(eddy_rate * t) * eddy[0] + np.sin(eddy_rate * t) * eddy[1]

    # --- backward trajectories: material origin (at t = 0) of every coarse point at every frame
    origin = np.empty((T, hc, wc, 2))
    origin[0] = grid
    for t in range(1, T):
        departure = grid - velocity(t - 0.5)
        previous_shift = origin[t - 1] - grid  # smooth, so interpolating it (border-clamped) is accurate
        ix = (departure[..., 0] + 0.5) / _COARSE - 0.5
        iy = (departure[..., 1] + 0.5) / _COARSE - 0.5
        origin[t] = departure + _bilinear_border(previous_shift, ix, iy)

    # --- storm systems and their cells, placed in material coordinates on a margin-extended domain
    margin = 0.3 * L + 2.0 * speed * T
    ext_w, ext_h = W + 2 * margin, H + 2 * margin
    tiles = ext_w * ext_h / 128.0**2
    n_systems = 1 + rng.poisson(_SYSTEMS_PER_TILE * tiles)
    n_isolated = rng.poisson(_ISOLATED_CELLS_PER_TILE * tiles)
    sys_center = rng.uniform([-margin, -margin], [W + margin, H + margin], size=(n_systems, 2))
    # Radar loops are chosen around weather: the first system sits in the inner half of the frame.
    sys_center[0] = rng.uniform([0.25 * W, 0.25 * H], [0.75 * W, 0.75 * H])
    sys_angle = rng.uniform(0.0, np.pi, size=n_systems)
    sys_length = rng.uniform(15.0, 80.0, size=n_systems)
    cells_per_system = 2 + rng.poisson(sys_length / 14.0)

    cell_sys = np.repeat(np.arange(n_systems), cells_per_system)
    along = rng.uniform(-0.5, 0.5, size=cell_sys.size) * sys_length[cell_sys]
    across = rng.normal(0.0, 4.0, size=cell_sys.size)
    direction = np.stack([np.cos(sys_angle), np.sin(sys_angle)], axis=-1)[cell_sys]
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=-1)
    centers = sys_center[cell_sys] + along[:, None] * direction + across[:, None] * normal
    orient = sys_angle[cell_sys] + rng.normal(0.0, 0.3, size=cell_sys.size)
    iso_centers = rng.uniform([-margin, -margin], [W + margin, H + margin], size=(n_isolated, 2))
    centers = np.concatenate([centers, iso_centers])
    orient = np.concatenate([orient, rng.uniform(0.0, np.pi, size=n_isolated)])
    n_cells = centers.shape[0]
    radius = rng.uniform(3.5, 9.0, size=n_cells)
    aspect = rng.uniform(1.0, 1.8, size=n_cells)
    peak = 40.0 + 280.0 * rng.beta(2.0, 3.5, size=n_cells)
    life = rng.uniform(*params.life_range, size=n_cells)
    birth = rng.uniform(-0.85 * life, T - 2.0)
    skew = rng.uniform(0.45, 1.0, size=n_cells)

    # Stratiform shields: broad, weak, long-lived, elongated along their system.
    shield_sigma_along = 0.5 * sys_length + rng.uniform(12.0, 30.0, size=n_systems)
    shield_sigma_across = rng.uniform(0.35, 0.7, size=n_systems) * shield_sigma_along
    shield_offset = rng.normal(0.0, 8.0, size=(n_systems, 2))
    shield_amp = rng.uniform(15.0, 55.0, size=n_systems)
    shield_life = rng.uniform(*params.shield_life_range, size=n_systems)
    shield_birth = rng.uniform(-0.9 * shield_life, 0.5 * T)

    # --- envelopes on the coarse grid: (T, hc, wc) each
    cell_weight = _life_shape(times, birth, life, skew)  # (K, T)
    cell_amp = peak[:, None] * cell_weight
    cell_radius = radius[:, None] * (0.45 + 0.55 * cell_weight)
    convective = _elliptic_sum(origin, centers, orient, cell_radius * aspect[:, None], cell_radius, cell_amp)
    shield_weight = _life_shape(times, shield_birth, shield_life, np.ones(n_systems))
    stratiform = _elliptic_sum(
        origin,
        sys_center + shield_offset,
        sys_angle,
        np.broadcast_to(shield_sigma_along[:, None], (n_systems, T)),
        np.broadcast_to(shield_sigma_across[:, None], (n_systems, T)),
        shield_amp[:, None] * shield_weight,
    )

    # --- texture: three periodic power-law fields (two convective, mixed over time; one smoother stratiform)
    period = _fft_size(1.5 * L)
    betas = [rng.uniform(*params.texture_beta_range), rng.uniform(*params.texture_beta_range), params.stratiform_beta]
    texture = _power_law_noise(rng, period, betas, 0.6 * L)
    conv_sigma = rng.uniform(*params.texture_sigma_range)
    strat_sigma = 0.7
    texture_rate = rng.uniform(*params.texture_rate_range)
    threshold = rng.uniform(4.0, 9.0)

    with _one_torch_thread():
        return _render(
            origin,
            convective,
            stratiform,
            texture,
            (H, W),
            conv_sigma,
            strat_sigma,
            texture_rate,
            threshold,
            period,
        )


def _elliptic_sum(
    points: np.ndarray,
    centers: np.ndarray,
    orient: np.ndarray,
    sigma_along: np.ndarray,
    sigma_across: np.ndarray,
    amplitude: np.ndarray,
) -> np.ndarray:
    """Sum over k of ``amplitude[k, t] * exp(-q / 2)``, q the squared elliptical distance: (T, h, w).

    ``points`` (T, h, w, 2); ``centers`` (K, 2); ``orient`` (K,); ``sigma_*`` and ``amplitude`` (K, T).
    Only the (cell, frame) pairs that can contribute are evaluated: a cell alive at that frame whose centre
    lies within 4.5 sigma of the frame's points (beyond, exp(-q / 2) < 4e-5 of the peak).
    """
    T, h, w, _ = points.shape
    out = np.zeros((T, h, w), dtype=np.float32)
    if centers.shape[0] == 0:
        return out
    reach = 4.5 * np.maximum(sigma_along, sigma_across)  # (K, T)
    low, high = points.min(axis=(1, 2)), points.max(axis=(1, 2))  # (T, 2) bounding boxes
    near = (centers[:, None, :] > low[None] - reach[..., None]) & (centers[:, None, :] < high[None] + reach[..., None])
    k_idx, t_idx = np.nonzero(near.all(-1) & (amplitude > 0))
    if k_idx.size == 0:
        return out
    order = np.argsort(t_idx, kind="stable")
    k_idx, t_idx = k_idx[order], t_idx[order]
    pts = points[t_idx].astype(np.float32)  # (P, h, w, 2)
    dx = pts[..., 0] - centers[k_idx, 0, None, None].astype(np.float32)
    dy = pts[..., 1] - centers[k_idx, 1, None, None].astype(np.float32)
    c = np.cos(orient[k_idx]).astype(np.float32)[:, None, None]
    s = np.sin(orient[k_idx]).astype(np.float32)[:, None, None]
    a = (dx * c + dy * s) / np.maximum(sigma_along[k_idx, t_idx], 1e-3).astype(np.float32)[:, None, None]
    b = (dy * c - dx * s) / np.maximum(sigma_across[k_idx, t_idx], 1e-3).astype(np.float32)[:, None, None]
    values = np.exp(-0.5 * (a * a + b * b)) * amplitude[k_idx, t_idx].astype(np.float32)[:, None, None]
    # Pairs are sorted by frame: sum each frame's contiguous group.
    frames, starts = np.unique(t_idx, return_index=True)
    out[frames] = np.add.reduceat(values, starts, axis=0)
    return out


def _render(
    origin: np.ndarray,
    convective: np.ndarray,
    stratiform: np.ndarray,
    texture: np.ndarray,
    size: tuple[int, int],
    conv_sigma: float,
    strat_sigma: float,
    texture_rate: float,
    threshold: float,
    period: int,
) -> np.ndarray:
    H, W = size
    T, hc, wc, _ = origin.shape
    coarse = torch.from_numpy(
        np.concatenate([origin.transpose(0, 3, 1, 2), convective[:, None], stratiform[:, None]], axis=1)
    ).float()
    fine = F.interpolate(coarse, size=(hc * _COARSE, wc * _COARSE), mode="bilinear", align_corners=False)
    fine = fine[:, :, :H, :W]
    material, conv_env, strat_env = fine[:, :2], fine[:, 2], fine[:, 3]

    # Periodic texture: wrap coordinates into [0, period) and pad one wrapped row/column so bilinear sampling
    # across the seam stays continuous; align_corners=True maps index i to -1 + 2 i / period.
    tex = torch.from_numpy(texture)
    tex = torch.cat([tex, tex[:, :1]], dim=1)
    tex = torch.cat([tex, tex[:, :, :1]], dim=2)[None]
    coords = torch.remainder(material, float(period)) * (2.0 / period) - 1.0  # (T, 2, H, W) as (x, y)
    grid = coords.permute(0, 2, 3, 1).reshape(1, T * H, W, 2)
    sampled = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=True)
    sampled = sampled.reshape(3, T, H, W)

    angle = texture_rate * torch.arange(T, dtype=torch.float32)[:, None, None]
    mixed = torch.cos(angle) * sampled[0] + torch.sin(angle) * sampled[1]  # unit-variance at every frame
    field = conv_env * torch.exp(conv_sigma * mixed - 0.5 * conv_sigma**2)
    field += strat_env * torch.exp(strat_sigma * sampled[2] - 0.5 * strat_sigma**2)
    # Soft saturation toward 255 (the top of the VIL encoding), linear for weak echoes.
    vil = 255.0 * torch.tanh(torch.clamp(field - threshold, min=0.0) / 255.0)
    return torch.round(vil).to(torch.uint8).numpy()
