"""EarthformerPipeline: physical units in and out, save/load, model card, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prediff.models import EarthformerModel
from prediff.pipelines import EarthformerPipeline, EarthformerPipelineOutput


@pytest.fixture(scope="module")
def pipe() -> EarthformerPipeline:
    torch.manual_seed(0)
    model = EarthformerModel.from_preset("earthformer-nbody").eval()
    # The official init zeroes some output layers; random weights everywhere make the round trip meaningful.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return EarthformerPipeline(model, value_range=(0.0, 255.0))


@pytest.fixture(scope="module")
def context(pipe) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((1, *pipe.context_shape)) * 255).astype(np.float32)


def test_forecast_is_the_model_in_physical_units(pipe, context):
    out = pipe(context)
    assert isinstance(out, EarthformerPipelineOutput)
    assert out.frames.shape == (1, *pipe.forecast_shape)
    with torch.no_grad():
        reference = pipe.model(torch.from_numpy(context) / 255.0).sample * 255.0
    np.testing.assert_allclose(out.frames, reference.numpy(), rtol=1e-5, atol=1e-3)
    pt = pipe(torch.from_numpy(context), output_type="pt", return_dict=False)[0]
    assert isinstance(pt, torch.Tensor)


def test_save_load_and_card(pipe, context, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert not list(tmp_path.rglob("*.bin"))
    card = (tmp_path / "README.md").read_text()
    assert f"(B, {', '.join(map(str, pipe.context_shape))})" in card and "(x - 0) / (255 - 0)" in card
    loaded = EarthformerPipeline.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded(context).frames, pipe(context).frames)


def test_bad_inputs(pipe, context):
    with pytest.raises(ValueError, match="context must have shape"):
        pipe(context[:, :-1])
    bad = context.copy()
    bad[0, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        pipe(bad)
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe(context, output_type="latent")
    with pytest.raises(ValueError, match="model must be an EarthformerModel"):
        EarthformerPipeline(torch.nn.Linear(2, 2))
