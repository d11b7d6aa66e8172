"""The N-body digits task of Earthformer and PreDiff: digit-shaped bodies attracting each other on a canvas.

Dynamics (mode "r0" of the official generator), per raw step with dt = 1:

* acceleration ``a_i = G sum_j m_j (x_j - x_i) / sqrt(|x_j - x_i|^2 + d^2)`` (G 0.05, softening d 10);
* ``v <- clip(v + a(x), -v_max, v_max)`` per component (v_max 2), then ``x <- x + v``;
* wall bounce: when a digit's centre leaves the box [10, canvas - 10] in an axis, that velocity component is
  negated and the centre is put back on the wall.

As in the official code, a body's position ``x`` is the translation of its glyph's top-left corner (the force
uses it; the bounce uses the glyph centre ``x + (w, h) / 2``). Frames are drawn every ``steps_per_frame`` raw
steps on a 128 x 128 canvas (bilinear sub-pixel placement, pixel-wise maximum over bodies) and resized to 64 x
64 with bicubic interpolation. The total energy is ``sum_i m_i |v_i|^2 / 2 + sum_{i<j} G m_i m_j
sqrt(|x_i - x_j|^2 + d^2)``: the potential whose negative gradient is the force above. The generator does not
conserve it exactly (velocity clipping, wall clamping and explicit Euler steps all change it).

Glyphs come from Pillow's built-in font (no download) or from a user's MNIST ``.npz`` file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..utils.checks import check_index, check_positive_int, check_seed
from .readers import import_optional, load_npz


def nbody_acceleration(positions: np.ndarray, masses: np.ndarray, gravity: float, softening: float) -> np.ndarray:
    """``a_i = G sum_j m_j (x_j - x_i) / sqrt(|x_j - x_i|^2 + d^2)``.

    Args:
        positions: (..., K, 2) pixels. masses: (K,). Returns (..., K, 2) pixels per step^2.
    """
    diff = positions[..., None, :, :] - positions[..., :, None, :]  # [..., i, j] = x_j - x_i
    inv = 1.0 / np.sqrt((diff**2).sum(-1) + softening**2)
    return gravity * np.einsum("...ij,...ijc,j->...ic", inv, diff, np.asarray(masses, dtype=diff.dtype))


def nbody_energy(
    positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray, gravity: float, softening: float
) -> np.ndarray:
    """Total energy ``sum_i m_i |v_i|^2 / 2 + sum_{i<j} G m_i m_j sqrt(|x_i - x_j|^2 + d^2)``.

    Args:
        positions, velocities: (..., K, 2). masses: (K,). Returns (...,).
    """
    masses = np.asarray(masses, dtype=np.float64)
    kinetic = 0.5 * (masses * (np.asarray(velocities, dtype=np.float64) ** 2).sum(-1)).sum(-1)
    pos = np.asarray(positions, dtype=np.float64)
    dist = np.sqrt(((pos[..., :, None, :] - pos[..., None, :, :]) ** 2).sum(-1) + softening**2)
    pair = gravity * masses[:, None] * masses[None, :] * dist
    upper = np.triu(np.ones(pair.shape[-2:], dtype=bool), k=1)
    return kinetic + (pair * upper).sum((-2, -1))


def simulate_nbody(
    positions: np.ndarray,
    velocities: np.ndarray,
    masses: np.ndarray,
    glyph_sizes: np.ndarray,
    num_steps: int,
    gravity: float = 0.05,
    softening: float = 10.0,
    max_speed: float = 2.0,
    box: tuple[float, float] = (10.0, 118.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate ``num_steps`` raw steps; return states at steps 0..num_steps: positions and velocities.

    Args:
        positions: (K, 2) top-left translations (x, y). velocities: (K, 2). masses: (K,).
        glyph_sizes: (K, 2) glyph (width, height), for the centre used by the wall bounce.
        box: the inner box [low, high] that the glyph centres bounce on (both axes).

    Returns:
        positions (num_steps + 1, K, 2) and velocities (num_steps + 1, K, 2); the velocity of a state is the
        one that moved the body there (after the bounce), the initial one for step 0.
    """
    x = np.array(positions, dtype=np.float64)
    v = np.array(velocities, dtype=np.float64)
    half = np.asarray(glyph_sizes, dtype=np.float64) / 2.0
    low, high = box
    xs = np.empty((num_steps + 1, *x.shape))
    vs = np.empty_like(xs)
    xs[0], vs[0] = x, v
    for step in range(1, num_steps + 1):
        v = np.clip(v + nbody_acceleration(x, masses, gravity, softening), -max_speed, max_speed)
        x = x + v
        center = x + half
        outside = (center < low) | (center > high)
        v = np.where(outside, -v, v)
        x = np.clip(center, low, high) - half
        xs[step], vs[step] = x, v
    return xs, vs


def _crop(glyph: np.ndarray, tol: float = 5.0 / 255.0) -> np.ndarray:
    """Crop to the bounding box of pixels brighter than ``tol`` (the official MNIST crop)."""
    mask = glyph > tol
    if not mask.any():
        raise ValueError("glyph is empty (no pixel above the crop tolerance)")
    return glyph[np.ix_(mask.any(1), mask.any(0))]


@lru_cache(maxsize=4)
def font_digit_glyphs(height: int = 22) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """Digit glyphs 0-9 drawn with Pillow's built-in font, in a thin and a bold stroke: float32 in [0, 1].

    Returns (glyphs, labels). The glyphs are about ``height`` pixels tall, close to MNIST digits on the 128 x
    128 canvas.
    """
    image_mod = import_optional("PIL.Image", "drawing N-body digit glyphs")
    draw_mod = import_optional("PIL.ImageDraw", "drawing N-body digit glyphs")
    font_mod = import_optional("PIL.ImageFont", "drawing N-body digit glyphs")
    filter_mod = import_optional("PIL.ImageFilter", "drawing N-body digit glyphs")
    try:
        font = font_mod.load_default(size=height)
        scale = 1
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font, enlarged
        font = font_mod.load_default()
        scale = max(1, round(height / 11))
    glyphs, labels = [], []
    for stroke in (3, 5):
        for digit in range(10):
            canvas = image_mod.new("L", (3 * height, 3 * height), 0)
            draw_mod.Draw(canvas).text((height // 2, height // 4), str(digit), fill=255, font=font)
            if scale > 1:
                canvas = canvas.resize((canvas.width * scale, canvas.height * scale), image_mod.Resampling.BICUBIC)
            # Pen strokes: thicken to an MNIST-like width, then soften the edges.
            canvas = canvas.filter(filter_mod.MaxFilter(stroke)).filter(filter_mod.GaussianBlur(0.8))
            glyphs.append(_crop(np.asarray(canvas, dtype=np.float32) / 255.0))
            labels.append(digit)
    return tuple(glyphs), tuple(labels)


def load_mnist_glyphs(
    path: str | os.PathLike, index_range: tuple[int, int] = (0, 40000)
) -> tuple[np.ndarray, np.ndarray]:
    """Digit images from an MNIST ``.npz`` (``X``/``Y`` as in Earthformer, or Keras' ``x_train``/``y_train``).

    Returns images (N, 28, 28) float32 in [0, 1] restricted to ``index_range`` (the official generator draws
    training digits from [0, 40000)) and labels (N,) (-1 when the file has none). Loading never unpickles.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MNIST file {path} does not exist")
    archive = load_npz(path)
    image_key = next((k for k in ("X", "x_train") if k in archive), None)
    if image_key is None:
        raise ValueError(f"{path} must hold digit images under 'X' or 'x_train'; it has {sorted(archive)}")
    images = archive[image_key]
    label_key = {"X": "Y", "x_train": "y_train"}[image_key]
    labels = archive[label_key].reshape(-1) if label_key in archive else np.full(len(images), -1)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3:
        raise ValueError(f"{path}:{image_key} must be (N, 28, 28) or (N, 784), got shape {images.shape}")
    images = images.astype(np.float32)
    if images.max() > 1.0:
        images /= 255.0
    low, high = index_range
    high = min(high, len(images))
    if not 0 <= low < high:
        raise ValueError(f"index_range {index_range} selects no image from the {len(images)} in {path}")
    return images[low:high], labels[low:high].astype(np.int64)


def _place(canvas: np.ndarray, glyph: np.ndarray, x: float, y: float) -> None:
    """Pixel-wise max of ``canvas`` with ``glyph`` translated by (x, y), bilinear for the fractional part."""
    ix, iy = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - ix, y - iy
    h, w = glyph.shape
    shifted = np.zeros((h + 1, w + 1), dtype=np.float32)
    shifted[:h, :w] += (1 - fx) * (1 - fy) * glyph
    shifted[:h, 1:] += fx * (1 - fy) * glyph
    shifted[1:, :w] += (1 - fx) * fy * glyph
    shifted[1:, 1:] += fx * fy * glyph
    size_y, size_x = canvas.shape
    y0, x0 = max(iy, 0), max(ix, 0)
    y1, x1 = min(iy + h + 1, size_y), min(ix + w + 1, size_x)
    if y0 >= y1 or x0 >= x1:
        return
    region = shifted[y0 - iy : y1 - iy, x0 - ix : x1 - ix]
    np.maximum(canvas[y0:y1, x0:x1], region, out=canvas[y0:y1, x0:x1])


class NBodyDataset(Dataset):
    """N-body digits sequences (Earthformer / PreDiff ``nbody_digits3_len20_size64_r0``) from a seed.

    Items are dicts:

    * ``"frames"``: float32 tensor (seq_len, frame_size, frame_size, 1) in [0, 1];
    * ``"positions"``, ``"velocities"``: float32 (seq_len, K, 2), (x, y) in raw-canvas pixels (per raw step
      for velocities), the state at each kept frame; ``"energy"``: float32 (seq_len,), the total energy;
    * ``"masses"`` (K,), ``"glyph_sizes"`` (K, 2) as (width, height), ``"digits"`` (K,) labels (-1 if
      unknown), ``"index"``.

    Args:
        num_sequences (`int`): number of sequences.
        seq_len (`int`, defaults to 20): kept frames per sequence (10 context + 10 target in the paper).
        num_bodies (`int`, defaults to 3): digits per sequence.
        seed (`int`, defaults to 0): sequence ``i`` depends only on ``(seed, i)`` (and the glyph source).
        mnist_path (`str`, *optional*): an MNIST ``.npz`` to take digits from instead of the built-in font.
        canvas_size (`int`, defaults to 128), frame_size (`int`, defaults to 64): simulation and output sizes.
        steps_per_frame (`int`, defaults to 5): raw steps between kept frames.
        gravity (`float`, defaults to 0.05), softening (`float`, defaults to 10.0), max_speed (`float`,
            defaults to 2.0), wall_margin (`float`, defaults to 10.0): the dynamics above; initial speeds are
            uniform in [0, max_speed] with a uniform direction.
        masses (`float` or sequence, defaults to 1.0): body masses.
        transform (`Callable`, *optional*): applied to every item dict.
    """

    generator_name = "NBodyDataset"
    value_range = (0.0, 1.0)
    units = "digit intensity in [0, 1]"

    def __init__(
        self,
        num_sequences: int,
        seq_len: int = 20,
        num_bodies: int = 3,
        seed: int = 0,
        mnist_path: str | os.PathLike | None = None,
        canvas_size: int = 128,
        frame_size: int = 64,
        steps_per_frame: int = 5,
        gravity: float = 0.05,
        softening: float = 10.0,
        max_speed: float = 2.0,
        wall_margin: float = 10.0,
        masses: float | list[float] = 1.0,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.num_sequences = check_positive_int("num_sequences", num_sequences)
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.num_bodies = check_positive_int("num_bodies", num_bodies)
        self.seed = check_seed(seed)
        self.canvas_size = check_positive_int("canvas_size", canvas_size)
        self.frame_size = check_positive_int("frame_size", frame_size)
        self.steps_per_frame = check_positive_int("steps_per_frame", steps_per_frame)
        for name, value in (("gravity", gravity), ("softening", softening), ("max_speed", max_speed)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.gravity, self.softening, self.max_speed = float(gravity), float(softening), float(max_speed)
        if not 0 <= float(wall_margin) < self.canvas_size / 2:
            raise ValueError(f"wall_margin must be in [0, canvas_size / 2), got {wall_margin!r}")
        self.box = (float(wall_margin), float(self.canvas_size - wall_margin))
        mass_array = np.broadcast_to(np.asarray(masses, dtype=np.float64), (self.num_bodies,)).copy()
        if not (mass_array > 0).all():
            raise ValueError(f"masses must be positive, got {masses!r}")
        self.masses = mass_array
        self.transform = transform
        self.mnist_path = None if mnist_path is None else os.fspath(mnist_path)
        if self.mnist_path is None:
            glyphs, labels = font_digit_glyphs()
            self._glyphs: list[np.ndarray] | np.ndarray = list(glyphs)
            self._labels = np.asarray(labels)
        else:
            self._glyphs, self._labels = load_mnist_glyphs(self.mnist_path)
        largest = max(max(g.shape) for g in self._glyphs) if isinstance(self._glyphs, list) else 28
        if largest >= self.canvas_size:
            raise ValueError(f"canvas_size={self.canvas_size} is too small for glyphs of {largest} pixels")

    def metadata(self) -> dict[str, Any]:
        return {
            "generator": self.generator_name,
            "seed": self.seed,
            "num_sequences": self.num_sequences,
            "seq_len": self.seq_len,
            "num_bodies": self.num_bodies,
            "glyphs": "pillow-font" if self.mnist_path is None else f"mnist:{Path(self.mnist_path).name}",
            "canvas_size": self.canvas_size,
            "frame_size": self.frame_size,
            "steps_per_frame": self.steps_per_frame,
            "gravity": self.gravity,
            "softening": self.softening,
            "max_speed": self.max_speed,
            # Written files store frames as 8-bit levels: stored / 255 gives the items' frames.
            "units": "digit intensity as 8-bit levels 0-255",
            "value_range": [0.0, 255.0],
        }

    def __len__(self) -> int:
        return self.num_sequences

    def _glyph(self, choice: int) -> np.ndarray:
        glyph = self._glyphs[choice]
        return glyph if self.mnist_path is None else _crop(glyph)

    def simulate(self, index: int) -> dict[str, np.ndarray]:
        """Sequence ``index`` as NumPy arrays (frames float32 (T, S, S) in [0, 1] and the physical state)."""
        index = check_index(index, self.num_sequences, "sequences")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        K = self.num_bodies
        choices = rng.integers(0, len(self._glyphs), size=K)
        glyphs = [self._glyph(int(c)) for c in choices]
        sizes = np.array([[g.shape[1], g.shape[0]] for g in glyphs], dtype=np.float64)  # (width, height)
        start = rng.uniform(size=(K, 2)) * (self.canvas_size - sizes)
        speed = rng.uniform(0.0, self.max_speed, size=K)
        heading = rng.uniform(0.0, 2.0 * np.pi, size=K)
        velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
        num_steps = (self.seq_len - 1) * self.steps_per_frame
        xs, vs = simulate_nbody(
            start,
            velocity,
            self.masses,
            sizes,
            num_steps,
            self.gravity,
            self.softening,
            self.max_speed,
            self.box,
        )
        kept = slice(0, num_steps + 1, self.steps_per_frame)
        positions, velocities = xs[kept], vs[kept]
        canvas = np.zeros((self.seq_len, self.canvas_size, self.canvas_size), dtype=np.float32)
        for t in range(self.seq_len):
            for k in range(K):
                _place(canvas[t], glyphs[k], positions[t, k, 0], positions[t, k, 1])
        frames = torch.from_numpy(canvas)[:, None]
        if self.frame_size != self.canvas_size:
            frames = F.interpolate(
                frames, size=(self.frame_size, self.frame_size), mode="bicubic", align_corners=False
            )
        frames = frames.clamp_(0.0, 1.0)[:, 0].numpy()
        return {
            "frames": frames,
            "positions": positions.astype(np.float32),
            "velocities": velocities.astype(np.float32),
            "energy": nbody_energy(positions, velocities, self.masses, self.gravity, self.softening).astype(
                np.float32
            ),
            "masses": self.masses.astype(np.float32),
            "glyph_sizes": sizes.astype(np.float32),
            "digits": self._labels[choices].astype(np.int64),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        state = self.simulate(index)
        item: dict[str, Any] = {name: torch.from_numpy(value) for name, value in state.items()}
        item["frames"] = item["frames"][..., None]
        item["index"] = int(index)
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_sequences={self.num_sequences}, seq_len={self.seq_len}, "
            f"num_bodies={self.num_bodies}, seed={self.seed})"
        )
