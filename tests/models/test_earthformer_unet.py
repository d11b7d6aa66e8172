"""EarthformerUNetModel and KnowledgeAlignmentModel: presets, official layout, backends, save/load, compile."""

import pytest
import torch

from prediff import EarthformerUNetModel, KnowledgeAlignmentModel
from prediff.pipelines import PreDiffPipeline
from tests.conftest import official_listing, relative_error

TINY_UNET = dict(
    input_shape=(3, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=32, depth=(1, 1), num_heads=4,
    attn_drop=0.0, proj_drop=0.0, ffn_drop=0.0,
)  # fmt: skip
TINY_ALIGN = dict(input_shape=(2, 8, 8, 4), base_units=32, depth=(1, 1), num_heads=4, out_channels=1)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (the official init zeroes every residual branch)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def unet_inputs(batch=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 2, 8, 8, 4, generator=generator)
    context = torch.randn(batch, 3, 8, 8, 4, generator=generator)
    return sample, torch.tensor([3, 700][:batch]), context


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_unet_preset_is_the_official_model():
    model = EarthformerUNetModel.from_preset("prediff-sevirlr")
    assert sum(p.numel() for p in model.parameters()) == 136_817_538
    listing = official_listing("unet")
    assert shapes(model) == {k: shape for k, (shape, _) in listing.items()}
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == {k for k, (_, kind) in listing.items() if kind == "buffer"}


def test_alignment_preset_is_the_official_model():
    model = KnowledgeAlignmentModel.from_preset("prediff-sevirlr-avg-intensity")
    assert sum(p.numel() for p in model.parameters()) == 8_937_033
    listing = official_listing("alignment")
    assert shapes(model) == {k: shape for k, (shape, _) in listing.items()}


def test_untrained_unet_outputs_exactly_zero():
    model = EarthformerUNetModel(**TINY_UNET).eval()
    sample, timestep, context = unet_inputs()
    assert torch.equal(model(sample, timestep, context).sample, torch.zeros_like(sample))


def test_unet_uses_context_and_timestep():
    model = randomize(EarthformerUNetModel(**TINY_UNET))
    sample, timestep, context = unet_inputs()
    with torch.no_grad():
        base = model(sample, timestep, context).sample
        assert base.shape == sample.shape
        assert not torch.allclose(base, model(sample, timestep + 50, context).sample)
        assert not torch.allclose(base, model(sample, timestep, context + 1).sample)
        # A scalar timestep is broadcast over the batch as documented.
        torch.testing.assert_close(model(sample, 3, context).sample[0], base[0])
    assert model(sample, timestep, context, return_dict=False)[0].shape == sample.shape


@pytest.mark.parametrize("model_name", ["unet", "alignment"])
def test_default_backend_matches_reference_forward_and_gradients(model_name):
    if model_name == "unet":
        model = randomize(EarthformerUNetModel(**TINY_UNET))
        inputs = unet_inputs()
    else:
        model = randomize(KnowledgeAlignmentModel(**TINY_ALIGN))
        inputs = (unet_inputs()[0], torch.tensor([3, 700]))
    results = {}
    for backend in ("reference", "sdpa"):
        model.set_attention_backend(backend)
        assert model.attention_backend == backend
        model.zero_grad()
        out = model(*inputs).sample
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results[backend] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert relative_error(results["sdpa"][0], results["reference"][0]) < 1e-5
    # Some gradients vanish analytically (a conv bias right before GroupNorm is ~1e-7 of the rest): they are
    # compared against a small fraction of the largest gradient instead of their own rounding noise.
    floor = 1e-2 * max(grad.abs().max().item() for grad in results["reference"][1].values())
    for name, grad in results["reference"][1].items():
        assert relative_error(results["sdpa"][1][name], grad, floor) < 1e-5, name


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize(EarthformerUNetModel(**TINY_UNET))
    inputs = unet_inputs()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad()
        model(*inputs).sample.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.gradient_checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = randomize(EarthformerUNetModel(**TINY_UNET))
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "unet" / "config.json").is_file()
    assert not list((tmp_path / "unet").glob("*.bin"))
    loaded = EarthformerUNetModel.from_pretrained(tmp_path / "unet").eval()
    inputs = unet_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*inputs).sample, model(*inputs).sample)
    align = randomize(KnowledgeAlignmentModel(**TINY_ALIGN))
    align.save_pretrained(tmp_path / "align")
    loaded_align = KnowledgeAlignmentModel.from_pretrained(tmp_path / "align").eval()
    sample = unet_inputs()[0]
    with torch.no_grad():
        assert torch.equal(loaded_align(sample, 5).sample, align(sample, 5).sample)


def test_bad_inputs_are_rejected_with_clear_messages():
    model = EarthformerUNetModel(**TINY_UNET)
    sample, timestep, context = unet_inputs()
    with pytest.raises(ValueError, match="sample must have 5 dimensions"):
        model(sample[0], timestep, context)
    with pytest.raises(ValueError, match=r"sample has size 7 on axis 2, expected 8"):
        model(sample[:, :, :7], timestep, context)
    with pytest.raises(ValueError, match=r"context has size 1 on axis 0, expected 2"):
        model(sample, timestep, context[:1])
    with pytest.raises(ValueError, match=r"context has size 4 on axis 1, expected 3"):
        model(sample, timestep, torch.cat([context, context[:, :1]], dim=1))
    # Values are checked once, by the caller (the pipeline: context and initial latents), not by the network:
    # reading them there would wait for the device at every denoising step.
    with torch.no_grad():
        model(sample.clone().fill_(float("nan")), timestep, context)
    pipe = PreDiffPipeline.from_preset("prediff-tiny")
    frames = torch.rand(1, *pipe.context_shape)
    with pytest.raises(ValueError, match="context contains NaN or infinite values"):
        pipe(frames.clone().fill_(float("nan")), num_inference_steps=1)
    with pytest.raises(ValueError, match="latents must be a finite floating-point tensor"):
        pipe(frames, num_inference_steps=1, latents=torch.full((1, *pipe.unet.target_shape), float("nan")))
    with pytest.raises(ValueError, match="timestep must be a scalar or of shape"):
        model(sample, torch.tensor([1, 2, 3]), context)
    with pytest.raises(ValueError, match="floating-point"):
        model(sample.long(), timestep, context)
    with pytest.raises(ValueError, match="unknown preset 'prediff-sevir'"):
        EarthformerUNetModel.from_preset("prediff-sevir")
    with pytest.raises(ValueError, match="unknown self_pattern"):
        EarthformerUNetModel(**{**TINY_UNET, "self_pattern": "diagonal"})
    with pytest.raises(ValueError, match="must share"):
        EarthformerUNetModel(**{**TINY_UNET, "target_shape": (2, 8, 8, 3)})
    with pytest.raises(ValueError, match="attention backend must be one of"):
        model.set_attention_backend("flash")


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    model = randomize(EarthformerUNetModel(**{**TINY_UNET, "depth": (1,)}))
    inputs = unet_inputs(batch=1)
    with torch.no_grad():
        eager = model(*inputs).sample
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(*inputs).sample, eager, rtol=1e-4, atol=1e-5)
