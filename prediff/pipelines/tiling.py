"""Whole-domain forecasts: frames larger than a pipeline's tile, forecast as overlapping tiles blended smoothly.

A forecaster nowcasts a whole radar composite, not a crop of the size a network was trained on. The networks
see a fixed `(H, W)` tile (cuboid attention has a fixed grid), so [`forecast_tiled`] covers the domain with
tiles that overlap by `overlap` pixels, forecasts them in chunks of `tile_batch_size` (memory stays bounded by
the chunk, not the domain), and blends the overlaps with raised-cosine weights that sum to one, so no tile edge
shows. For a PreDiff pipeline every member's initial noise is cropped from one noise field of the whole domain,
so overlapping tiles start from the same noise where they overlap.

NaN marks pixels outside the radar's domain: tiles see them as the lowest physical value (no rain), and the
forecast is NaN wherever any context frame was NaN. A tile that lies wholly outside the domain is not forecast.
A pipeline's intensity cap (`max_intensity_growth`) applies to the blended forecast, from the whole domain's last
context frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["blend_weights", "forecast_tiled", "tile_starts"]


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of the tiles along one axis of `size` pixels: every `stride`, the last one flush with the end."""
    if size < tile:
        raise ValueError(f"a domain of {size} pixels is smaller than the tile of {tile}")
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def blend_weights(start: int, tile: int, size: int, overlap: int) -> np.ndarray:
    """`(tile,)` weights of one tile along one axis: raised-cosine ramps over `overlap` pixels on the sides that
    meet another tile (none at the domain's edges), 1 elsewhere. Where two tiles meet over exactly `overlap`
    pixels their ramps sum to one (sin^2 + cos^2); wider overlaps are normalised by the summed weights."""
    weights = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        if start > 0:
            weights[:overlap] = ramp
        if start + tile < size:
            weights[tile - overlap :] = ramp[::-1]
    return weights


def _tile_seed(member_seed: int, y: int, x: int) -> int:
    return (member_seed * 1_000_003 + y * 65_537 + x) % 2**63


def forecast_tiled(
    pipe: Any,
    context: np.ndarray | torch.Tensor,
    overlap: int | None = None,
    tile_batch_size: int = 4,
    generator: torch.Generator | list[torch.Generator] | None = None,
    progress: bool = True,
    **call_kwargs: Any,
) -> np.ndarray:
    """Forecast contexts of any size at least the pipeline's tile, NaN outside the radar domain.

    Args:
        pipe: a [`PreDiffPipeline`] or [`EarthformerPipeline`].
        context: `(B, T_in, H, W, C)` in physical units, `H, W` at least the pipeline's tile; NaN outside the
            domain.
        overlap: pixels shared by neighbouring tiles (default: a quarter of the tile, rounded down to the
            autoencoder's downsampling factor).
        tile_batch_size: tiles forecast per pipeline call; bounds memory.
        generator: randomness of a PreDiff pipeline's noise: one generator, or one per context and member ordered
            (context, member) as in the pipelines (the same generators give the same forecast).
        progress: show a progress bar over the chunks of tiles.
        call_kwargs: passed to every pipeline call (`num_inference_steps`, `num_ensemble_members`,
            `knowledge_controls`); a control's target applies to each tile.

    Returns:
        `np.ndarray` float32: `(B, M, T_out, H, W, C)` for a PreDiff pipeline, `(B, T_out, H, W, C)` for an
        Earthformer pipeline, in physical units, NaN outside the domain.
    """
    context = context.detach().cpu().numpy() if isinstance(context, torch.Tensor) else np.asarray(context)
    T_in, tile_h, tile_w, C = pipe.context_shape
    if context.ndim != 5 or context.shape[1] != T_in or context.shape[4] != C:
        raise ValueError(
            f"context must have shape (B, {T_in}, H, W, {C}) with H >= {tile_h} and W >= {tile_w}, got "
            f"{tuple(context.shape)}"
        )
    if np.isinf(context).any():
        raise ValueError("context holds infinite values; NaN marks pixels outside the radar domain")
    factor = int(getattr(pipe, "vae_scale_factor", 1))
    overlap = (min(tile_h, tile_w) // 4) // factor * factor if overlap is None else int(overlap)
    if overlap < 0 or overlap >= min(tile_h, tile_w) or overlap % factor:
        raise ValueError(f"overlap must be a multiple of {factor} in [0, {min(tile_h, tile_w)}), got {overlap}")
    if not (isinstance(tile_batch_size, int) and tile_batch_size > 0):
        raise ValueError(f"tile_batch_size must be a positive integer, got {tile_batch_size!r}")

    B, _, H, W, _ = context.shape
    outside = np.isnan(context).any(axis=(1, 4))  # (B, H, W)
    # Pad to whole latent pixels and at least one tile; the padding counts as outside the domain.
    H_pad = max(tile_h, math.ceil(H / factor) * factor)
    W_pad = max(tile_w, math.ceil(W / factor) * factor)
    lowest = pipe.physical_range[0]
    filled = np.full((B, T_in, H_pad, W_pad, C), lowest, dtype=np.float32)
    filled[:, :, :H, :W] = np.where(np.isnan(context), lowest, context)
    inside = np.zeros((B, H_pad, W_pad), dtype=bool)
    inside[:, :H, :W] = ~outside

    rows = tile_starts(H_pad, tile_h, tile_h - overlap)
    cols = tile_starts(W_pad, tile_w, tile_w - overlap)
    tiles = [
        (b, y, x) for b in range(B) for y in rows for x in cols if inside[b, y : y + tile_h, x : x + tile_w].any()
    ]

    ensemble = hasattr(pipe, "unet")  # a PreDiff pipeline: members and noise
    members = int(call_kwargs.get("num_ensemble_members", 1)) if ensemble else 1
    noise = None
    if ensemble:
        # One noise field of the whole (padded) domain per context and member: tiles crop it.
        T_out, h, w, c = pipe.unet.target_shape
        field_shape = (T_out, H_pad // factor, W_pad // factor, c)
        if isinstance(generator, list):
            if len(generator) != B * members:
                raise ValueError(
                    f"a list of generators needs one per context and member, {B} * {members}, got {len(generator)}"
                )
            noise = torch.stack([torch.randn(field_shape, generator=g) for g in generator]).reshape(
                B, members, *field_shape
            )
            seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in generator]
        else:
            noise = torch.randn((B, members, *field_shape), generator=generator, dtype=torch.float32)
            base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            seeds = [base_seed + row for row in range(B * members)]
    T_out = pipe.forecast_shape[0]
    total = np.zeros((B, members, T_out, H_pad, W_pad, C), dtype=np.float32)
    weight = np.zeros((B, H_pad, W_pad), dtype=np.float32)

    chunks = [tiles[i : i + tile_batch_size] for i in range(0, len(tiles), tile_batch_size)]
    for chunk in tqdm(chunks, desc="tiles", disable=not progress):
        batch = np.stack([filled[b, :, y : y + tile_h, x : x + tile_w] for b, y, x in chunk])
        kwargs = dict(call_kwargs)
        if ensemble:
            # Each tile of each member draws its sampler noise from its own generator, seeded by the member's
            # seed and the tile's place, so that how the tiles are chunked does not change the forecast.
            kwargs["generator"] = [
                torch.Generator().manual_seed(_tile_seed(seeds[b * members + m], y, x))
                for b, y, x in chunk
                for m in range(members)
            ]
            kwargs["latents"] = torch.stack(
                [
                    noise[b, :, :, y // factor : (y + tile_h) // factor, x // factor : (x + tile_w) // factor]
                    for b, y, x in chunk
                ]
            )
        with intensity_cap_lifted(pipe):
            frames = pipe(batch, output_type="np", **kwargs).frames
        if not ensemble:
            frames = frames[:, None]
        for (b, y, x), forecast in zip(chunk, frames):
            window = np.outer(blend_weights(y, tile_h, H_pad, overlap), blend_weights(x, tile_w, W_pad, overlap))
            window = window.astype(np.float32)
            total[b, :, :, y : y + tile_h, x : x + tile_w] += forecast * window[None, None, :, :, None]
            weight[b, y : y + tile_h, x : x + tile_w] += window

    with np.errstate(invalid="ignore", divide="ignore"):
        blended = total / weight[:, None, None, :, :, None]
    blended[~np.broadcast_to(inside[:, None, None, :, :, None], blended.shape)] = np.nan
    blended = blended[:, :, :, :H, :W]
    if getattr(pipe, "max_intensity_growth", None) is not None and not call_kwargs.get("knowledge_controls"):
        # The cap from the whole domain, not from each tile: a dry tile's own cap (0) would erase the rain that
        # moves into it, and caps that differ from tile to tile would show the tiles.
        cap = pipe.intensity_cap(torch.from_numpy(np.ascontiguousarray(context[:, -1]))).numpy()
        blended = np.minimum(blended, cap[:, None, None, :, :, None].astype(np.float32))
    return blended if ensemble else blended[:, 0]


@contextlib.contextmanager
def intensity_cap_lifted(pipe: Any) -> Iterator[None]:
    """Tiles forecast without the pipeline's `max_intensity_growth`, which `forecast_tiled` applies to the whole
    domain after blending."""
    growth = getattr(pipe, "max_intensity_growth", None)
    if growth is None:
        yield
        return
    pipe.max_intensity_growth = None
    try:
        yield
    finally:
        pipe.max_intensity_growth = growth
