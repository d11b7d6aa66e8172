"""Whole-domain forecasts: frames larger than a pipeline's tile, forecast through overlapping tiles.

A forecaster nowcasts a whole radar composite, not a crop of the size a network was trained on. The networks
see a fixed `(H, W)` tile (cuboid attention has a fixed grid), so [`forecast_tiled`] covers the domain with
tiles that overlap by `overlap` pixels, runs them in chunks of `tile_batch_size` (memory stays bounded by the
chunk, not the domain), and blends the overlaps with raised-cosine weights that sum to one, so no tile edge shows.

A PreDiff ensemble is sampled as one latent field of the whole domain per member (as MultiDiffusion samples a
panorama): the motion is fitted to, and the last frame extrapolated over, the whole domain, so rain crossing a
tile border keeps moving; every step the denoiser sees the field through the tiles' windows, each conditioned on
its own crop, and their noise estimates are blended before one scheduler step of the whole field. Overlapping
tiles therefore share one sample; blending independent samples of each tile would average members' cores away
and shrink the spread where tiles overlap. A deterministic pipeline forecasts each tile and blends the frames.

NaN marks pixels outside the radar's domain: tiles see them as the lowest physical value (no rain), and the
forecast is NaN wherever any context frame was NaN. A tile that lies wholly outside the domain is not forecast.
A pipeline's intensity cap (`max_intensity_growth`) applies to the blended forecast, from the whole domain's last
context frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .pipeline_prediff import Extrapolation, control_list
from .pipeline_utils import warn_outside_range

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
        tile_batch_size: tiles whose windows the networks see together (times the members); bounds memory.
        generator: randomness of a PreDiff pipeline's noise: one generator, or one per context and member ordered
            (context, member) as in the pipelines (the same generators give the same forecast).
        progress: show a progress bar over the chunks of tiles (and the sampler's steps).
        call_kwargs: the forecast's arguments (`num_inference_steps`, `num_ensemble_members`,
            `knowledge_controls`); a control's target applies to each tile's window.

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
    if not tiles:  # every pixel outside the domain: nothing to forecast
        members = int(call_kwargs.get("num_ensemble_members", 1)) if ensemble else 1
        total = np.zeros((B, members, pipe.forecast_shape[0], H_pad, W_pad, C), dtype=np.float32)
        weight = np.zeros((B, H_pad, W_pad), dtype=np.float32)
    elif ensemble:
        members = int(call_kwargs.get("num_ensemble_members", 1))
        if isinstance(generator, list) and len(generator) != B * members:
            raise ValueError(
                f"a list of generators needs one per context and member, {B} * {members}, got {len(generator)}"
            )
        warn_outside_range(pipe, filled)
        with torch.no_grad(), pipe.networks_in_eval_mode():
            total, weight = _sample_whole_domain(
                pipe, filled, tiles, overlap, tile_batch_size, generator, progress, **call_kwargs
            )
    else:
        total, weight = _forecast_tiles(pipe, filled, tiles, overlap, tile_batch_size, progress, **call_kwargs)

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


def _window(y: int, x: int, tile_h: int, tile_w: int, H: int, W: int, overlap: int) -> np.ndarray:
    """`(tile_h, tile_w)` float32 blend weights of the tile at `(y, x)` of an `H x W` domain."""
    window = np.outer(blend_weights(y, tile_h, H, overlap), blend_weights(x, tile_w, W, overlap))
    return window.astype(np.float32)


def _forecast_tiles(
    pipe: Any,
    filled: np.ndarray,
    tiles: list[tuple[int, int, int]],
    overlap: int,
    tile_batch_size: int,
    progress: bool,
    **call_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic pipeline's forecast of every tile, weighted: `(B, 1, T_out, H, W, C)` sums of the tiles'
    forecasts times their blend weights, and `(B, H, W)` the weights' sums."""
    B, _, H, W, C = filled.shape
    _, tile_h, tile_w, _ = pipe.context_shape
    total = np.zeros((B, 1, pipe.forecast_shape[0], H, W, C), dtype=np.float32)
    weight = np.zeros((B, H, W), dtype=np.float32)
    chunks = [tiles[i : i + tile_batch_size] for i in range(0, len(tiles), tile_batch_size)]
    for chunk in tqdm(chunks, desc="tiles", disable=not progress):
        batch = np.stack([filled[b, :, y : y + tile_h, x : x + tile_w] for b, y, x in chunk])
        with intensity_cap_lifted(pipe):
            frames = pipe(batch, output_type="np", **call_kwargs).frames
        for (b, y, x), forecast in zip(chunk, frames):
            window = _window(y, x, tile_h, tile_w, H, W, overlap)
            total[b, 0, :, y : y + tile_h, x : x + tile_w] += forecast * window[None, :, :, None]
            weight[b, y : y + tile_h, x : x + tile_w] += window
    return total, weight


def _sample_whole_domain(
    pipe: Any,
    filled: np.ndarray,
    tiles: list[tuple[int, int, int]],
    overlap: int,
    tile_batch_size: int,
    generator: torch.Generator | list[torch.Generator] | None,
    progress: bool,
    num_inference_steps: int | None = None,
    num_ensemble_members: int = 1,
    knowledge_controls: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A PreDiff pipeline's ensemble of the whole domain, sampled as one latent field per member: every step the
    denoiser sees the field through the tiles' windows and their noise estimates are blended, so overlapping
    tiles share one sample instead of averaging independent ones. Returns `(B, M, T_out, H, W, C)` sums of the
    windows' decoded forecasts times their blend weights, and `(B, H, W)` the weights' sums.

    The extrapolation is the whole domain's (rain moving into a tile comes from its neighbours); each window's
    condition is its own crop encoded, as the networks were trained. Knowledge controls steer each window as
    they steer a forecast of one tile."""
    device = pipe._execution_device
    factor = pipe.vae_scale_factor
    B, T_in, H, W, C = filled.shape
    _, tile_h, tile_w, _ = pipe.context_shape
    T_out, h, w, c = pipe.unet.target_shape
    members = num_ensemble_members
    steps = pipe.default_num_inference_steps if num_inference_steps is None else num_inference_steps
    controls = [control for control in control_list(knowledge_controls) if control.scale != 0]
    if any(np.ndim(getattr(control, "target", 0)) > 0 for control in controls):
        raise ValueError(
            "a knowledge-control target per context or member cannot steer frames larger than the pipeline's tile "
            "(each tile's window is steered to the target); give one value"
        )
    first = filled[:1, :, :tile_h, :tile_w]
    pipe.check_inputs(first, steps, members, None, None, controls, "np", None, None)

    condition, extrapolation = _window_conditions(pipe, filled, tiles, tile_batch_size)

    # One latent field per (context, member); each window's noise estimates weighted by its blend weights.
    latents = pipe.prepare_latents((B * members, T_out, H // factor, W // factor, c), generator, None)
    latent_views = [(slice(y // factor, y // factor + h), slice(x // factor, x // factor + w)) for _, y, x in tiles]
    latent_windows = [
        torch.from_numpy(_window(y // factor, x // factor, h, w, H // factor, W // factor, overlap // factor))
        for _, y, x in tiles
    ]
    latent_windows = [window.to(device) for window in latent_windows]
    latent_weight = torch.zeros((B, H // factor, W // factor), device=device)
    for (b, _, _), (ys, xs), window in zip(tiles, latent_views, latent_windows):
        latent_weight[b, ys, xs] += window
    latent_weight = latent_weight.clamp(min=1e-12).repeat_interleave(members, dim=0)[:, None, :, :, None]

    def rows_of(part: range, field: torch.Tensor) -> torch.Tensor:
        """The windows `part` of a `(B * M, T, h_all, w_all, c)` field: `(len(part) * M, T, h, w, c)`."""
        return torch.cat(
            [field[tiles[k][0] * members : (tiles[k][0] + 1) * members, :, *latent_views[k]] for k in part]
        )

    def window_extrapolation(part: range) -> Extrapolation | None:
        if extrapolation is None:
            return None
        return extrapolation.rows(slice(part.start, part.stop)).repeat_interleave(members)

    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    extra_step_kwargs = pipe.prepare_extra_step_kwargs(generator)
    parts = [range(i, min(i + tile_batch_size, len(tiles))) for i in range(0, len(tiles), tile_batch_size)]
    # Every step sees the same windows: their conditions, one row per member, are repeated once.
    part_conditions = [condition[part.start : part.stop].repeat_interleave(members, dim=0) for part in parts]
    bar = tqdm(total=len(timesteps) * len(parts) + len(parts), desc="whole domain", disable=not progress)
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        noise_pred = torch.zeros_like(latents)
        official_grad = torch.zeros_like(latents) if controls else None
        for part, window_condition in zip(parts, part_conditions):
            window_input = rows_of(part, model_input)
            if controls:
                batch_index = torch.arange(len(part), device=device).repeat_interleave(members)
                part_extrapolation = window_extrapolation(part)
                decode = partial(pipe.decode_forecast, extrapolation=part_extrapolation)
                estimate, gradient = pipe._noise_pred(
                    window_input,
                    t,
                    window_condition,
                    controls,
                    batch_index,
                    decode,
                    part_extrapolation,
                    len(part),
                    final_step=i == len(timesteps) - 1,
                )
            else:
                estimate, gradient = pipe._denoise(window_input, t, window_condition), None
            for j, k in enumerate(part):
                rows = slice(tiles[k][0] * members, (tiles[k][0] + 1) * members)
                window = latent_windows[k][None, None, :, :, None]
                noise_pred[rows, :, *latent_views[k]] += estimate[j * members : (j + 1) * members] * window
                if gradient is not None:
                    official_grad[rows, :, *latent_views[k]] += gradient[j * members : (j + 1) * members] * window
            bar.update()
        latents = scheduler.step(noise_pred / latent_weight, t, latents, **extra_step_kwargs, return_dict=False)[0]
        if official_grad is not None and official_grad.any():
            latents = latents - pipe._posterior_std(t) * (official_grad / latent_weight)

    total = np.zeros((B, members, T_out, H, W, C), dtype=np.float32)
    weight = np.zeros((B, H, W), dtype=np.float32)
    for part in parts:
        frames = (
            pipe.decode_forecast(
                rows_of(part, latents).to(pipe.vae.dtype), window_extrapolation(part), clamp=extrapolation is not None
            )
            .float()
            .cpu()
            .numpy()
        )
        for j, k in enumerate(part):
            b, y, x = tiles[k]
            window = _window(y, x, tile_h, tile_w, H, W, overlap)
            total[b, :, :, y : y + tile_h, x : x + tile_w] += (
                frames[j * members : (j + 1) * members] * window[None, None, :, :, None]
            )
            weight[b, y : y + tile_h, x : x + tile_w] += window
        bar.update()
    bar.close()
    return total, weight


def _window_conditions(
    pipe: Any, filled: np.ndarray, tiles: list[tuple[int, int, int]], tile_batch_size: int
) -> tuple[torch.Tensor, Extrapolation | None]:
    """The condition of every window `(len(tiles), T_cond, h, w, c)` in the denoiser's dtype: the latents of its
    crop of the context and, with an extrapolator, of its crop of the whole domain's extrapolation, which is
    returned too (an [`Extrapolation`] with one row per window, else None)."""
    _, tile_h, tile_w, _ = pipe.context_shape
    unit = pipe.scale_to_unit(torch.from_numpy(filled).to(pipe._execution_device))
    extrapolated = None if pipe.extrapolator is None else pipe.extrapolator(unit, pipe.forecast_shape[0])
    crops = [(b, slice(y, y + tile_h), slice(x, x + tile_w)) for b, y, x in tiles]
    conditions, offsets = [], []
    for start in range(0, len(tiles), tile_batch_size):
        part = crops[start : start + tile_batch_size]
        conditions.append(pipe.encode_frames(torch.stack([unit[b, :, ys, xs] for b, ys, xs in part])))
        if extrapolated is not None:
            frames = torch.stack([extrapolated[b, :, ys, xs] for b, ys, xs in part]).float()
            latents = pipe.encode_frames(frames)
            offsets.append(Extrapolation(frames, latents, pipe.decode_unit(latents.to(pipe.vae.dtype))))
    condition = torch.cat(conditions)
    extrapolation = Extrapolation(*(torch.cat(fields) for fields in zip(*offsets))) if offsets else None
    if extrapolation is not None:
        condition = torch.cat([condition, extrapolation.latents], dim=1)
    return condition.to(pipe.unet.dtype), extrapolation


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
