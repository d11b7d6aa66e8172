"""Knowledge-control gradients in chunks of rows (`PreDiffPipeline.control_chunk_size`): the same forecast as
all rows at once, the autoencoder's graph held for one chunk only, per-row and per-context targets picked for
each chunk, and controls that are not rowwise left whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prediff.knowledge import AnticipatedIntensityControl, EnergyConservationControl, FunctionControl
from prediff.pipelines import PreDiffPipeline

B, M = 3, 2


@pytest.fixture(scope="module")
def context() -> torch.Tensor:
    return torch.rand(B, 3, 32, 32, 1, generator=torch.Generator().manual_seed(5)) * 120


def _forecast(pipe, context, controls, chunk):
    previous = pipe.control_chunk_size
    pipe.control_chunk_size = chunk
    try:
        generator = torch.Generator().manual_seed(0)
        return pipe(
            context, num_inference_steps=3, num_ensemble_members=M, generator=generator, knowledge_controls=controls
        ).frames
    finally:
        pipe.control_chunk_size = previous


@pytest.mark.parametrize("with_extrapolator", [False, True])
@pytest.mark.parametrize(
    "target",
    [[20.0, 60.0, 100.0], [10.0, 30.0, 50.0, 70.0, 90.0, 110.0]],
    ids=["per-context", "per-row"],
)
def test_chunked_control_gives_the_forecast_of_all_rows_at_once(
    pipe, extrapolating_pipe, context, target, with_extrapolator
):
    pipe = extrapolating_pipe if with_extrapolator else pipe
    control = AnticipatedIntensityControl(target=target, method="analytic")
    whole = _forecast(pipe, context, [control], None)
    # 2 frames per row: chunks of 1 and of 2 rows, the last one short. A chunk given another chunk's targets
    # would be steered elsewhere, by tens of VIL units.
    for chunk in (2, 4):
        chunked = _forecast(pipe, context, [control], chunk)
        # Only the autoencoder's batch size differs, which changes float32 rounding (~1e-6 of the range).
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-3)
    if np.ndim(target) and len(target) == B:
        # One target per context is that target for each of its members.
        per_row = AnticipatedIntensityControl(target=np.repeat(target, M).tolist(), method="analytic")
        np.testing.assert_array_equal(_forecast(pipe, context, [per_row], 2), _forecast(pipe, context, [control], 2))


def test_a_chunk_of_all_rows_is_bit_for_bit_the_unchunked_forecast(pipe, context):
    control = AnticipatedIntensityControl(target=[20.0, 60.0, 100.0], method="analytic")
    whole = _forecast(pipe, context, [control], None)
    np.testing.assert_array_equal(_forecast(pipe, context, [control], B * M * 2), whole)


def test_the_autoencoder_graph_is_held_for_one_chunk(pipe, context):
    """Every differentiated decoding (grad enabled) sees at most `control_chunk_size` frames."""
    frames = []

    def record(module, args, output):
        if torch.is_grad_enabled():
            frames.append(args[0].shape[0])

    hook = pipe.vae.decoder.register_forward_hook(record)
    try:
        # One Gauss-Newton step at the last denoising step too, so that every step decodes once per chunk.
        control = AnticipatedIntensityControl(target=50.0, method="analytic", final_iterations=1)
        _forecast(pipe, context, [control], 4)
        chunked = list(frames)
        frames.clear()
        _forecast(pipe, context, [control], None)
    finally:
        hook.remove()
    assert max(chunked) == 4 and len(chunked) == 3 * 3  # 3 steps x (12 frames / 4)
    assert frames == [B * M * 2] * 3


def test_learned_controls_are_chunked_too(pipe_dir, context):
    # In float64: in float32 the knowledge network's gradient steps amplify the rounding of a smaller batch to
    # 0.007 of forecasts up to 581 with one torch thread (as under pytest-xdist), which is not what is tested here.
    pipe = PreDiffPipeline.from_pretrained(pipe_dir, torch_dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    control = EnergyConservationControl(initial_energy=[0.1, 0.2, 0.3], model=pipe.knowledge_model)
    whole = _forecast(pipe, context, [control], None)
    np.testing.assert_allclose(_forecast(pipe, context, [control], 2), whole, rtol=0, atol=1e-3)


def test_a_function_control_sees_every_row(pipe, context):
    """A FunctionControl may combine rows (it is not rowwise): its function always gets all of them."""
    seen = []

    def spread(frames):
        seen.append(frames.shape[0])
        # Couples the rows: the distance of each row's mean from the mean of all rows.
        means = frames.mean(dim=(1, 2, 3, 4))
        return (means - means.mean()).abs()

    _forecast(pipe, context, [FunctionControl(spread)], 2)
    assert seen and set(seen) == {B * M}


def test_the_denoiser_takes_chunks_of_rows(pipe, context):
    """`unet_chunk_size` rows per denoiser call; a forecast of at most that many rows is unchanged bit for bit."""
    rows = []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    previous = pipe.unet_chunk_size
    try:
        whole = _forecast(pipe, context, None, None)
        pipe.unet_chunk_size = 4
        chunked = _forecast(pipe, context, None, None)
        pipe.unet_chunk_size = B * M
        at_most = _forecast(pipe, context, None, None)
    finally:
        pipe.unet_chunk_size = previous
        hook.remove()
    assert rows == [B * M] * 3 + [4, 2] * 3 + [B * M] * 3
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(at_most, whole)


def test_auto_chunk_sizes_follow_the_device(pipe, context):
    """`"auto"` (the default) resolves to the CPU's chunk sizes here; integers and None are kept as given, and a
    forecast of more rows than the CPU chunk runs in calls of that many rows."""
    from prediff.pipelines.pipeline_prediff import AUTO_CHUNK_SIZES

    assert pipe.unet_chunk_size == pipe.vae_chunk_size == "auto"
    assert pipe.chunk_size("unet") == AUTO_CHUNK_SIZES["cpu"]["unet"]
    assert pipe.chunk_size("vae") == AUTO_CHUNK_SIZES["cpu"]["vae"]
    rows, frames = [], []
    unet_hook = pipe.unet.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    vae_hook = pipe.vae.decoder.register_forward_hook(lambda module, args, output: frames.append(args[0].shape[0]))
    members = 2 * AUTO_CHUNK_SIZES["cpu"]["unet"] // B + 1
    try:
        pipe(context, num_inference_steps=1, num_ensemble_members=members, output_type="pt")
        pipe.unet_chunk_size, pipe.vae_chunk_size = None, 5
        assert (pipe.chunk_size("unet"), pipe.chunk_size("vae")) == (None, 5)
    finally:
        pipe.unet_chunk_size = pipe.vae_chunk_size = "auto"
        unet_hook.remove()
        vae_hook.remove()
    chunk = AUTO_CHUNK_SIZES["cpu"]["unet"]
    assert rows == [chunk, chunk, B * members - 2 * chunk]
    assert max(frames) <= AUTO_CHUNK_SIZES["cpu"]["vae"]
