"""Parity with the official Earthformer code: same weights, same outputs.

The official implementation is read from the ``earthformer`` distribution on PyPI (install it with
``pip install --no-deps earthformer==0.2.1``); only its ``cuboid_transformer`` package is loaded, which needs
nothing beyond torch and einops. Without it these tests skip.
"""

import importlib.metadata
import sys
import types

import pytest
import torch

from prediff.models.earthformer import EarthformerModel
from tests.conftest import relative_error
from tests.models.test_earthformer import VARIANTS


@pytest.fixture(scope="module")
def official():
    try:
        distribution = importlib.metadata.distribution("earthformer")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the official earthformer package is not installed")
    # The package's own __init__ pulls in its training stack; a bare package object lets the model file load alone.
    saved = {name: sys.modules.get(name) for name in ("earthformer", "earthformer.cuboid_transformer")}
    package = types.ModuleType("earthformer")
    package.__path__ = [str(distribution.locate_file("earthformer"))]
    sys.modules["earthformer"] = package
    try:
        from earthformer.cuboid_transformer import cuboid_transformer
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return cuboid_transformer


def official_kwargs(cfg: dict) -> dict:
    """Our configuration in the official constructor's vocabulary."""
    levels = len(cfg.get("enc_depth", (1, 1)))

    def per_level(value):
        return [value] * levels

    kwargs = dict(
        input_shape=cfg["input_shape"], target_shape=cfg["target_shape"], base_units=cfg.get("base_units", 128),
        num_heads=cfg.get("num_heads", 4), attn_drop=0.0, proj_drop=0.0, ffn_drop=0.0,
        enc_depth=list(cfg.get("enc_depth", (1, 1))), dec_depth=list(cfg.get("dec_depth", (1, 1))),
        enc_use_inter_ffn=cfg.get("enc_use_inter_ffn", True), dec_use_inter_ffn=cfg.get("dec_use_inter_ffn", True),
        dec_hierarchical_pos_embed=cfg.get("dec_hierarchical_pos_embed", False),
        dec_cross_start=cfg.get("dec_cross_start", 0),
        enc_attn_patterns=per_level(cfg.get("self_pattern", "axial")),
        dec_self_attn_patterns=per_level(cfg.get("cross_self_pattern", "axial")),
        dec_cross_attn_patterns=per_level(cfg.get("cross_pattern", "cross_1x1")),
        dec_cross_last_n_frames=cfg.get("dec_cross_last_n_frames"),
        dec_use_first_self_attn=cfg.get("dec_use_first_self_attn", False),
        num_global_vectors=cfg.get("num_global_vectors", 0), use_dec_self_global=cfg.get("use_dec_self_global", False),
        dec_self_update_global=cfg.get("dec_self_update_global", True),
        use_dec_cross_global=cfg.get("use_dec_cross_global", False),
        use_global_vector_ffn=cfg.get("use_global_vector_ffn", False),
        use_global_self_attn=cfg.get("use_global_self_attn", False),
        separate_global_qkv=cfg.get("separate_global_qkv", False), global_dim_ratio=cfg.get("global_dim_ratio", 1),
        z_init_method=cfg.get("z_init_method", "zeros"),
        initial_downsample_type=cfg.get("initial_downsample_type", "conv"),
        initial_downsample_scale=cfg.get("initial_downsample_scale", 1),
        initial_downsample_conv_layers=cfg.get("initial_downsample_conv_layers", 2),
        final_upsample_conv_layers=cfg.get("final_upsample_conv_layers", 1),
        initial_downsample_stack_conv_num_layers=cfg.get("initial_downsample_stack_conv_num_layers", 1),
        initial_downsample_stack_conv_dim_list=cfg.get("initial_downsample_stack_conv_dim_list"),
        initial_downsample_stack_conv_downscale_list=list(
            cfg.get("initial_downsample_stack_conv_downscale_list", (1,))
        ),
        initial_downsample_stack_conv_num_conv_list=list(cfg.get("initial_downsample_stack_conv_num_conv_list", (2,))),
        ffn_activation=cfg.get("ffn_activation", "gelu"), gated_ffn=cfg.get("gated_ffn", False),
        padding_type=cfg.get("padding_type", "zeros"), pos_embed_type=cfg.get("pos_embed_type", "t+h+w"),
        checkpoint_level=0,
    )  # fmt: skip
    if kwargs["initial_downsample_stack_conv_dim_list"] is not None:
        kwargs["initial_downsample_stack_conv_dim_list"] = list(kwargs["initial_downsample_stack_conv_dim_list"])
    return kwargs


NO_DROPOUT = {"attn_drop": 0.0, "proj_drop": 0.0, "ffn_drop": 0.0}
CASES = {
    **VARIANTS,
    "sevir_48": {**EarthformerModel.presets["earthformer-sevir"], **NO_DROPOUT,
                 "input_shape": (4, 48, 48, 1), "target_shape": (3, 48, 48, 1)},
    "enso": {**EarthformerModel.presets["earthformer-enso"], **NO_DROPOUT},
    "nbody_16": {**EarthformerModel.presets["earthformer-nbody"], **NO_DROPOUT, "enc_depth": (2, 2),
                 "dec_depth": (2, 2), "input_shape": (4, 16, 16, 1), "target_shape": (5, 16, 16, 1)},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_weights_give_the_official_outputs(official, case):
    cfg = CASES[case]
    torch.manual_seed(0)
    theirs = official.CuboidTransformerModel(**official_kwargs(cfg)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for value in theirs.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator) * 0.2)
    ours = EarthformerModel(**cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    context = torch.randn(2, *cfg["input_shape"], generator=generator)
    with torch.no_grad():
        expected = theirs(context)
        ours.set_attention_backend("reference")
        assert relative_error(ours(context).sample, expected) < 1e-6
        ours.set_attention_backend("sdpa")
        assert relative_error(ours(context).sample, expected) < 1e-5
