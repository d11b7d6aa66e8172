"""`max_intensity_growth`: every member capped relative to its own context's last frame (all of it, or the
neighbourhood of `intensity_cap_radius_km`), nothing else changed, recorded in the saved pipeline, stepping aside
for knowledge controls, and refused when meaningless."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prediff.knowledge import AnticipatedIntensityControl
from prediff.pipelines import PreDiffPipeline
from prediff.pipelines.intensity_cap import intensity_cap

KWARGS = dict(num_inference_steps=3, num_ensemble_members=3)


def generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.fixture(scope="module")
def pipe() -> PreDiffPipeline:
    torch.manual_seed(0)
    pipe = PreDiffPipeline.from_preset("prediff-tiny", scheduler="ddim")
    # Random output weights: the untrained forecast then spans the whole range, above any cap tested here.
    torch.nn.init.normal_(pipe.unet.final_proj.weight, std=0.5)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def context() -> np.ndarray:
    rng = np.random.default_rng(1)
    context = (rng.random((2, 3, 32, 32, 1)) * 255).astype(np.float32)
    # Two contexts with different last-frame maxima: each row must get its own context's cap.
    context[0, -1] *= 0.2
    context[1, -1] *= 0.5
    return context


def forecast(
    pipe: PreDiffPipeline, context: np.ndarray, growth: float | None, radius_km: float | None = None, **kwargs
) -> np.ndarray:
    pipe.max_intensity_growth = growth
    pipe.register_to_config(pixel_size_km=2.0)
    pipe.intensity_cap_radius_km = radius_km
    try:
        return pipe(context, generator=generators(6), **KWARGS, **kwargs).frames
    finally:
        pipe.max_intensity_growth = None
        pipe.intensity_cap_radius_km = None
        pipe.register_to_config(pixel_size_km=None)


def reference_cap(last_frame: np.ndarray, growth: float, radius_px: int | None) -> np.ndarray:
    """`(B, H, W)`: growth x the maximum over channels and the square of side 2r + 1 around each pixel, NaN
    ignored, by plain loops."""
    B, H, W, _ = last_frame.shape
    peak = np.where(np.isnan(last_frame), -np.inf, last_frame).max(axis=-1)
    cap = np.empty((B, H, W), dtype=np.float64)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if radius_px is None:
                    cap[b, y, x] = peak[b].max()
                else:
                    r = radius_px
                    cap[b, y, x] = peak[b, max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].max()
    return cap * growth


@pytest.mark.parametrize("radius_px", [None, 0, 1, 3, 40])
def test_the_cap_matches_a_plain_neighbourhood_maximum(radius_px):
    rng = np.random.default_rng(radius_px or 7)
    last_frame = rng.gamma(0.5, 4.0, (2, 13, 17, 2)).astype(np.float32)
    last_frame[0, :3, :4] = np.nan  # outside the domain: no part of any cap
    last_frame[1, 5:, :] = np.nan
    cap = intensity_cap(torch.from_numpy(last_frame), 1.5, radius_px).numpy()
    np.testing.assert_allclose(cap, reference_cap(last_frame, 1.5, radius_px), rtol=1e-6)


@pytest.mark.parametrize("growth", [1.0, 1.5])
def test_members_are_capped_per_context_and_unchanged_below_the_cap(pipe, context, growth):
    free = forecast(pipe, context, None)
    capped = forecast(pipe, context, growth)
    caps = context[:, -1].max(axis=(1, 2, 3)) * growth
    for row, cap in enumerate(caps):
        assert (free[row] > cap).any(), "the test needs forecasts above the cap"
        np.testing.assert_array_equal(capped[row], np.minimum(free[row], cap))
    # The contexts' caps differ, so a cap shared by the batch would fail one of the rows above.
    assert caps[0] < caps[1]


def test_a_radius_caps_each_pixel_by_its_neighbourhood(pipe, context):
    # A storm in one corner: with a radius of 8 km (4 pixels of 2 km) the far corner is capped by its own dry
    # neighbourhood, not by the storm.
    context = context.copy()
    context[:, -1] = 1.0
    context[:, -1, :6, :6] = 200.0
    free = forecast(pipe, context, None)
    capped = forecast(pipe, context, 1.0, radius_km=8.0)
    cap = reference_cap(context[:, -1], 1.0, 4)
    assert cap[0, -1, -1] == 1.0 and cap[0, 0, 0] == 200.0
    assert (free[:, :, :, 20:, 20:] > 1.0).any(), "the test needs forecasts above the far corner's cap"
    np.testing.assert_allclose(capped, np.minimum(free, cap[:, None, None, :, :, None]), rtol=1e-6)


def test_knowledge_controls_are_not_capped(pipe, context):
    control = AnticipatedIntensityControl(target=200.0, method="analytic")
    free = forecast(pipe, context, None, knowledge_controls=[control])
    capped = forecast(pipe, context, 1.0, knowledge_controls=[control])
    np.testing.assert_array_equal(capped, free)


def test_recorded_in_the_saved_pipeline_and_absent_in_old_configs(pipe, tmp_path):
    pipe.max_intensity_growth = 1.25
    try:
        pipe.save_pretrained(tmp_path / "capped")
    finally:
        pipe.max_intensity_growth = None
    index = json.loads((tmp_path / "capped" / "model_index.json").read_text())
    assert index["max_intensity_growth"] == 1.25
    assert PreDiffPipeline.from_pretrained(tmp_path / "capped").max_intensity_growth == 1.25
    # A folder saved before the setting existed loads without a cap.
    del index["max_intensity_growth"]
    (tmp_path / "capped" / "model_index.json").write_text(json.dumps(index))
    assert PreDiffPipeline.from_pretrained(tmp_path / "capped").max_intensity_growth is None


def test_the_radius_is_recorded_and_needs_the_grid(pipe, tmp_path):
    with pytest.raises(ValueError, match="intensity_cap_radius_km needs the pipeline's pixel_size_km"):
        pipe.intensity_cap_radius_km = 32.0
    pipe.register_to_config(pixel_size_km=2.0)
    try:
        for bad in (0.0, -3.0, float("nan"), True, "32"):
            with pytest.raises(ValueError, match="intensity_cap_radius_km must be None or a positive number"):
                pipe.intensity_cap_radius_km = bad
        pipe.max_intensity_growth = 1.0
        pipe.intensity_cap_radius_km = 32.0
        pipe.save_pretrained(tmp_path / "local")
    finally:
        pipe.max_intensity_growth = None
        pipe.intensity_cap_radius_km = None
        pipe.register_to_config(pixel_size_km=None)
    loaded = PreDiffPipeline.from_pretrained(tmp_path / "local")
    assert loaded.intensity_cap_radius_km == 32.0 and loaded.max_intensity_growth == 1.0
    assert "within 32 km" in (tmp_path / "local" / "README.md").read_text()


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), True, "2"])
def test_meaningless_caps_are_refused(pipe, bad):
    with pytest.raises(ValueError, match="max_intensity_growth"):
        pipe.max_intensity_growth = bad
    assert pipe.max_intensity_growth is None
