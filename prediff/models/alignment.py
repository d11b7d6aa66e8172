"""The knowledge-alignment network U_phi of PreDiff: predicts a statistic of the clean target from a noisy latent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .cuboid.hierarchy import (
    cuboid_block_settings,
    level_shapes,
    patch_merging_layers,
    resolve_block_units,
    self_attention_levels,
)
from .cuboid.initialization import init_cuboid_blocks, init_linear
from .earthformer_unet import embed_timestep, run_time_conditioned_level, time_blocks, time_conditioned_stem
from .modeling_utils import CuboidModelMixin, check_sequence, check_timestep


@dataclass
class KnowledgeAlignmentOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_len, out_channels)`):
            The predicted statistic of each of the last `out_len` frames.
    """

    sample: torch.Tensor


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling of ``(N, C, H, W)`` to ``(N, out_channels)``: the token mean queries all tokens.

    Checkpoint names: ``positional_embedding (C, H*W + 1)``, ``qkv_proj`` and ``c_proj`` (1-D convolutions).
    """

    def __init__(self, num_tokens: int, embed_dim: int, num_heads_channels: int, out_channels: int):
        super().__init__()
        if embed_dim % num_heads_channels != 0:
            raise ValueError(f"embed_dim={embed_dim} must be a multiple of num_heads_channels={num_heads_channels}")
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, num_tokens + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, out_channels, 1)
        self.num_heads = embed_dim // num_heads_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        x = x.reshape(n, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None].to(x.dtype)
        q, k, v = self.qkv_proj(x).chunk(3, dim=1)
        length, ch = x.shape[-1], c // self.num_heads
        # Official scaling: q and k are each multiplied by ch ** -1/4; the softmax runs in float32.
        scale = ch**-0.25
        q = (q * scale).reshape(n * self.num_heads, ch, length)
        k = (k * scale).reshape(n * self.num_heads, ch, length)
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k).float(), dim=-1).to(x.dtype)
        out = torch.einsum("bts,bcs->bct", weight, v.reshape(n * self.num_heads, ch, length)).reshape(n, c, length)
        return self.c_proj(out)[:, :, 0]


class KnowledgeAlignmentModel(CuboidModelMixin):
    r"""
    U_phi of PreDiff's knowledge alignment: a cuboid-attention encoder on the noisy target latent `z_t` that predicts,
    per frame, a statistic of the *clean pixel-space* target (e.g. its mean intensity). Its gradient with respect to
    `z_t` steers sampling toward anticipated values.

    Parameters:
        input_shape (`tuple[int, int, int, int]`): noisy latent shape `(T, h, w, c)`.
        out_channels (`int`, defaults to 1): channels of the predicted statistic per frame.
        out_len (`int`, *optional*): number of last frames read out (default: all `T`).
        base_units (`int`, defaults to 128), block_units, scale_alpha, depth (`(1, 1)`), num_heads (4),
        attn_drop, proj_drop, ffn_drop (0.1), downsample (2), self_pattern ("axial"), ffn_activation ("gelu"),
        gated_ffn, padding_type ("zeros"), pos_embed_type ("t+h+w"), use_relative_pos, use_final_proj,
        time_embed_channels_mult (4), time_embed_dropout (0.0): as in [`EarthformerUNetModel`].
        pool_heads_channels (`int`, defaults to 64): channels per head of the attention-pooling readout.
        attn_linear_init, ffn_linear_init, ffn2_linear_init, attn_proj_linear_init, down_up_linear_init (`str`):
            initialisation, as in [`EarthformerUNetModel`].
    """

    presets = {
        "prediff-sevirlr-avg-intensity": dict(
            input_shape=(6, 16, 16, 64), out_channels=1, base_units=128, depth=(1, 1), num_heads=4
        ),
    }

    @register_to_config
    def __init__(
        self,
        input_shape: tuple[int, int, int, int] = (6, 16, 16, 64),
        out_channels: int = 1,
        out_len: int | None = None,
        base_units: int = 128,
        block_units: list[int] | None = None,
        scale_alpha: float = 1.0,
        depth: tuple[int, ...] = (1, 1),
        num_heads: int = 4,
        attn_drop: float = 0.1,
        proj_drop: float = 0.1,
        ffn_drop: float = 0.1,
        downsample: int = 2,
        self_pattern: str = "axial",
        ffn_activation: str = "gelu",
        gated_ffn: bool = False,
        padding_type: str = "zeros",
        pos_embed_type: str = "t+h+w",
        use_relative_pos: bool = True,
        use_final_proj: bool = True,
        time_embed_channels_mult: int = 4,
        time_embed_dropout: float = 0.0,
        pool_heads_channels: int = 64,
        attn_linear_init: str = "kaiming_linear",
        ffn_linear_init: str = "kaiming_linear",
        ffn2_linear_init: str = "zeros",
        attn_proj_linear_init: str = "zeros",
        down_up_linear_init: str = "kaiming_linear",
    ):
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"input_shape must be (T, h, w, c), got {input_shape}")
        T, h, w, c = input_shape
        out_len = T if out_len is None else out_len
        if not 0 < out_len <= T:
            raise ValueError(f"out_len must be in [1, {T}], got {out_len}")
        num_levels = len(depth)
        downsample_3d = (1, downsample, downsample)
        self.input_shape = input_shape
        self.out_len = out_len
        self.block_units = resolve_block_units(
            block_units, base_units, downsample_3d, scale_alpha, num_levels, "product"
        )
        self.mem_shapes = level_shapes((T, h, w), self.block_units, downsample_3d)
        units = self.block_units[0]

        self.first_proj, self.pos_embed, self.time_embed = time_conditioned_stem(
            c, (T, h, w), units, proj_drop, pos_embed_type, time_embed_channels_mult
        )
        self.downsample_layers = patch_merging_layers(self.mem_shapes, downsample_3d, padding_type)
        self.down_time_embed_blocks = time_blocks(
            self.mem_shapes, units * time_embed_channels_mult, time_embed_dropout
        )
        block_kwargs = dict(**cuboid_block_settings(self.config), use_inter_ffn=True, use_final_proj=use_final_proj)
        self.down_self_blocks = self_attention_levels(
            [self_pattern] * num_levels, self.mem_shapes, depth, **block_kwargs
        )
        top_T, top_h, top_w, top_c = self.mem_shapes[-1]
        self.out = nn.Sequential(
            nn.GroupNorm(32 if top_c % 32 == 0 else top_c, top_c),
            nn.SiLU(),
            AttentionPool2d(top_h * top_w, top_c, pool_heads_channels, out_channels),
        )
        init_cuboid_blocks(
            self, attn=attn_linear_init, ffn=ffn_linear_init, ffn2=ffn2_linear_init, attn_proj=attn_proj_linear_init
        )
        init_linear(self.downsample_layers, down_up_linear_init)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, return_dict: bool = True
    ) -> KnowledgeAlignmentOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, T, h, w, c)`): noisy target latents `z_t`.
            timestep (`torch.Tensor` of shape `(B,)`, or a number): diffusion timesteps.
            return_dict (`bool`, defaults to True): return a [`KnowledgeAlignmentOutput`] instead of a tuple.

        Returns:
            [`KnowledgeAlignmentOutput`] or `tuple`: the statistic, shape `(B, out_len, out_channels)`.
        """
        check_sequence("sample", sample, (None, *self.input_shape))
        batch_size = sample.shape[0]
        timestep = check_timestep(timestep, batch_size, sample.device)
        x = self.pos_embed(self.first_proj(sample))
        t_emb = embed_timestep(self.time_embed, timestep, self.block_units[0], x.dtype)
        for i, blocks in enumerate(self.down_self_blocks):
            if i > 0:
                x = self.downsample_layers[i - 1](x)
            x = run_time_conditioned_level(self, x, t_emb, self.down_time_embed_blocks[i], blocks)
        x = x[:, -self.out_len :]
        T, h, w, c = x.shape[1:]
        frames = x.reshape(batch_size * T, h, w, c).permute(0, 3, 1, 2)
        out = self.out(frames).reshape(batch_size, T, -1)
        if not return_dict:
            return (out,)
        return KnowledgeAlignmentOutput(sample=out)
