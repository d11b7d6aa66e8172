"""Building blocks around cuboid attention: FFN, stacked attention blocks, patch merging, upsampling, and
learned position embeddings. Names and shapes match the official Earthformer checkpoints."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CuboidCrossAttentionLayer, CuboidSelfAttentionLayer
from .decomposition import Size3, Strategy, pad_thw, padding_amounts
from .patterns import cross_pattern, self_pattern

_ACTIVATIONS = {
    "leaky": lambda: nn.LeakyReLU(0.1),
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """Activation by its name in the official configs ("leaky" is LeakyReLU(0.1))."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class PositionwiseFFN(nn.Module):
    """Pre-norm feed-forward with residual: ``x + drop(W2 drop(act(W1 LN(x))))``, optionally gated."""

    def __init__(
        self, units: int, hidden_size: int, dropout: float = 0.0, activation: str = "gelu", gated_proj: bool = False
    ):
        super().__init__()
        self.gated_proj = gated_proj
        self.ffn_1 = nn.Linear(units, hidden_size)
        if gated_proj:
            self.ffn_1_gate = nn.Linear(units, hidden_size)
        self.activation = get_activation(activation)
        self.activation_dropout = nn.Dropout(dropout)
        self.ffn_2 = nn.Linear(hidden_size, units)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer_norm(x)
        if self.gated_proj:
            h = self.activation(self.ffn_1_gate(h)) * self.ffn_1(h)
        else:
            h = self.activation(self.ffn_1(h))
        return x + self.dropout(self.ffn_2(self.activation_dropout(h)))


def _ffn_list(dim: int, count: int, dropout: float, activation: str, gated: bool) -> nn.ModuleList:
    """``count`` position-wise FFNs of width ``dim`` with the official 4x hidden width."""
    return nn.ModuleList(PositionwiseFFN(dim, 4 * dim, dropout, activation, gated) for _ in range(count))


class StackCuboidSelfAttentionBlock(nn.Module):
    """One self-attention layer per entry of a pattern, each followed by an FFN when ``use_inter_ffn``.

    ``forward(x (B,T,H,W,C), global_vectors (B,P,gC) or None) -> (x, global_vectors)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_cuboid_size: list[Size3],
        block_shift_size: list[Size3],
        block_strategy: list[Strategy],
        padding_type: str = "ignore",
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ffn_drop: float = 0.0,
        activation: str = "leaky",
        gated_ffn: bool = False,
        use_inter_ffn: bool = True,
        use_global_vector: bool = False,
        use_global_vector_ffn: bool = True,
        use_global_self_attn: bool = False,
        separate_global_qkv: bool = False,
        global_dim_ratio: int = 1,
        use_relative_pos: bool = True,
        use_final_proj: bool = True,
    ):
        super().__init__()
        if not (len(block_cuboid_size) == len(block_shift_size) == len(block_strategy)) or not block_cuboid_size:
            raise ValueError(
                f"a block needs as many cuboid sizes ({len(block_cuboid_size)}), shifts ({len(block_shift_size)}) "
                f"and strategies ({len(block_strategy)}) as attention layers, and at least one"
            )
        self.use_inter_ffn = use_inter_ffn
        self.use_global_vector = use_global_vector
        self.use_global_vector_ffn = use_global_vector and use_global_vector_ffn
        num_ffn = len(block_cuboid_size) if use_inter_ffn else 1
        self.ffn_l = _ffn_list(dim, num_ffn, ffn_drop, activation, gated_ffn)
        if self.use_global_vector_ffn:
            self.global_ffn_l = _ffn_list(global_dim_ratio * dim, num_ffn, ffn_drop, activation, gated_ffn)
        self.attn_l = nn.ModuleList(
            CuboidSelfAttentionLayer(
                dim,
                num_heads,
                cuboid_size=cuboid,
                shift_size=shift,
                strategy=strategy,
                padding_type=padding_type,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                attn_drop=attn_drop,
                proj_drop=proj_drop,
                use_final_proj=use_final_proj,
                use_global_vector=use_global_vector,
                use_global_self_attn=use_global_self_attn,
                separate_global_qkv=separate_global_qkv,
                global_dim_ratio=global_dim_ratio,
                use_relative_pos=use_relative_pos,
            )
            for cuboid, shift, strategy in zip(block_cuboid_size, block_shift_size, block_strategy)
        )

    @classmethod
    def from_pattern(
        cls, pattern: str, shape: tuple[int, int, int, int], **kwargs: Any
    ) -> StackCuboidSelfAttentionBlock:
        """A block for data of ``shape = (T, H, W, C)`` with the named pattern's per-layer cuboids; ``kwargs`` are
        the other constructor arguments. Every network builds its self-attention blocks this way."""
        cuboids, strategies, shifts = self_pattern(pattern, shape)
        return cls(
            dim=shape[-1], block_cuboid_size=cuboids, block_shift_size=shifts, block_strategy=strategies, **kwargs
        )

    def forward(
        self, x: torch.Tensor, global_vectors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for index, attn in enumerate(self.attn_l):
            x_out, global_out = attn(x, global_vectors)
            x = x + x_out
            if self.use_global_vector:
                global_vectors = global_vectors + global_out
            if self.use_inter_ffn:
                x, global_vectors = self._ffn(index, x, global_vectors)
        if not self.use_inter_ffn:
            x, global_vectors = self._ffn(0, x, global_vectors)
        return x, global_vectors

    def _ffn(self, index, x, global_vectors):
        x = self.ffn_l[index](x)
        if self.use_global_vector_ffn:
            global_vectors = self.global_ffn_l[index](global_vectors)
        return x, global_vectors


class StackCuboidCrossAttentionBlock(nn.Module):
    """One cross-attention layer per entry of a cross pattern, each followed by an FFN when ``use_inter_ffn``.

    ``forward(x (B,T_x,H,W,C), mem (B,T_mem,H,W,C), mem_global_vectors or None) -> x``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_cuboid_hw: list[tuple[int, int]],
        block_shift_hw: list[tuple[int, int]],
        block_strategy: list[Strategy],
        block_n_temporal: list[int],
        cross_last_n_frames: int | None = None,
        padding_type: str = "ignore",
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ffn_drop: float = 0.0,
        activation: str = "leaky",
        gated_ffn: bool = False,
        use_inter_ffn: bool = True,
        max_temporal_relative: int = 50,
        use_global_vector: bool = False,
        separate_global_qkv: bool = False,
        global_dim_ratio: int = 1,
        use_relative_pos: bool = True,
    ):
        super().__init__()
        self.use_inter_ffn = use_inter_ffn
        num_ffn = len(block_cuboid_hw) if use_inter_ffn else 1
        self.ffn_l = _ffn_list(dim, num_ffn, ffn_drop, activation, gated_ffn)
        self.attn_l = nn.ModuleList(
            CuboidCrossAttentionLayer(
                dim,
                num_heads,
                n_temporal=n_temporal,
                cuboid_hw=cuboid_hw,
                shift_hw=shift_hw,
                strategy=strategy,
                padding_type=padding_type,
                cross_last_n_frames=cross_last_n_frames,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                attn_drop=attn_drop,
                proj_drop=proj_drop,
                max_temporal_relative=max_temporal_relative,
                use_global_vector=use_global_vector,
                separate_global_qkv=separate_global_qkv,
                global_dim_ratio=global_dim_ratio,
                use_relative_pos=use_relative_pos,
            )
            for cuboid_hw, shift_hw, strategy, n_temporal in zip(
                block_cuboid_hw, block_shift_hw, block_strategy, block_n_temporal
            )
        )

    @classmethod
    def from_pattern(
        cls, pattern: str, mem_shape: tuple[int, int, int, int], **kwargs: Any
    ) -> StackCuboidCrossAttentionBlock:
        """A block attending to memory of ``mem_shape = (T_mem, H, W, C)`` with the named cross pattern's
        per-layer cuboids; ``kwargs`` are the other constructor arguments. The counterpart of
        :meth:`StackCuboidSelfAttentionBlock.from_pattern`."""
        cuboid_hw, shift_hw, strategies, n_temporal = cross_pattern(pattern, mem_shape)
        return cls(
            dim=mem_shape[-1],
            block_cuboid_hw=cuboid_hw,
            block_shift_hw=shift_hw,
            block_strategy=strategies,
            block_n_temporal=n_temporal,
            **kwargs,
        )

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor, mem_global_vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        for index, attn in enumerate(self.attn_l):
            x = x + attn(x, mem, mem_global_vectors)
            if self.use_inter_ffn:
                x = self.ffn_l[index](x)
        if not self.use_inter_ffn:
            x = self.ffn_l[0](x)
        return x


class PatchMerging3D(nn.Module):
    """Groups each ``(dT, dH, dW)`` block, concatenates its features, LayerNorm, then a bias-free Linear.

    ``(B, T, H, W, C) -> (B, ceil(T/dT), ceil(H/dH), ceil(W/dW), out_dim)``.
    """

    def __init__(
        self, dim: int, out_dim: int | None = None, downsample: Size3 = (1, 2, 2), padding_type: str = "nearest"
    ):
        super().__init__()
        self.downsample = tuple(downsample)
        self.padding_type = padding_type
        out_dim = out_dim or max(downsample) * dim
        merged = downsample[0] * downsample[1] * downsample[2] * dim
        self.reduction = nn.Linear(merged, out_dim, bias=False)
        self.norm = nn.LayerNorm(merged)

    def get_out_shape(self, data_shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        T, H, W, _ = data_shape
        dT, dH, dW = self.downsample
        return (-(-T // dT), -(-H // dH), -(-W // dW), self.reduction.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        dT, dH, dW = self.downsample
        # The official code forgets to pad when only T needs it (and then fails); padding on any axis is the fix.
        x = pad_thw(x, padding_amounts((T, H, W), self.downsample), self.padding_type)
        T, H, W = x.shape[1:4]
        x = x.reshape(B, T // dT, dT, H // dH, dH, W // dW, dW, C).permute(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(B, T // dT, H // dH, W // dW, dT * dH * dW * C)
        return self.reduction(self.norm(x))


class Upsample3DLayer(nn.Module):
    """Per-frame nearest resize to ``target_size[1:]`` then a 2-D convolution: ``(B,T,H,W,C) -> (B,T,H',W',out)``."""

    def __init__(self, dim: int, out_dim: int, target_size: Size3, kernel_size: int = 3):
        super().__init__()
        self.target_size = tuple(target_size)
        self.out_dim = out_dim
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        if T != self.target_size[0]:
            raise ValueError(f"Upsample3DLayer keeps time: got T={T}, expected {self.target_size[0]}")
        x = x.reshape(B * T, H, W, C).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=self.target_size[1:], mode="nearest")
        return self.conv(x).permute(0, 2, 3, 1).reshape(B, *self.target_size, self.out_dim)


class PosEmbed(nn.Module):
    """Learned position embedding added to ``(B, T, H, W, C)``: "t+h+w" (three tables) or "t+hw"."""

    TYPES = ("t+h+w", "t+hw")

    def __init__(self, embed_dim: int, maxT: int, maxH: int, maxW: int, typ: str = "t+h+w"):
        super().__init__()
        if typ not in self.TYPES:
            raise ValueError(f"pos_embed_type must be one of {self.TYPES}, got {typ!r}")
        self.typ = typ
        self.embed_dim = embed_dim
        self.maxW = maxW
        self.T_embed = nn.Embedding(maxT, embed_dim)
        if typ == "t+h+w":
            self.H_embed = nn.Embedding(maxH, embed_dim)
            self.W_embed = nn.Embedding(maxW, embed_dim)
        else:
            self.HW_embed = nn.Embedding(maxH * maxW, embed_dim)
        for embedding in self.children():
            nn.init.trunc_normal_(embedding.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, T, H, W, _ = x.shape
        device = x.device
        t = self.T_embed(torch.arange(T, device=device)).reshape(T, 1, 1, self.embed_dim)
        if self.typ == "t+h+w":
            h = self.H_embed(torch.arange(H, device=device)).reshape(1, H, 1, self.embed_dim)
            w = self.W_embed(torch.arange(W, device=device)).reshape(1, 1, W, self.embed_dim)
            return x + t + h + w
        spatial = torch.arange(H, device=device)[:, None] * self.maxW + torch.arange(W, device=device)
        return x + t + self.HW_embed(spatial)
