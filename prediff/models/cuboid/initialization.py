"""Weight initialisation of the official Earthformer / PreDiff networks, by meaning rather than mode number.

The official configs name modes "0", "1", "2" whose meaning differs between the two code bases (a "0" conv is
Kaiming in Earthformer and PyTorch's default in PreDiff); the names below say what happens.
"""

from __future__ import annotations

from torch import nn

LINEAR_INITS = ("kaiming_linear", "kaiming_leaky", "zeros")
CONV_INITS = ("pytorch", "kaiming_leaky", "zeros")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _init_weight_and_bias(m: nn.Module, method: str) -> None:
    """``m.weight`` by ``method`` ("kaiming_linear", "kaiming_leaky" or "zeros"), ``m.bias`` (if any) zero."""
    if method == "kaiming_linear":
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
    elif method == "kaiming_leaky":
        nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
    else:
        nn.init.zeros_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def init_linear(module: nn.Module, method: str = "kaiming_linear") -> None:
    """Every ``nn.Linear`` inside ``module``: fan-in Kaiming for a linear unit, fan-out leaky (0.1), or zeros."""
    if method not in LINEAR_INITS:
        raise ValueError(f"linear init must be one of {LINEAR_INITS}, got {method!r}")
    for m in module.modules():
        if isinstance(m, nn.Linear):
            _init_weight_and_bias(m, method)


def init_conv(module: nn.Module, method: str = "pytorch") -> None:
    """Every convolution inside ``module``: PyTorch's default, fan-out leaky Kaiming (bias 0), or zeros."""
    if method not in CONV_INITS:
        raise ValueError(f"conv init must be one of {CONV_INITS}, got {method!r}")
    for m in module.modules():
        if isinstance(m, _CONVS):
            if method == "pytorch":
                m.reset_parameters()
            else:
                _init_weight_and_bias(m, method)


def init_norms(module: nn.Module) -> None:
    """LayerNorm / GroupNorm weights 1 and biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_cuboid_blocks(
    module: nn.Module,
    attn: str = "kaiming_linear",
    ffn: str = "kaiming_linear",
    ffn2: str | None = None,
    attn_proj: str | None = None,
) -> None:
    """Attention and FFN linears of every cuboid block inside ``module``.

    ``ffn2`` and ``attn_proj`` (PreDiff) initialise the last layer of each residual branch; "zeros" there makes
    every branch output exactly 0 at initialisation. They default to ``ffn`` as in Earthformer.
    """
    from .attention import CuboidAttentionBase
    from .blocks import PositionwiseFFN

    for m in module.modules():
        if isinstance(m, CuboidAttentionBase):
            for name, child in m.named_children():
                if isinstance(child, nn.Linear):
                    init_linear(
                        child, (attn_proj or ffn) if name == "proj" else ffn if name == "global_proj" else attn
                    )
        elif isinstance(m, PositionwiseFFN):
            init_linear(m.ffn_1, ffn)
            if m.gated_proj:
                init_linear(m.ffn_1_gate, ffn)
            init_linear(m.ffn_2, ffn2 or ffn)
    init_norms(module)
