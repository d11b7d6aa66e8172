"""The cuboid-attention toolkit shared by every Earthformer network."""

from .attention import ATTENTION_BACKENDS, CuboidCrossAttentionLayer, CuboidSelfAttentionLayer, masked_softmax
from .blocks import (
    PatchMerging3D,
    PosEmbed,
    PositionwiseFFN,
    StackCuboidCrossAttentionBlock,
    StackCuboidSelfAttentionBlock,
    Upsample3DLayer,
    get_activation,
)
from .decomposition import cuboid_reorder, cuboid_reorder_reverse
from .patterns import CROSS_PATTERNS, SELF_PATTERNS, cross_pattern, self_pattern

__all__ = [
    "ATTENTION_BACKENDS",
    "CROSS_PATTERNS",
    "SELF_PATTERNS",
    "CuboidCrossAttentionLayer",
    "CuboidSelfAttentionLayer",
    "PatchMerging3D",
    "PosEmbed",
    "PositionwiseFFN",
    "StackCuboidCrossAttentionBlock",
    "StackCuboidSelfAttentionBlock",
    "Upsample3DLayer",
    "cross_pattern",
    "cuboid_reorder",
    "cuboid_reorder_reverse",
    "get_activation",
    "masked_softmax",
    "self_pattern",
]
