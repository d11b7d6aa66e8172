"""EarthformerModel: presets and the official layout, forward variants, backends, checkpointing, save/load, compile."""

import math

import pytest
import torch

from prediff.models.earthformer import EarthformerModel, EarthformerModelOutput
from prediff.pipelines import EarthformerPipeline
from tests.conftest import official_listing, relative_error

DROPOUT_FREE = dict(attn_drop=0.0, proj_drop=0.0, ffn_drop=0.0)
# "conv" initial encoder, no global vectors: (3, 8, 8) -> (3, 4, 4, 16) -> (3, 2, 2, 32).
TINY_CONV = dict(
    input_shape=(3, 8, 8, 2), target_shape=(2, 8, 8, 1), base_units=16, num_heads=2,
    initial_downsample_type="conv", initial_downsample_scale=2, **DROPOUT_FREE,
)  # fmt: skip
# "stack_conv" initial encoder with global vectors everywhere:
# (3, 12, 12) -> (3, 6, 6, 8) -> (3, 3, 3, 16) -> (3, 2, 2, 32).
TINY_GLOBAL = dict(
    input_shape=(3, 12, 12, 1), target_shape=(2, 12, 12, 1), base_units=16, num_heads=2,
    initial_downsample_type="stack_conv", initial_downsample_stack_conv_num_layers=2,
    initial_downsample_stack_conv_dim_list=(8, 16), initial_downsample_stack_conv_downscale_list=(2, 2),
    initial_downsample_stack_conv_num_conv_list=(1, 2), num_global_vectors=2, separate_global_qkv=True,
    use_global_self_attn=True, use_dec_self_global=True, use_dec_cross_global=True, use_global_vector_ffn=True,
    **DROPOUT_FREE,
)  # fmt: skip


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Larger random weights than the initialisation, so every path visibly contributes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def context_for(config: dict, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *config["input_shape"], generator=generator)


@pytest.mark.parametrize(
    "name, count",
    [("earthformer-sevir", 8_659_677), ("earthformer-nbody", 6_702_109), ("earthformer-enso", 1_394_325)],
)
def test_preset_parameter_counts(name, count):
    model = EarthformerModel.from_preset(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_sevir_preset_has_the_official_state_dict_layout():
    model = EarthformerModel.from_preset("earthformer-sevir")
    listing = official_listing("earthformer")
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: shape for k, (shape, _) in listing.items()}
    params = {name for name, _ in model.named_parameters()}
    buffers = {name for name, _ in model.named_buffers()}
    assert params == {k for k, (_, kind) in listing.items() if kind == "param"}
    assert buffers == {k for k, (_, kind) in listing.items() if kind == "buffer"}
    assert all(state[name].dtype == torch.int64 for name in buffers)
    # An official state dict (the same entries) loads strictly.
    assert not model.load_state_dict(dict(state), strict=True).missing_keys


def test_earthformer_initialisation():
    model = EarthformerModel.from_preset("earthformer-sevir")
    # Convolutions: fan-out Kaiming for LeakyReLU(0.1), zero bias.
    conv = model.final_decoder.conv_block_list[0][0]
    expected = math.sqrt(2.0 / (1 + 0.1**2)) / math.sqrt(conv.weight.shape[0] * 9)
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    # Linear layers: fan-in Kaiming for a linear unit.
    for linear in (model.z_proj, model.encoder.blocks[0][0].attn_l[0].qkv, model.encoder.blocks[1][0].ffn_l[0].ffn_1):
        expected = 1 / math.sqrt(linear.weight.shape[1])
        assert abs(linear.weight.std().item() / expected - 1) < 0.05
    norm = model.initial_encoder.conv_block_list[1][1]
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    assert 0.015 < model.init_global_vectors.std().item() < 0.025


def test_published_configuration_runs_at_reduced_size():
    # The SEVIR network (stack_conv [16, 64, 128] / [3, 2, 2], 8 global vectors, separate global qkv) on 48x48.
    model = EarthformerModel.from_preset(
        "earthformer-sevir", input_shape=(4, 48, 48, 1), target_shape=(3, 48, 48, 1)
    ).eval()
    assert [shape[:3] for shape in model.mem_shapes] == [(4, 4, 4), (4, 2, 2)]
    with torch.no_grad():
        out = model(context_for(model.config, batch=1)).sample
    assert out.shape == (1, 3, 48, 48, 1) and torch.isfinite(out).all()


VARIANTS = {
    "conv": TINY_CONV,
    "conv_3d_scale_t+hw": {**TINY_CONV, "initial_downsample_scale": (1, 1, 2), "pos_embed_type": "t+hw"},
    "stack_conv_global": TINY_GLOBAL,
    "global_ratio_2": {**TINY_GLOBAL, "global_dim_ratio": 2, "dec_self_update_global": False},
    "global_shared_qkv": {**TINY_GLOBAL, "separate_global_qkv": False, "use_global_self_attn": False},
    "nearest_interp": {**TINY_CONV, "z_init_method": "nearest_interp", "dec_hierarchical_pos_embed": True},
    "last": {**TINY_CONV, "z_init_method": "last", "dec_use_first_self_attn": True},
    "mean_three_levels": {**TINY_CONV, "z_init_method": "mean", "enc_depth": (1, 1, 1), "dec_depth": (2, 1, 2)},
    "no_inter_ffn_cross_start": {
        **TINY_CONV, "enc_use_inter_ffn": False, "dec_use_inter_ffn": False, "dec_cross_start": 1,
        "dec_cross_last_n_frames": 2, "gated_ffn": True, "ffn_activation": "leaky",
    },
    "ignore_padding_swin": {
        **TINY_CONV, "input_shape": (3, 12, 12, 2), "target_shape": (4, 12, 12, 1), "padding_type": "ignore",
        "self_pattern": "video_swin_2x4", "cross_self_pattern": "axial", "cross_pattern": "cross_2x2_heter",
    },
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shapes_and_dependence_on_context(variant):
    config = VARIANTS[variant]
    model = randomize(EarthformerModel(**config))
    context = context_for(config)
    with torch.no_grad():
        output = model(context)
        assert isinstance(output, EarthformerModelOutput)
        out = output.sample
        assert out.shape == (2, *config["target_shape"]) and torch.isfinite(out).all()
        assert torch.equal(model(context, return_dict=False)[0], out)
        # Samples do not interact: the first sample alone gives the same forecast.
        torch.testing.assert_close(model(context[:1]).sample, out[:1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(context + 0.5).sample, out)


@pytest.mark.parametrize("variant", ["conv", "stack_conv_global", "ignore_padding_swin"])
def test_default_backend_matches_reference_forward_and_gradients(variant):
    model = randomize(EarthformerModel(**VARIANTS[variant]))
    context = context_for(VARIANTS[variant])

    def run(backend: str, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.to(dtype).set_attention_backend(backend)
        assert model.attention_backend == backend
        model.zero_grad()
        out = model(context.to(dtype)).sample
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)).sum().backward()
        return out.detach().double(), {n: p.grad.double() for n, p in model.named_parameters()}

    # The float64 reference is the ground truth. In float32 the output must match it to 1e-5; a gradient summed
    # over every cuboid (relative-position tables: thousands of terms) carries float32 rounding of about 1e-5 in
    # either path, so SDPA's must stay within 3e-5 or three times the plain reference path's own error.
    truth = run("reference", torch.float64)
    results = {backend: run(backend, torch.float32) for backend in ("reference", "sdpa")}
    assert relative_error(results["sdpa"][0], truth[0]) < 1e-5
    for name, grad in truth[1].items():
        reference_error = relative_error(results["reference"][1][name], grad)
        assert relative_error(results["sdpa"][1][name], grad) < max(3e-5, 3 * reference_error), name


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize(EarthformerModel(**TINY_GLOBAL))
    context = context_for(TINY_GLOBAL)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad()
        model(context).sample.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.encoder.gradient_checkpointing and model.decoder.gradient_checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = randomize(EarthformerModel(**TINY_GLOBAL))
    model.save_pretrained(tmp_path / "earthformer")
    assert (tmp_path / "earthformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "earthformer" / "config.json").is_file()
    assert not list((tmp_path / "earthformer").glob("*.bin"))
    loaded = EarthformerModel.from_pretrained(tmp_path / "earthformer").eval()
    context = context_for(TINY_GLOBAL)
    with torch.no_grad():
        assert torch.equal(loaded(context).sample, model(context).sample)


def test_bad_inputs_are_rejected_with_clear_messages():
    model = EarthformerModel(**TINY_CONV)
    context = context_for(TINY_CONV)
    with pytest.raises(ValueError, match="context must have 5 dimensions"):
        model(context[0])
    with pytest.raises(ValueError, match=r"context has size 4 on axis 1, expected 3"):
        model(torch.cat([context, context[:, :1]], dim=1))
    with pytest.raises(ValueError, match=r"context has size 7 on axis 2, expected 8"):
        model(context[:, :, :7])
    with pytest.raises(ValueError, match=r"context has size 9 on axis 3, expected 8"):
        model(torch.cat([context, context[:, :, :, :1]], dim=3))
    with pytest.raises(ValueError, match=r"context has size 1 on axis 4, expected 2"):
        model(context[..., :1])
    # Values are checked once, by the caller (here the pipeline), not by the network: reading them there would
    # wait for the device at every call.
    for bad in (float("nan"), float("inf")):
        broken = context.clone()
        broken[0, 0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="context contains NaN or infinite values"):
            EarthformerPipeline(model)(broken)
        with torch.no_grad():
            model(broken)
    with pytest.raises(ValueError, match="floating-point"):
        model(context.long())
    with pytest.raises(ValueError, match="unknown preset 'earthformer-sevirlr'"):
        EarthformerModel.from_preset("earthformer-sevirlr")
    with pytest.raises(ValueError, match="unknown self_pattern 'diagonal'"):
        EarthformerModel(**{**TINY_CONV, "self_pattern": "diagonal"})
    with pytest.raises(ValueError, match="unknown cross_pattern 'cross_3x3'"):
        EarthformerModel(**{**TINY_CONV, "cross_pattern": "cross_3x3"})
    with pytest.raises(ValueError, match="must share"):
        EarthformerModel(**{**TINY_CONV, "target_shape": (2, 8, 4, 1)})
    with pytest.raises(ValueError, match="z_init_method must be one of"):
        EarthformerModel(**{**TINY_CONV, "z_init_method": "random"})
    with pytest.raises(ValueError, match="initial_downsample_type must be one of"):
        EarthformerModel(**{**TINY_CONV, "initial_downsample_type": "linear"})
    with pytest.raises(ValueError, match="needs separate_global_qkv=True"):
        EarthformerModel(**{**TINY_CONV, "num_global_vectors": 2, "global_dim_ratio": 2})
    with pytest.raises(ValueError, match="one positive entry per level"):
        EarthformerModel(**{**TINY_CONV, "dec_depth": (1, 1, 1)})
    with pytest.raises(ValueError, match="initial_downsample_stack_conv_num_conv_list needs 2 entries"):
        EarthformerModel(**{**TINY_GLOBAL, "initial_downsample_stack_conv_num_conv_list": (2,)})
    with pytest.raises(ValueError, match="attention backend must be one of"):
        model.set_attention_backend("flash")


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    # One level keeps compilation short; the decoder still runs cross, self (with globals) and cross blocks.
    config = {
        **TINY_GLOBAL,
        "enc_depth": (1,),
        "dec_depth": (2,),
        "self_pattern": "full",
        "cross_self_pattern": "full",
    }
    model = randomize(EarthformerModel(**config))
    context = context_for(config, batch=1)
    with torch.no_grad():
        eager = model(context).sample
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(context).sample, eager, rtol=1e-4, atol=1e-5)
