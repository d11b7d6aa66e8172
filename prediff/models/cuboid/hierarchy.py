"""The levels of the hierarchical cuboid networks: their widths and shapes, and the modules built per level.

Earthformer, the Earthformer-UNet and the knowledge-alignment network share one structure. Level 0 works on
``(T, H, W)`` with ``block_units[0]`` channels; each further level is reached by a patch merging that divides H and W
by the spatial downsampling factors (rounding up: the merging pads) and changes the width to ``block_units[i]``.
Time is never merged. The functions here compute the levels and build the per-level modules for all three networks,
so a level means the same thing in each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import nn

from .blocks import PatchMerging3D, StackCuboidCrossAttentionBlock, StackCuboidSelfAttentionBlock, Upsample3DLayer
from .decomposition import Size3

Shape4 = tuple[int, int, int, int]
WidthRounding = Literal["factor", "product"]
WIDTH_ROUNDINGS = ("factor", "product")


def level_units(
    base_units: int, downsample: Size3, scale_alpha: float, num_levels: int, rounding: WidthRounding
) -> list[int]:
    """Default channel width of every level: ``base_units * g ** i``, growth ``g = max(downsample) ** scale_alpha``.

    Where ``g ** i`` is not a whole number the networks round at different places, and their published
    configurations and checkpoints were made with their own rule, so it is an explicit argument:

    * ``"factor"``: ``base_units * int(g ** i)``, the growth factor rounded down. Earthformer's rule (it is also
      the rule of the official Earthformer and PreDiff code).
    * ``"product"``: ``int(base_units * g ** i)``, the width rounded down. The rule of this package's
      Earthformer-UNet and knowledge-alignment network.

    Both give the same widths whenever every ``g ** i`` is whole, as with ``scale_alpha=1`` (every preset and
    published configuration). They differ otherwise: ``base_units=64``, ``downsample=2``, ``scale_alpha=0.5``
    gives ``[64, 64, 128]`` by "factor" and ``[64, 90, 128]`` by "product".
    """
    if rounding not in WIDTH_ROUNDINGS:
        raise ValueError(f"rounding must be one of {WIDTH_ROUNDINGS}, got {rounding!r}")
    growth = max(downsample) ** scale_alpha
    if rounding == "factor":
        return [base_units * int(growth**i) for i in range(num_levels)]
    return [int(base_units * growth**i) for i in range(num_levels)]


def resolve_block_units(
    block_units: Sequence[int] | None,
    base_units: int,
    downsample: Size3,
    scale_alpha: float,
    num_levels: int,
    rounding: WidthRounding,
) -> list[int]:
    """The width of every level: ``block_units`` as ints, checked to have one entry per level, or by default
    :func:`level_units` with ``rounding``."""
    if block_units is None:
        return level_units(base_units, downsample, scale_alpha, num_levels, rounding)
    units = [int(u) for u in block_units]
    if len(units) != num_levels:
        raise ValueError(f"block_units {units} must have one entry per level ({num_levels} levels)")
    return units


def level_shapes(thw: tuple[int, int, int], block_units: Sequence[int], downsample: Size3) -> list[Shape4]:
    """``(T, H_i, W_i, block_units[i])`` of every level: level 0 has the ``(T, H, W)`` of ``thw``, each next level
    divides H and W by ``downsample[1:]``, rounding up (what :class:`PatchMerging3D` gives), and keeps T."""
    T, H, W = thw
    shapes = []
    for i, units in enumerate(block_units):
        if i > 0:
            H, W = -(-H // downsample[1]), -(-W // downsample[2])
        shapes.append((T, H, W, units))
    return shapes


def patch_merging_layers(shapes: Sequence[Shape4], downsample: Size3, padding_type: str) -> nn.ModuleList:
    """The patch mergings from each level to the next: ``(B, *shapes[i]) -> (B, *shapes[i + 1])``."""
    return nn.ModuleList(
        PatchMerging3D(shapes[i][-1], shapes[i + 1][-1], downsample, padding_type) for i in range(len(shapes) - 1)
    )


def upsampling_layers(shapes: Sequence[Shape4], kernel_size: int, num_frames: int) -> nn.ModuleList:
    """The upsamplings from each level back to the one below: ``(B, T, H_{i+1}, W_{i+1}, C_{i+1}) ->
    (B, T, H_i, W_i, C_i)`` with ``T = num_frames`` (nearest resize, then a convolution)."""
    return nn.ModuleList(
        Upsample3DLayer(shapes[i + 1][-1], shapes[i][-1], (num_frames, *shapes[i][1:3]), kernel_size)
        for i in range(len(shapes) - 1)
    )


def self_attention_levels(
    patterns: Sequence[str], shapes: Sequence[Shape4], depths: Sequence[int], **block_kwargs: Any
) -> nn.ModuleList:
    """Per level ``i``, an ``nn.ModuleList`` of ``depths[i]`` self-attention blocks for data of ``shapes[i]``, built
    by :meth:`StackCuboidSelfAttentionBlock.from_pattern` from ``patterns[i]`` and ``block_kwargs``."""
    return nn.ModuleList(
        nn.ModuleList(StackCuboidSelfAttentionBlock.from_pattern(pattern, shape, **block_kwargs) for _ in range(depth))
        for pattern, shape, depth in zip(patterns, shapes, depths, strict=True)
    )


def cross_attention_levels(
    patterns: Sequence[str], mem_shapes: Sequence[Shape4], depths: Sequence[int], **block_kwargs: Any
) -> nn.ModuleList:
    """Per level ``i``, an ``nn.ModuleList`` of ``depths[i]`` cross-attention blocks attending to memory of
    ``mem_shapes[i]``, built by :meth:`StackCuboidCrossAttentionBlock.from_pattern`."""
    return nn.ModuleList(
        nn.ModuleList(
            StackCuboidCrossAttentionBlock.from_pattern(pattern, shape, **block_kwargs) for _ in range(depth)
        )
        for pattern, shape, depth in zip(patterns, mem_shapes, depths, strict=True)
    )


def cuboid_block_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of every cuboid block (self and cross) that a network's configuration sets under the same names
    in all three networks: heads, padding, dropouts, FFN activation and gating, relative positions."""
    return dict(
        num_heads=config["num_heads"],
        padding_type=config["padding_type"],
        attn_drop=config["attn_drop"],
        proj_drop=config["proj_drop"],
        ffn_drop=config["ffn_drop"],
        activation=config["ffn_activation"],
        gated_ffn=config["gated_ffn"],
        use_relative_pos=config["use_relative_pos"],
    )
