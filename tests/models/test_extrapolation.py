"""MotionExtrapolator: the motion fit, semi-Lagrangian advection, and PreDiffPipeline with an extrapolator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prediff.models import EarthformerUNetModel, MotionExtrapolator
from prediff.models.extrapolation import advect
from prediff.pipelines import PreDiffPipeline


def smooth_field(generator: torch.Generator, size: int = 48, count: int = 2) -> torch.Tensor:
    """`(count, size, size)` smooth non-negative random fields (blobs), in [0, 1]."""
    noise = torch.rand(count, 1, size // 6, size // 6, generator=generator)
    field = torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic", align_corners=True)[:, 0]
    return (field - field.amin(dim=(1, 2), keepdim=True)).clamp(0, 1)


def shifted(field: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Plain reference of advection by a whole-pixel constant motion: `field(x - dx, y - dy)`, 0 coming in."""
    out = torch.zeros_like(field)
    h, w = field.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = field[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_advection_by_a_constant_motion_is_a_shift():
    generator = torch.Generator().manual_seed(0)
    field = smooth_field(generator)[:, None]
    motion = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(2, 2, 48, 48)
    frames = advect(field, motion, num_frames=3)
    for lead in range(3):
        expected = shifted(field, 2 * (lead + 1), -1 * (lead + 1))
        torch.testing.assert_close(frames[:, lead], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("velocity", [(1.5, 0.5), (-1.0, 2.0)])
def test_motion_of_a_translating_field_is_recovered(velocity):
    generator = torch.Generator().manual_seed(1)
    field = smooth_field(generator, count=3)
    # A field moving by `velocity` pixels per frame, sampled with the same bilinear advection.
    motion = torch.tensor(velocity).view(1, 2, 1, 1).expand(3, 2, 48, 48)
    later = advect(field[:, None], motion, num_frames=2)[:, :, 0]
    frames = torch.cat([field[:, None], later], dim=1)[..., None]  # (3, 3, 48, 48, 1)
    model = MotionExtrapolator(motion_frames=3, num_iterations=150)
    estimated = model.estimate_motion(frames)
    interior = estimated[:, :, 12:-12, 12:-12]
    assert (interior - torch.tensor(velocity).view(1, 2, 1, 1)).abs().mean() < 0.15
    forecast = model(frames, num_frames=2)
    expected = advect(later[:, -1:], motion, num_frames=2).permute(0, 1, 3, 4, 2)
    error = (forecast - expected)[:, :, 12:-12, 12:-12].abs().mean()
    persistence = (frames[:, -1:] - expected)[:, :, 12:-12, 12:-12].abs().mean()
    assert error < 0.2 * persistence


def test_each_sample_is_fitted_on_its_own():
    generator = torch.Generator().manual_seed(2)
    frames = torch.rand(3, 3, 24, 24, 2, generator=generator)
    model = MotionExtrapolator()
    together = model(frames, num_frames=2)
    alone = torch.cat([model(frames[i : i + 1], num_frames=2) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert together.shape == (3, 2, 24, 24, 2) and together.min() >= 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(motion_frames=1), "motion_frames must be an int >= 2"),
        (dict(grid_spacing=0), "grid_spacing must be an int >= 1"),
        (dict(num_iterations=-1), "num_iterations must be an int >= 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a positive number"),
        (dict(smoothness=-1.0), "smoothness must be a number >= 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MotionExtrapolator(**kwargs)


def test_bad_frames_are_refused(extrapolating_pipeline):
    model = MotionExtrapolator(motion_frames=3)
    with pytest.raises(ValueError, match="needs 3 frames"):
        model(torch.rand(1, 2, 8, 8, 1), num_frames=1)
    # Values are checked once, by the caller (the pipeline or the data set), not by the extrapolator.
    with pytest.raises(ValueError, match="context contains NaN"):
        extrapolating_pipeline(torch.full((1, 3, 32, 32, 1), float("nan")), num_inference_steps=1)
    with pytest.raises(ValueError, match="num_frames must be a positive int"):
        model(torch.rand(1, 3, 8, 8, 1), num_frames=0)


@pytest.fixture(scope="module")
def extrapolating_pipeline() -> PreDiffPipeline:
    """The tiny extrapolating pipeline with DDIM, latents scaled by 0.5 and a livelier final projection."""
    from tests.conftest import tiny_extrapolating_pipeline

    pipe = tiny_extrapolating_pipeline("ddim")
    pipe.vae.register_to_config(scaling_factor=0.5)
    torch.nn.init.normal_(pipe.unet.final_proj.weight, std=0.5)
    return pipe


def test_pipeline_with_extrapolator_conditions_on_context_and_extrapolation(extrapolating_pipeline):
    pipe = extrapolating_pipeline
    assert pipe.context_shape == (3, 32, 32, 1) and pipe.forecast_shape == (2, 32, 32, 1)
    context = torch.rand(2, 3, 32, 32, 1, generator=torch.Generator().manual_seed(3)) * 255
    seen = []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: seen.append(args[2].shape))
    try:
        frames = pipe(context, num_inference_steps=2, num_ensemble_members=2).frames
    finally:
        hook.remove()
    assert seen[0] == (4, 5, 8, 8, 4)
    assert frames.shape == (2, 2, 2, 32, 32, 1) and frames.min() >= 0 and frames.max() <= 255


def test_zero_residual_decodes_to_the_extrapolation_itself(extrapolating_pipeline):
    pipe = extrapolating_pipeline
    context = torch.rand(1, 3, 32, 32, 1, generator=torch.Generator().manual_seed(4))
    extrapolation = pipe.prepare_extrapolation(context)
    zeros = torch.zeros_like(extrapolation.latents)
    advected = pipe.extrapolator(context, 2)
    torch.testing.assert_close(extrapolation.frames, advected)  # the [0, 1] scale
    torch.testing.assert_close(pipe.decode_forecast(zeros, extrapolation), advected * 255)  # physical units
    # Latents are scaled by the autoencoder's scaling_factor (0.5 here) on encoding and unscaled on decoding.
    unscaled = pipe.encode_frames(context) / 0.5
    from prediff.models.autoencoder import encode_sequence

    torch.testing.assert_close(unscaled, encode_sequence(pipe.vae, context, sample_posterior=False))


def test_pipeline_with_extrapolator_saves_and_loads(extrapolating_pipeline, tmp_path):
    pipe = extrapolating_pipeline
    context = np.random.default_rng(5).random((1, 3, 32, 32, 1)).astype(np.float32) * 255
    reference = pipe(context, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    pipe.save_pretrained(tmp_path)
    assert sorted(p.name for p in (tmp_path / "extrapolator").iterdir()) == ["config.json"]
    loaded = PreDiffPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.extrapolator, MotionExtrapolator) and loaded.scaling_factor == 0.5
    frames = loaded(context, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(frames, reference, atol=1e-4)


def test_unet_without_room_for_the_extrapolation_is_refused():
    base = PreDiffPipeline.from_preset("prediff-tiny")
    unet = EarthformerUNetModel(
        input_shape=(2, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1), num_heads=2
    )
    with pytest.raises(ValueError, match="input_shape\\[0\\] must exceed target_shape\\[0\\]"):
        PreDiffPipeline(base.vae, unet, base.scheduler, extrapolator=MotionExtrapolator())
