"""`max_intensity_growth`: every member capped relative to its own context's last frame, nothing else changed,
recorded in the saved pipeline, stepping aside for knowledge controls, and refused when meaningless."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prediff.knowledge import AnticipatedIntensityControl
from prediff.pipelines import PreDiffPipeline

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


def forecast(pipe: PreDiffPipeline, context: np.ndarray, growth: float | None, **kwargs) -> np.ndarray:
    pipe.max_intensity_growth = growth
    try:
        return pipe(context, generator=generators(6), **KWARGS, **kwargs).frames
    finally:
        pipe.max_intensity_growth = None


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


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), True, "2"])
def test_meaningless_caps_are_refused(pipe, bad):
    with pytest.raises(ValueError, match="max_intensity_growth"):
        pipe.max_intensity_growth = bad
    assert pipe.max_intensity_growth is None
