"""Decomposition of a ``(B, T, H, W, C)`` tensor into cuboids and back.

A cuboid attention layer pads the tensor to a multiple of the cuboid size, optionally rolls it (shifted
windows), and reorders it into ``(B, N_cuboids, V, C)`` with ``V = cT * cH * cW``. The reorder follows the
official Earthformer layout exactly, because the relative-position tables of published checkpoints are
indexed by the place of a token inside its cuboid:

* local strategy ``"l"`` on an axis of length ``L`` with block ``c``: index ``n * c + a`` goes to cuboid ``n``,
  place ``a`` (contiguous blocks);
* dilated strategy ``"d"``: index ``a * (L // c) + n`` goes to cuboid ``n``, place ``a`` (stride ``L // c``).

Cuboids are enumerated row-major over ``(nT, nH, nW)`` and places row-major over ``(aT, aH, aW)``.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

Size3 = tuple[int, int, int]
Strategy = tuple[str, str, str]

PADDING_TYPES = ("ignore", "zeros", "nearest")
STRATEGIES = ("l", "d")


def check_strategy(strategy: Strategy) -> Strategy:
    strategy = tuple(strategy)
    if len(strategy) != 3 or any(s not in STRATEGIES for s in strategy):
        raise ValueError(f"strategy must be three of {STRATEGIES} for (T, H, W), got {strategy!r}")
    return strategy


def check_padding_type(padding_type: str) -> str:
    if padding_type not in PADDING_TYPES:
        raise ValueError(f"padding_type must be one of {PADDING_TYPES}, got {padding_type!r}")
    return padding_type


def effective_cuboid_and_shift(
    data_shape: Size3, cuboid_size: Size3, shift_size: Size3, strategy: Strategy
) -> tuple[Size3, Size3]:
    """Cuboid and shift sizes actually used for ``data_shape = (T, H, W)``.

    A dilated axis is never shifted; an axis no longer than its cuboid becomes one whole cuboid, unshifted.
    """
    cuboid = list(cuboid_size)
    shift = list(shift_size)
    for axis in range(3):
        if strategy[axis] == "d":
            shift[axis] = 0
        if data_shape[axis] <= cuboid[axis]:
            cuboid[axis] = data_shape[axis]
            shift[axis] = 0
    return tuple(cuboid), tuple(shift)


def padding_amounts(data_shape: Size3, block: Size3) -> Size3:
    """Padding at the end of each axis to reach a multiple of ``block``."""
    return tuple((b - length % b) % b for length, b in zip(data_shape, block))


def pad_thw(x: torch.Tensor, pad: Size3, padding_type: str, t_pad_left: bool = False) -> torch.Tensor:
    """Pad ``(B, T, H, W, C)`` at the end of T, H, W ("zeros"/"ignore") or resize to the padded size ("nearest")."""
    pad_t, pad_h, pad_w = pad
    if pad_t == 0 and pad_h == 0 and pad_w == 0:
        return x
    if padding_type == "nearest":
        _, T, H, W, _ = x.shape
        resized = F.interpolate(x.permute(0, 4, 1, 2, 3), size=(T + pad_t, H + pad_h, W + pad_w))
        return resized.permute(0, 2, 3, 4, 1)
    t_pad = (pad_t, 0) if t_pad_left else (0, pad_t)
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h) + t_pad)


def unpad_thw(x: torch.Tensor, pad: Size3, padding_type: str) -> torch.Tensor:
    """Inverse of :func:`pad_thw` for end-padding."""
    pad_t, pad_h, pad_w = pad
    if pad_t == 0 and pad_h == 0 and pad_w == 0:
        return x
    _, T, H, W, _ = x.shape
    if padding_type == "nearest":
        resized = F.interpolate(x.permute(0, 4, 1, 2, 3), size=(T - pad_t, H - pad_h, W - pad_w))
        return resized.permute(0, 2, 3, 4, 1)
    return x[:, : T - pad_t, : H - pad_h, : W - pad_w, :]


def _split_axes(data_shape: Size3, cuboid_size: Size3, strategy: Strategy):
    """Intermediate shape and the axes holding cuboid indices (n) and in-cuboid places (a)."""
    intermediate, n_axes, a_axes = [], [], []
    for axis, (c, length, s) in enumerate(zip(cuboid_size, data_shape, strategy)):
        if length % c != 0:
            raise ValueError(f"axis {'THW'[axis]} of length {length} is not a multiple of the cuboid size {c}")
        if s == "l":
            intermediate += [length // c, c]
            n_axes.append(2 * axis + 1)
            a_axes.append(2 * axis + 2)
        else:
            intermediate += [c, length // c]
            n_axes.append(2 * axis + 2)
            a_axes.append(2 * axis + 1)
    return intermediate, n_axes, a_axes


def cuboid_reorder(x: torch.Tensor, cuboid_size: Size3, strategy: Strategy) -> torch.Tensor:
    """``(B, T, H, W, C) -> (B, N_cuboids, V, C)``; T, H, W must be multiples of ``cuboid_size``."""
    B, T, H, W, C = x.shape
    intermediate, n_axes, a_axes = _split_axes((T, H, W), cuboid_size, strategy)
    volume = cuboid_size[0] * cuboid_size[1] * cuboid_size[2]
    x = x.reshape(B, *intermediate, C).permute(0, *n_axes, *a_axes, 7)
    return x.reshape(B, -1, volume, C)


def cuboid_reorder_reverse(x: torch.Tensor, cuboid_size: Size3, strategy: Strategy, data_shape: Size3) -> torch.Tensor:
    """Exact inverse of :func:`cuboid_reorder`: ``(B, N_cuboids, V, C) -> (B, T, H, W, C)``."""
    B, _, _, C = x.shape
    intermediate, n_axes, a_axes = _split_axes(data_shape, cuboid_size, strategy)
    permuted_shape = [intermediate[a - 1] for a in n_axes + a_axes]
    order = n_axes + a_axes
    inverse = [0] * 6
    for position, axis in enumerate(order):
        inverse[axis - 1] = position + 1
    x = x.reshape(B, *permuted_shape, C).permute(0, *inverse, 7)
    return x.reshape(B, *data_shape, C)


def relative_position_index(cuboid_size: Size3) -> torch.Tensor:
    """``(V, V)`` int64 index into a ``((2cT-1)(2cH-1)(2cW-1), heads)`` bias table, offset = query - key."""
    cT, cH, cW = cuboid_size
    coords = torch.stack(torch.meshgrid(torch.arange(cT), torch.arange(cH), torch.arange(cW), indexing="ij")).flatten(
        1
    )
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative = relative + torch.tensor([cT - 1, cH - 1, cW - 1])
    return relative[..., 0] * (2 * cH - 1) * (2 * cW - 1) + relative[..., 1] * (2 * cW - 1) + relative[..., 2]


def _region_ids(length: int, cuboid: int, shift: int) -> torch.Tensor:
    """Swin-style shift regions ``[0, L-c), [L-c, L-s), [L-s, L)`` of one axis (one region if unshifted)."""
    ids = torch.zeros(length, dtype=torch.long)
    if shift > 0:
        ids[length - cuboid : length - shift] = 1
        ids[length - shift :] = 2
    return ids


def _valid_places(
    data_shape: Size3, pad: Size3, cuboid_size: Size3, shift_size: Size3, strategy: Strategy
) -> torch.Tensor:
    """Boolean ``(N_cuboids, V)``: which places of the padded, shifted, reordered tensor hold data (not padding)."""
    valid = pad_thw(torch.ones((1, *data_shape, 1)), pad, "zeros")
    if any(s > 0 for s in shift_size):
        valid = torch.roll(valid, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3))
    return cuboid_reorder(valid, cuboid_size, strategy)[0, ..., 0] > 0


@lru_cache(maxsize=256)
def self_attention_mask(
    data_shape: Size3,
    cuboid_size: Size3,
    shift_size: Size3,
    strategy: Strategy,
    padding_type: str,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean ``(N_cuboids, V, V)`` mask (True = may attend), or ``None`` when every pair may attend.

    ``data_shape`` is the unpadded ``(T, H, W)``; sizes are the effective ones. Two places attend when they
    lie in the same shift region; with ``padding_type="ignore"`` padded places are excluded too.
    """
    pad = padding_amounts(data_shape, cuboid_size)
    padded = tuple(length + p for length, p in zip(data_shape, pad))
    has_shift = any(s > 0 for s in shift_size)
    masks_padding = padding_type == "ignore" and any(p > 0 for p in pad)
    if not has_shift and not masks_padding:
        return None
    regions = [_region_ids(length, c, s) for length, c, s in zip(padded, cuboid_size, shift_size)]
    region_id = (regions[0][:, None, None] * 9 + regions[1][None, :, None] * 3 + regions[2][None, None, :]).float()
    region_id = cuboid_reorder(region_id[None, ..., None], cuboid_size, strategy)[0, ..., 0]
    mask = region_id[:, :, None] == region_id[:, None, :]
    if masks_padding:
        valid = _valid_places(data_shape, pad, cuboid_size, shift_size, strategy)
        mask = mask & valid[:, :, None] & valid[:, None, :]
    return mask.to(device)


@lru_cache(maxsize=256)
def global_key_mask(
    data_shape: Size3,
    cuboid_size: Size3,
    shift_size: Size3,
    strategy: Strategy,
    padding_type: str,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean ``(N_cuboids * V,)`` mask of the local keys a global vector may read (None: all of them).

    Only "ignore" padding masks keys. Keys are in cuboid order, so the mask is reordered like them (the
    official code leaves it in raster order; no published configuration pads, so this changes nothing there).
    """
    pad = padding_amounts(data_shape, cuboid_size)
    if padding_type != "ignore" or not any(p > 0 for p in pad):
        return None
    return _valid_places(data_shape, pad, cuboid_size, shift_size, strategy).reshape(-1).to(device)


@lru_cache(maxsize=256)
def cross_attention_mask(
    x_length: int,
    mem_length: int,
    spatial_shape: tuple[int, int],
    n_temporal: int,
    cuboid_hw: tuple[int, int],
    shift_hw: tuple[int, int],
    strategy: Strategy,
    padding_type: str,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean ``(N_cuboids, V_x, V_mem)`` mask for cross attention (None: every pair may attend).

    Memory is padded on the left in time and queries on the right; H and W at the end.
    """
    H, W = spatial_shape
    pad_t_mem = (n_temporal - mem_length % n_temporal) % n_temporal
    pad_t_x = (n_temporal - x_length % n_temporal) % n_temporal
    pad_h, pad_w = padding_amounts((H, W, 1), (*cuboid_hw, 1))[:2]
    has_shift = any(s > 0 for s in shift_hw)
    masks_padding = padding_type == "ignore" and any(p > 0 for p in (pad_t_mem, pad_t_x, pad_h, pad_w))
    if not has_shift and not masks_padding:
        return None
    Hp, Wp = H + pad_h, W + pad_w
    x_cuboid = ((x_length + pad_t_x) // n_temporal, *cuboid_hw)
    mem_cuboid = ((mem_length + pad_t_mem) // n_temporal, *cuboid_hw)
    x_valid = torch.ones((1, x_length, H, W, 1))
    mem_valid = torch.ones((1, mem_length, H, W, 1))
    if masks_padding:
        x_valid = F.pad(x_valid, (0, 0, 0, pad_w, 0, pad_h, 0, pad_t_x))
        mem_valid = F.pad(mem_valid, (0, 0, 0, pad_w, 0, pad_h, pad_t_mem, 0))
        if has_shift:
            x_valid = torch.roll(x_valid, shifts=(-shift_hw[0], -shift_hw[1]), dims=(2, 3))
            mem_valid = torch.roll(mem_valid, shifts=(-shift_hw[0], -shift_hw[1]), dims=(2, 3))
    else:
        x_valid = torch.ones((1, x_length + pad_t_x, Hp, Wp, 1))
        mem_valid = torch.ones((1, mem_length + pad_t_mem, Hp, Wp, 1))
    x_valid = cuboid_reorder(x_valid, x_cuboid, strategy)[0, ..., 0] > 0
    mem_valid = cuboid_reorder(mem_valid, mem_cuboid, strategy)[0, ..., 0] > 0
    num_cuboids = x_valid.shape[0]
    regions = [_region_ids(length, c, s) for length, c, s in zip((Hp, Wp), cuboid_hw, shift_hw)]
    region_id = (regions[0][:, None] * 3 + regions[1][None, :]).float()
    region_id = region_id[None, None, :, :, None].expand(1, n_temporal, Hp, Wp, 1)
    region_id = cuboid_reorder(region_id, (1, *cuboid_hw), strategy)[0, ..., 0]
    same_region = region_id[:, :, None] == region_id[:, None, :]
    area = cuboid_hw[0] * cuboid_hw[1]
    mask = (
        same_region.reshape(num_cuboids, 1, area, 1, area)
        & x_valid.reshape(num_cuboids, -1, area, 1, 1)
        & mem_valid.reshape(num_cuboids, 1, 1, -1, area)
    )
    return mask.reshape(num_cuboids, x_valid.shape[1], mem_valid.shape[1]).to(device)
