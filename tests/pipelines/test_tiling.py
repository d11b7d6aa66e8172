"""Whole-domain forecasts (prediff.pipelines.tiling): frames larger than the tile, blended without visible
edges, NaN outside the radar domain kept, memory bounded by chunks of tiles; a PreDiff ensemble sampled as one
latent field per member, with the whole domain's extrapolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter

from prediff.knowledge import AnticipatedIntensityControl
from prediff.pipelines import EarthformerPipeline, PreDiffPipeline
from prediff.pipelines.tiling import blend_weights, forecast_tiled, tile_starts
from prediff.schedulers import prediff_scheduler


@pytest.fixture(scope="module")
def earthformer():
    from prediff.models.earthformer import EarthformerModel

    torch.manual_seed(0)
    model = EarthformerModel(
        input_shape=(3, 32, 32, 1), target_shape=(2, 32, 32, 1), base_units=16, num_heads=2, enc_depth=(1, 1),
        dec_depth=(1, 1), initial_downsample_scale=2, initial_downsample_conv_layers=1, final_upsample_conv_layers=1,
    ).eval()  # fmt: skip
    return EarthformerPipeline(model)


def wave_context(height=80, width=112) -> np.ndarray:
    """A smooth field that crosses every tile border, `(1, 3, H, W, 1)`, VIL levels."""
    y, x = np.mgrid[0:height, 0:width] / 40.0
    field = 100 + 80 * np.sin(2 * y + 1.3 * x)
    return np.repeat(field[None, None, :, :, None], 3, axis=1).astype(np.float32)


def test_tiles_cover_the_domain_and_weights_sum_to_one():
    assert tile_starts(80, 32, 24) == [0, 24, 48]
    assert tile_starts(90, 32, 24) == [0, 24, 48, 58]
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_starts(20, 32, 24)
    for size in (80, 90, 32):
        starts = tile_starts(size, 32, 24)
        total = np.zeros(size)
        for start in starts:
            total[start : start + 32] += blend_weights(start, 32, size, 8)
        assert (total > 0).all()
        if (size - 32) % 24 == 0:  # overlaps of exactly `overlap` pixels: a partition of unity
            np.testing.assert_allclose(total, 1.0, rtol=1e-12)


def edge_jumps(frame: np.ndarray, columns: list[int]) -> float:
    """Mean |difference| across the given column borders over that of all columns."""
    jumps = np.abs(np.diff(frame, axis=1)).mean(axis=0)
    return float(jumps[columns].max() / np.median(jumps))


def test_no_tile_edge_is_visible_where_hard_tiling_shows_one(earthformer):
    context = wave_context()
    hard = forecast_tiled(earthformer, context, overlap=0, progress=False)
    blended = forecast_tiled(earthformer, context, progress=False)  # overlap 8
    assert hard.shape == blended.shape == (1, 2, 80, 112, 1)
    # Hard tiles of 32 start at 0, 32, 64, 80: the network's own border effects show as jumps there.
    assert edge_jumps(hard[0, -1, :, :, 0], [31, 63, 79]) > 1.8
    # Blended tiles start at 0, 24, 48, 72, 80: no column near a tile's edge jumps more than elsewhere.
    edges = sorted({c for start in tile_starts(112, 32, 24) for c in (start - 1, start + 31) if 0 <= c < 111})
    assert edge_jumps(blended[0, -1, :, :, 0], edges) < 1.5


def test_pipelines_accept_larger_frames_and_keep_nan_outside_the_domain(pipe):
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(0).uniform(0, 255, (2, 3, 40, 56, 1)).astype(np.float32)
    context[0, :, :10, :12] = np.nan  # outside the radar domain in every frame
    context[1, 1, 30:, 50:] = np.nan  # missing in one context frame
    frames = pipe(context, num_inference_steps=2, num_ensemble_members=2, generator=torch.Generator().manual_seed(0))
    frames = frames.frames
    assert frames.shape == (2, 2, 2, 40, 56, 1)
    outside = np.isnan(context).any(axis=(1, 4))
    np.testing.assert_array_equal(np.isnan(frames), np.broadcast_to(outside[:, None, None, :, :, None], frames.shape))
    assert not np.allclose(frames[:, 0], frames[:, 1], equal_nan=True)  # members differ
    again = pipe(context, num_inference_steps=2, num_ensemble_members=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.frames, frames)  # the same generator, the same forecast
    nowhere = pipe(np.full_like(context, np.nan), num_inference_steps=2, num_ensemble_members=2).frames
    assert nowhere.shape == frames.shape and np.isnan(nowhere).all()  # no pixel inside a domain: nothing forecast


@pytest.mark.parametrize("with_extrapolator", [False, True])
def test_one_tile_is_the_plain_forecast_and_chunks_do_not_change_the_result(pipe, extrapolating_pipe,
                                                                             with_extrapolator):  # fmt: skip
    pipe = extrapolating_pipe if with_extrapolator else pipe
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(1).uniform(0, 255, (2, 3, 32, 32, 1)).astype(np.float32)
    kwargs = dict(num_inference_steps=2, num_ensemble_members=2)
    tiled = forecast_tiled(pipe, context, generator=torch.Generator().manual_seed(3), progress=False, **kwargs)
    plain = pipe(context, generator=torch.Generator().manual_seed(3), **kwargs).frames
    np.testing.assert_array_equal(tiled, plain)

    large = np.random.default_rng(2).uniform(0, 255, (1, 3, 48, 48, 1)).astype(np.float32)
    kwargs = dict(num_inference_steps=2, num_ensemble_members=1, progress=False)
    one = forecast_tiled(pipe, large, tile_batch_size=1, generator=torch.Generator().manual_seed(0), **kwargs)
    four = forecast_tiled(pipe, large, tile_batch_size=4, generator=torch.Generator().manual_seed(0), **kwargs)
    # Batches of 1 and 4 tiles reduce in another float32 order (see tests/evaluation/test_distributed.py).
    np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-3)


def test_generators_per_member_give_each_member_its_own_forecast(pipe):
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(4).uniform(0, 255, (2, 3, 40, 40, 1)).astype(np.float32)
    kwargs = dict(num_inference_steps=2, progress=False)

    def generators(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = forecast_tiled(pipe, context, num_ensemble_members=2, generator=generators([0, 1, 2, 3]), **kwargs)
    # Context 1, member 0 alone with its own generator (seed 2) gives the same forecast as in the batch.
    alone = forecast_tiled(pipe, context[1:], num_ensemble_members=1, generator=generators([2]), **kwargs)
    np.testing.assert_allclose(alone[0, 0], both[1, 0], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 3}, "overlap must be a multiple of 4"),
        ({"overlap": 32}, "overlap must be a multiple of 4 in \\[0, 32\\)"),
        ({"tile_batch_size": 0}, "tile_batch_size must be a positive integer"),
    ],
)
def test_bad_tiling_arguments_are_refused(pipe, kwargs, message):
    context = np.zeros((1, 3, 40, 40, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        forecast_tiled(pipe, context, **kwargs)


def test_bad_whole_domain_calls_are_refused(pipe):
    context = np.zeros((1, 3, 40, 40, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="'np' or 'pt', not 'latent'"):
        pipe(context, output_type="latent")
    with pytest.raises(ValueError, match="one per context and member, 1 \\* 2, got 3"):
        pipe(context, num_ensemble_members=2, generator=[torch.Generator() for _ in range(3)])
    per_context = AnticipatedIntensityControl(target=[10.0, 20.0], method="analytic")
    with pytest.raises(ValueError, match="target per context or member cannot steer frames larger"):
        pipe(np.zeros((2, 3, 40, 40, 1), dtype=np.float32), knowledge_controls=per_context)
    context[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite values"):
        pipe(context)
    with pytest.raises(ValueError, match="shape \\(B, 3, H, W, 1\\)"):
        forecast_tiled(pipe, np.zeros((1, 2, 40, 40, 1), dtype=np.float32))


@pytest.mark.parametrize("radius_km", [None, 8.0])
def test_the_intensity_cap_is_the_whole_domains_not_each_tiles(pipe, radius_km):
    # Rain in the left tiles only: a cap per tile would be 0 in the dry right tiles and erase what moves there.
    pipe.set_progress_bar_config(disable=True)
    context = np.zeros((1, 3, 32, 80, 1), dtype=np.float32)
    context[:, :, :, :24] = np.random.default_rng(4).uniform(0, 60, (1, 3, 32, 24, 1))
    context[0, 0, 0, 70] = np.nan  # outside the domain: stays NaN, and is no part of the cap
    kwargs = dict(num_inference_steps=2, num_ensemble_members=2, progress=False)
    free = forecast_tiled(pipe, context, generator=torch.Generator().manual_seed(5), **kwargs)
    pipe.register_to_config(pixel_size_km=2.0)
    pipe.max_intensity_growth = 1.0
    pipe.intensity_cap_radius_km = radius_km
    try:
        capped = forecast_tiled(pipe, context, generator=torch.Generator().manual_seed(5), **kwargs)
        assert pipe.max_intensity_growth == 1.0  # restored after the tiles ran without it
    finally:
        pipe.max_intensity_growth = None
        pipe.intensity_cap_radius_km = None
        pipe.register_to_config(pixel_size_km=None)
    last = np.where(np.isnan(context[0, -1, :, :, 0]), -np.inf, context[0, -1, :, :, 0])
    if radius_km is None:
        cap = np.full(last.shape, last.max())
    else:  # 4 pixels of 2 km, across tile borders (the tiles start every 48 pixels)
        cap = maximum_filter(last, size=9, mode="constant", cval=-np.inf)
        assert cap[:, 60:].max() == 0.0 and (cap[:, :28] < last.max()).any()  # local, not the domain's
    assert (free[..., 40:, :] > 0).any() and (free > last.max()).any(), "the test needs rain right and above the cap"
    np.testing.assert_array_equal(capped, np.minimum(free, cap[None, None, None, :, :, None]))
    assert np.isnan(capped[0, :, :, 0, 70]).all()


def test_the_whole_domain_is_extrapolated_and_sampled_as_one_latent_field(extrapolating_pipe):
    pipe = extrapolating_pipe
    context = np.zeros((1, 3, 32, 80, 1), dtype=np.float32)
    context[0, :, 8:24, 20:28] = 200.0  # rain just left of the first tile border (the tiles start at 0, 24, 48)
    calls, windows = [], []
    hooks = [
        pipe.extrapolator.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape))),
        pipe.unet.register_forward_hook(lambda module, args, output: windows.append(tuple(args[0].shape))),
    ]
    try:
        frames = forecast_tiled(pipe, context, num_inference_steps=3, num_ensemble_members=2, tile_batch_size=2,
                                generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    # One motion fit and extrapolation of the whole domain, not one a tile: rain crossing a border keeps moving.
    assert calls == [(1, 3, 32, 80, 1)]
    # Every step the denoiser sees the 3 windows (chunks of 2 tiles x 2 members) of one latent field.
    assert windows == [(4, 2, 8, 8, 4), (2, 2, 8, 8, 4)] * 3
    assert frames.shape == (1, 2, 2, 32, 80, 1) and np.isfinite(frames).all()


@pytest.mark.parametrize(("form", "scheduler"), [("x0", None), ("official", "ddpm")])
def test_knowledge_controls_steer_every_window_of_a_whole_domain(extrapolating_pipe, form, scheduler):
    pipe = extrapolating_pipe
    if scheduler is not None:  # the official form shifts DDPM's posterior mean after each step
        pipe = PreDiffPipeline(pipe.vae, pipe.unet, prediff_scheduler(scheduler), extrapolator=pipe.extrapolator)
        pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(6).uniform(0, 80, (1, 3, 32, 56, 1)).astype(np.float32)
    kwargs = dict(num_inference_steps=3, num_ensemble_members=2, progress=False)
    means = {}
    for target in (20.0, 120.0):
        control = AnticipatedIntensityControl(target=target, method="analytic", form=form)
        frames = forecast_tiled(pipe, context, generator=torch.Generator().manual_seed(0),
                                knowledge_controls=control, **kwargs)  # fmt: skip
        means[target] = frames.mean(axis=(0, 1, 2, 3, 5))
    free = forecast_tiled(pipe, context, generator=torch.Generator().manual_seed(0), **kwargs)
    free = free.mean(axis=(0, 1, 2, 3, 5))
    # Both tiles (columns 0-31 and 24-55) are steered: lower than free for 20, higher for 120.
    for columns in (slice(0, 24), slice(32, 56)):
        assert means[20.0][columns].mean() < free[columns].mean() < means[120.0][columns].mean()
