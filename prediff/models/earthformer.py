"""Earthformer: the deterministic hierarchical encoder-decoder forecaster (``CuboidTransformerModel`` officially).

A context sequence ``(B, T_in, H, W, C_in)`` is downsampled frame by frame (convolutions + patch merging), encoded by
a hierarchy of cuboid self-attention blocks (optionally exchanging information through global vectors), and decoded
from a learned initial query through [cross-attention to the encoder memory, self-attention] levels, top-down with
upsampling; a final decoder mirrors the initial encoder and a linear layer gives ``(B, T_out, H, W, C_out)``.
Module names are those of the official code, so its checkpoints load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .cuboid.blocks import PatchMerging3D, PosEmbed, Upsample3DLayer, get_activation
from .cuboid.hierarchy import (
    Shape4,
    cross_attention_levels,
    cuboid_block_settings,
    level_shapes,
    patch_merging_layers,
    resolve_block_units,
    self_attention_levels,
    upsampling_layers,
)
from .cuboid.initialization import init_conv, init_cuboid_blocks, init_linear, init_norms
from .cuboid.patterns import check_pattern_name
from .modeling_utils import CuboidModelMixin, GradientCheckpointingMixin, check_sequence

Z_INIT_METHODS = ("zeros", "nearest_interp", "last", "mean")
INITIAL_DOWNSAMPLE_TYPES = ("conv", "stack_conv")


@dataclass
class EarthformerModelOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, T_out, H, W, C_out)`):
            The forecast, in the units of the training targets.
    """

    sample: torch.Tensor


def _framewise(conv_block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D convolution stack to every frame: ``(B, T, H, W, C) -> (B, T, H, W, C')``."""
    B, T, H, W, C = x.shape
    x = conv_block(x.reshape(B * T, H, W, C).permute(0, 3, 1, 2))
    return x.permute(0, 2, 3, 1).reshape(B, T, H, W, -1)


def _conv_stack(in_dim: int, out_dim: int, num_layers: int, num_groups: int, activation: str) -> nn.Sequential:
    """``num_layers`` x [Conv2d 3x3, GroupNorm, activation]; the first maps ``in_dim`` to ``out_dim``."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers.append(nn.Conv2d(in_dim if i == 0 else out_dim, out_dim, kernel_size=3, padding=1))
        layers.append(nn.GroupNorm(num_groups, out_dim))
        layers.append(get_activation(activation))
    return nn.Sequential(*layers)


def _downsample_3d(scale: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """An int ``s`` means ``(1, s, s)``, a pair ``(sH, sW)`` means ``(1, sH, sW)``; a triple is taken as is."""
    if isinstance(scale, int):
        scale = (1, scale, scale)
    scale = tuple(int(s) for s in scale)
    if len(scale) == 2:
        scale = (1, *scale)
    if len(scale) != 3 or min(scale) < 1:
        raise ValueError(f"{name} must be a positive int, (sH, sW) or (sT, sH, sW), got {scale}")
    return scale


class InitialConvEncoder(nn.Module):
    """``initial_downsample_type="conv"``: per frame ``num_conv_layers`` x [Conv2d 3x3 + GroupNorm(16) + act],
    then one patch merging by ``downsample``: ``(B, T, H, W, C_in) -> (B, T/sT, H/sH, W/sW, out_dim)``."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        downsample: tuple[int, int, int],
        num_conv_layers: int = 2,
        activation: str = "leaky",
        padding_type: str = "nearest",
    ):
        super().__init__()
        self.num_conv_layers = num_conv_layers
        self.conv_block = _conv_stack(dim, out_dim, num_conv_layers, 16, activation)
        # Without convolutions the patch merging sees the raw channels.
        merge_dim = out_dim if num_conv_layers > 0 else dim
        self.patch_merge = PatchMerging3D(merge_dim, out_dim, downsample, padding_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_conv_layers > 0:
            x = _framewise(self.conv_block, x)
        return self.patch_merge(x)


class FinalConvDecoder(nn.Module):
    """Pair of :class:`InitialConvEncoder`: nearest upsampling to ``target_thw`` + Conv2d, then
    ``num_conv_layers`` x [Conv2d + GroupNorm(16) + act]; channels stay ``dim``."""

    def __init__(
        self, target_thw: tuple[int, int, int], dim: int, num_conv_layers: int = 2, activation: str = "leaky"
    ):
        super().__init__()
        self.num_conv_layers = num_conv_layers
        self.conv_block = _conv_stack(dim, dim, num_conv_layers, 16, activation)
        self.upsample = Upsample3DLayer(dim, dim, target_thw, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        if self.num_conv_layers > 0:
            x = _framewise(self.conv_block, x)
        return x


class InitialStackConvEncoder(nn.Module):
    """``initial_downsample_type="stack_conv"``: for every stage ``i``, ``num_conv_list[i]`` x [Conv2d 3x3 +
    GroupNorm(max(1, dim_i // 4)) + act] then patch merging ``(1, s_i, s_i)`` at width ``dim_list[i]``."""

    def __init__(
        self,
        in_dim: int,
        dim_list: Sequence[int],
        downscale_list: Sequence[int],
        num_conv_list: Sequence[int],
        activation: str = "leaky",
        padding_type: str = "nearest",
    ):
        super().__init__()
        self.num_conv_list = list(num_conv_list)
        self.conv_block_list = nn.ModuleList()
        self.patch_merge_list = nn.ModuleList()
        for i, (out_dim, scale, num_conv) in enumerate(zip(dim_list, downscale_list, num_conv_list)):
            stage_in = in_dim if i == 0 else dim_list[i - 1]
            self.conv_block_list.append(_conv_stack(stage_in, out_dim, num_conv, max(1, out_dim // 4), activation))
            merge_dim = out_dim if num_conv > 0 else stage_in
            self.patch_merge_list.append(PatchMerging3D(merge_dim, out_dim, (1, scale, scale), padding_type))

    def get_out_shape_list(self, input_shape: Shape4) -> list[Shape4]:
        """``(T, H, W, C)`` after every stage for an input of ``input_shape``."""
        shapes = []
        for merge in self.patch_merge_list:
            input_shape = merge.get_out_shape(input_shape)
            shapes.append(input_shape)
        return shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for num_conv, conv_block, merge in zip(self.num_conv_list, self.conv_block_list, self.patch_merge_list):
            if num_conv > 0:
                x = _framewise(conv_block, x)
            x = merge(x)
        return x


class FinalStackUpsamplingDecoder(nn.Module):
    """Pair of :class:`InitialStackConvEncoder`: per stage, nearest upsampling + Conv2d at the incoming width,
    then ``num_conv_list[i]`` x [Conv2d + GroupNorm(max(1, c // 4)) + act] to the stage's width.

    ``target_shape_list`` holds the ``(T, H, W, C)`` reached after every stage.
    """

    def __init__(
        self,
        target_shape_list: Sequence[Shape4],
        in_dim: int,
        num_conv_list: Sequence[int],
        activation: str = "leaky",
    ):
        super().__init__()
        self.num_conv_list = list(num_conv_list)
        out_dims = [shape[-1] for shape in target_shape_list]
        self.conv_block_list = nn.ModuleList()
        self.upsample_list = nn.ModuleList()
        for i, (shape, num_conv) in enumerate(zip(target_shape_list, num_conv_list)):
            stage_in = in_dim if i == 0 else out_dims[i - 1]
            self.upsample_list.append(Upsample3DLayer(stage_in, stage_in, tuple(shape[:3]), kernel_size=3))
            self.conv_block_list.append(
                _conv_stack(stage_in, out_dims[i], num_conv, max(1, out_dims[i] // 4), activation)
            )

    @staticmethod
    def get_init_params(enc_input_shape: Shape4, enc_out_shape_list: Sequence[Shape4]) -> tuple[list[Shape4], int]:
        """Stage targets mirroring the encoder: each stage returns to the spatial size the encoder stage started from,
        with the channel width the encoder had there after its convolutions ("large channel" in the official code)."""
        spatial = list(enc_out_shape_list[:-1])[::-1] + [tuple(enc_input_shape)]
        widths = [shape[-1] for shape in enc_out_shape_list[::-1]]
        targets = [(*shape[:3], width) for shape, width in zip(spatial, widths)]
        return targets, enc_out_shape_list[-1][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for num_conv, conv_block, upsample in zip(self.num_conv_list, self.conv_block_list, self.upsample_list):
            x = upsample(x)
            if num_conv > 0:
                x = _framewise(conv_block, x)
        return x


class EarthformerEncoder(GradientCheckpointingMixin, nn.Module):
    """Hierarchy of cuboid self-attention blocks with patch merging between levels.

    ``patterns`` names the self-attention pattern of every level, evaluated on that level's ``mem_shapes`` entry.
    ``forward(x (B, T, H, W, C_0), global_vectors (B, P, g*C_0) or None) -> (memories, global_memories)``: one
    ``(B, T, H_i, W_i, C_i)`` memory per level, and the global vectors at every level (``None`` without them).
    """

    def __init__(
        self,
        mem_shapes: list[Shape4],
        depth: Sequence[int],
        downsample: tuple[int, int, int],
        patterns: Sequence[str],
        padding_type: str,
        use_global_vector: bool,
        global_dim_ratio: int,
        block_kwargs: dict,
    ):
        super().__init__()
        num_levels = len(depth)
        self.use_global_vector = use_global_vector
        self.down_layers = patch_merging_layers(mem_shapes, downsample, padding_type)
        if use_global_vector:
            self.down_layer_global_proj = nn.ModuleList(
                nn.Linear(global_dim_ratio * mem_shapes[i][-1], global_dim_ratio * mem_shapes[i + 1][-1])
                for i in range(num_levels - 1)
            )
        self.blocks = self_attention_levels(
            patterns, mem_shapes, depth, use_global_vector=use_global_vector, **block_kwargs
        )

    def forward(
        self, x: torch.Tensor, global_vectors: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        memories, global_memories = [], []
        for i, level in enumerate(self.blocks):
            for block in level:
                x, global_vectors = self._checkpointed(block, x, global_vectors)
            memories.append(x)
            global_memories.append(global_vectors)
            if i < len(self.blocks) - 1:
                x = self.down_layers[i](x)
                if self.use_global_vector:
                    global_vectors = self.down_layer_global_proj[i](global_vectors)
        return memories, (global_memories if self.use_global_vector else None)


class EarthformerDecoder(GradientCheckpointingMixin, nn.Module):
    """Top-down decoder: per level, [self-attention block, cross-attention block to that level's memory]; at the top
    level (unless ``use_first_self_attn``) the first self-attention block is left out. Between levels: nearest
    upsampling + Conv2d to the lower width, optionally followed by a position embedding.

    ``forward(x (B, T_out, H_top, W_top, C_top), memories, global_memories or None) -> (B, T_out, H_0, W_0, C_0)``.
    """

    def __init__(
        self,
        target_temporal_length: int,
        mem_shapes: list[Shape4],
        depth: Sequence[int],
        cross_start: int,
        self_patterns: Sequence[str],
        cross_patterns: Sequence[str],
        cross_last_n_frames: int | None,
        upsample_kernel_size: int,
        hierarchical_pos_embed: bool,
        pos_embed_type: str,
        max_temporal_relative: int,
        use_first_self_attn: bool,
        use_self_global: bool,
        self_update_global: bool,
        use_cross_global: bool,
        global_dim_ratio: int,
        self_block_kwargs: dict,
        cross_block_kwargs: dict,
    ):
        super().__init__()
        num_levels = len(mem_shapes)
        self.depth = list(depth)
        self.cross_start = cross_start
        self.use_first_self_attn = use_first_self_attn
        self.use_self_global = use_self_global
        self.self_update_global = self_update_global
        self.use_cross_global = use_cross_global
        self.hierarchical_pos_embed = hierarchical_pos_embed

        def self_depth(i: int) -> int:
            # The top level starts with a cross block: one self block fewer.
            return depth[i] - 1 if not use_first_self_attn and i == num_levels - 1 else depth[i]

        self.self_blocks = self_attention_levels(
            self_patterns,
            mem_shapes,
            [self_depth(i) for i in range(num_levels)],
            use_global_vector=use_self_global,
            global_dim_ratio=global_dim_ratio,
            **self_block_kwargs,
        )
        self.cross_blocks = cross_attention_levels(
            cross_patterns[cross_start:],
            mem_shapes[cross_start:],
            depth[cross_start:],
            cross_last_n_frames=cross_last_n_frames,
            max_temporal_relative=max_temporal_relative,
            use_global_vector=use_cross_global,
            global_dim_ratio=global_dim_ratio,
            **cross_block_kwargs,
        )
        if num_levels > 1:
            self.upsample_layers = upsampling_layers(mem_shapes, upsample_kernel_size, target_temporal_length)
            if hierarchical_pos_embed:
                self.hierarchical_pos_embed_l = nn.ModuleList(
                    PosEmbed(
                        mem_shapes[i][-1], target_temporal_length, mem_shapes[i][1], mem_shapes[i][2], pos_embed_type
                    )
                    for i in range(num_levels - 1)
                )

    def _self(self, i: int, idx: int, x: torch.Tensor, global_vectors: torch.Tensor | None):
        block = self.self_blocks[i][idx]
        if not self.use_self_global:
            return self._checkpointed(block, x)[0], global_vectors
        x, updated = self._checkpointed(block, x, global_vectors)
        return x, (updated if self.self_update_global else global_vectors)

    def _cross(self, i: int, idx: int, x: torch.Tensor, memory: torch.Tensor, global_vectors: torch.Tensor | None):
        if i < self.cross_start:
            return x
        block = self.cross_blocks[i - self.cross_start][idx]
        return self._checkpointed(block, x, memory, global_vectors if self.use_cross_global else None)

    def forward(
        self, x: torch.Tensor, memories: list[torch.Tensor], global_memories: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        num_levels = len(memories)
        for i in reversed(range(num_levels)):
            global_vectors = None if global_memories is None else global_memories[i]
            # The top level starts with a cross block (unless use_first_self_attn); its pairs come after it.
            first = 0 if self.use_first_self_attn or i < num_levels - 1 else 1
            if first:
                x = self._cross(i, 0, x, memories[i], global_vectors)
            for idx in range(self.depth[i] - first):
                x, global_vectors = self._self(i, idx, x, global_vectors)
                x = self._cross(i, idx + first, x, memories[i], global_vectors)
            if i > 0:
                x = self.upsample_layers[i - 1](x)
                if self.hierarchical_pos_embed:
                    x = self.hierarchical_pos_embed_l[i - 1](x)
        return x


def _per_level(pattern: str | Sequence[str], num_levels: int, name: str, kind: str) -> list[str]:
    """One pattern name per level from one name or a list of them; every name must be a known pattern of ``kind``
    ("self_pattern" or "cross_pattern"), even where a level builds no block with it."""
    if isinstance(pattern, str):
        return [check_pattern_name(kind, pattern)] * num_levels
    pattern = list(pattern)
    if len(pattern) != num_levels:
        raise ValueError(f"{name} must be one name or one per level ({num_levels}), got {pattern}")
    return [check_pattern_name(kind, p) for p in pattern]


class EarthformerModel(CuboidModelMixin):
    r"""
    Earthformer: a deterministic space-time forecaster built from cuboid attention (Gao et al., NeurIPS 2022). The
    context frames are downsampled, encoded hierarchically, and the forecast is decoded from a learned query that
    attends to the encoder memory at every level.

    Parameters:
        input_shape (`tuple[int, int, int, int]`): context shape `(T_in, H, W, C_in)`.
        target_shape (`tuple[int, int, int, int]`): forecast shape `(T_out, H, W, C_out)`, same H and W.
        base_units (`int`, defaults to 128): width after the initial encoder and of the first level.
        block_units (`list[int]`, *optional*): width per level (first = `base_units`); default
            `base_units * int((max(downsample) ** scale_alpha) ** i)`.
        scale_alpha (`float`, defaults to 1.0): growth exponent of the level widths.
        num_heads (`int`, defaults to 4): attention heads.
        attn_drop, proj_drop, ffn_drop (`float`, defaults to 0.0): dropout of attention weights, attention output
            projections and FFNs.
        downsample (`int` or `tuple[int, int, int]`, defaults to 2): patch merging between encoder levels; an int `s`
            means `(1, s, s)` (the decoder upsamples in space only, so the temporal factor must be 1).
        downsample_type (`str`, defaults to `"patch_merge"`): the only type of the official code.
        upsample_type (`str`, defaults to `"upsample"`): nearest upsampling + Conv2d, the only official type.
        upsample_kernel_size (`int`, defaults to 3): kernel of the decoder's upsampling convolutions.
        enc_depth, dec_depth (`list[int]`, defaults to `[1, 1]`): cuboid blocks per level (one entry per level).
        enc_use_inter_ffn, dec_use_inter_ffn (`bool`, defaults to True): an FFN after every attention layer of a
            block (else one FFN per block).
        dec_hierarchical_pos_embed (`bool`, defaults to False): a position embedding after every decoder upsampling.
        dec_cross_start (`int`, defaults to 0): levels below it have no cross attention.
        num_global_vectors (`int`, defaults to 0): learned global vectors exchanged with the encoder's cuboids.
        use_dec_self_global (`bool`, defaults to False): decoder self-attention also uses the global vectors.
        dec_self_update_global (`bool`, defaults to True): ... and updates them.
        use_dec_cross_global (`bool`, defaults to False): decoder queries also attend to the memory's global vectors.
        use_global_vector_ffn (`bool`, defaults to False): FFNs on the global vectors.
        use_global_self_attn (`bool`, defaults to False): global vectors attend to each other.
        separate_global_qkv (`bool`, defaults to False): separate projections for the global paths.
        global_dim_ratio (`int`, defaults to 1): global vector width as a multiple of the level width (needs
            `separate_global_qkv` when not 1).
        self_pattern (`str` or `list[str]`, defaults to `"axial"`): encoder self-attention pattern (per level).
        cross_self_pattern (`str` or `list[str]`, defaults to `"axial"`): decoder self-attention pattern; patterns
            are evaluated on the encoder memory shapes, as in the official code.
        cross_pattern (`str` or `list[str]`, defaults to `"cross_1x1"`): decoder cross-attention pattern.
        dec_cross_last_n_frames (`int`, *optional*): cross attention sees only the last memory frames.
        dec_use_first_self_attn (`bool`, defaults to False): the top decoder level starts with self attention.
        ffn_activation (`str`, defaults to `"gelu"`), gated_ffn (`bool`, defaults to False): FFN settings.
        padding_type (`str`, defaults to `"zeros"`): "zeros", "ignore" or "nearest" (cuboid and patch padding).
        pos_embed_type (`str`, defaults to `"t+h+w"`): learned position embedding, "t+h+w" or "t+hw".
        z_init_method (`str`, defaults to `"zeros"`): initial decoder query: "zeros" (learned, input-independent),
            "nearest_interp" (top memory resized to `T_out`), "last" (last memory frame), "mean" (time mean).
        initial_downsample_type (`str`, defaults to `"conv"`): "conv" or "stack_conv".
        initial_downsample_activation (`str`, defaults to `"leaky"`): activation of the initial/final convolutions.
        initial_downsample_scale (`int` or `tuple`, defaults to 1): "conv": patch merging `s`, `(sH, sW)` or
            `(sT, sH, sW)`.
        initial_downsample_conv_layers (`int`, defaults to 2): "conv": convolutions before the merging.
        final_upsample_conv_layers (`int`, defaults to 1): "conv": convolutions after the final upsampling.
        initial_downsample_stack_conv_num_layers (`int`, defaults to 1): "stack_conv": stages.
        initial_downsample_stack_conv_dim_list (`list[int]`, *optional*): "stack_conv": width per stage (default
            `base_units` everywhere).
        initial_downsample_stack_conv_downscale_list (`list[int]`, defaults to `[1]`): "stack_conv": spatial
            merging per stage.
        initial_downsample_stack_conv_num_conv_list (`list[int]`, defaults to `[2]`): "stack_conv": convolutions
            per stage (mirrored by the final decoder).
        use_relative_pos (`bool`, defaults to True): relative position bias in the cuboids.
        use_final_proj (`bool`, defaults to True): output projection of every self-attention layer.
        attn_linear_init (`str`, defaults to `"kaiming_linear"`): init of the attention q/k/v and global projections.
        ffn_linear_init (`str`, defaults to `"kaiming_linear"`): init of the FFN linears and attention output
            projections.
        conv_init (`str`, defaults to `"kaiming_leaky"`): init of every convolution (fan-out Kaiming for
            LeakyReLU(0.1), Earthformer's "0"); "pytorch" or "zeros" otherwise.
        down_up_linear_init (`str`, defaults to `"kaiming_linear"`): init of the patch-merging reductions, the global
            vector down-projections and the final linear layer.
    """

    presets = {
        "earthformer-sevir": dict(
            input_shape=(13, 384, 384, 1),
            target_shape=(12, 384, 384, 1),
            base_units=128,
            attn_drop=0.1,
            proj_drop=0.1,
            ffn_drop=0.1,
            num_global_vectors=8,
            use_global_self_attn=True,
            separate_global_qkv=True,
            initial_downsample_type="stack_conv",
            initial_downsample_stack_conv_num_layers=3,
            initial_downsample_stack_conv_dim_list=(16, 64, 128),
            initial_downsample_stack_conv_downscale_list=(3, 2, 2),
            initial_downsample_stack_conv_num_conv_list=(2, 2, 2),
        ),
        "earthformer-nbody": dict(
            input_shape=(10, 64, 64, 1),
            target_shape=(10, 64, 64, 1),
            base_units=64,
            attn_drop=0.1,
            proj_drop=0.1,
            ffn_drop=0.1,
            enc_depth=(4, 4),
            dec_depth=(4, 4),
            pos_embed_type="t+hw",
            initial_downsample_type="conv",
            initial_downsample_scale=2,
            initial_downsample_conv_layers=2,
            final_upsample_conv_layers=1,
        ),
        "earthformer-enso": dict(
            input_shape=(12, 24, 48, 1),
            target_shape=(14, 24, 48, 1),
            base_units=64,
            attn_drop=0.1,
            proj_drop=0.1,
            ffn_drop=0.1,
            # The ENSO config asks for hierarchical decoder embeddings, but the official training script never
            # passes that option to the model, so the published network (1,394,325 parameters) has none.
            dec_hierarchical_pos_embed=False,
            initial_downsample_type="conv",
            initial_downsample_scale=(1, 1, 2),
            initial_downsample_conv_layers=2,
            final_upsample_conv_layers=1,
        ),
    }

    @register_to_config
    def __init__(
        self,
        input_shape: tuple[int, int, int, int] = (13, 384, 384, 1),
        target_shape: tuple[int, int, int, int] = (12, 384, 384, 1),
        base_units: int = 128,
        block_units: list[int] | None = None,
        scale_alpha: float = 1.0,
        num_heads: int = 4,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ffn_drop: float = 0.0,
        downsample: int | tuple[int, int, int] = 2,
        downsample_type: str = "patch_merge",
        upsample_type: str = "upsample",
        upsample_kernel_size: int = 3,
        enc_depth: tuple[int, ...] = (1, 1),
        dec_depth: tuple[int, ...] = (1, 1),
        enc_use_inter_ffn: bool = True,
        dec_use_inter_ffn: bool = True,
        dec_hierarchical_pos_embed: bool = False,
        dec_cross_start: int = 0,
        num_global_vectors: int = 0,
        use_dec_self_global: bool = False,
        dec_self_update_global: bool = True,
        use_dec_cross_global: bool = False,
        use_global_vector_ffn: bool = False,
        use_global_self_attn: bool = False,
        separate_global_qkv: bool = False,
        global_dim_ratio: int = 1,
        self_pattern: str | list[str] = "axial",
        cross_self_pattern: str | list[str] = "axial",
        cross_pattern: str | list[str] = "cross_1x1",
        dec_cross_last_n_frames: int | None = None,
        dec_use_first_self_attn: bool = False,
        ffn_activation: str = "gelu",
        gated_ffn: bool = False,
        padding_type: str = "zeros",
        pos_embed_type: str = "t+h+w",
        z_init_method: str = "zeros",
        initial_downsample_type: str = "conv",
        initial_downsample_activation: str = "leaky",
        initial_downsample_scale: int | tuple[int, ...] = 1,
        initial_downsample_conv_layers: int = 2,
        final_upsample_conv_layers: int = 1,
        initial_downsample_stack_conv_num_layers: int = 1,
        initial_downsample_stack_conv_dim_list: list[int] | None = None,
        initial_downsample_stack_conv_downscale_list: tuple[int, ...] = (1,),
        initial_downsample_stack_conv_num_conv_list: tuple[int, ...] = (2,),
        use_relative_pos: bool = True,
        use_final_proj: bool = True,
        attn_linear_init: str = "kaiming_linear",
        ffn_linear_init: str = "kaiming_linear",
        conv_init: str = "kaiming_leaky",
        down_up_linear_init: str = "kaiming_linear",
    ):
        super().__init__()
        input_shape, target_shape = tuple(int(v) for v in input_shape), tuple(int(v) for v in target_shape)
        if len(input_shape) != 4 or len(target_shape) != 4:
            raise ValueError(f"input_shape and target_shape must be (T, H, W, C), got {input_shape}, {target_shape}")
        if input_shape[1:3] != target_shape[1:3]:
            raise ValueError(f"input_shape {input_shape} and target_shape {target_shape} must share (H, W)")
        enc_depth, dec_depth = [int(d) for d in enc_depth], [int(d) for d in dec_depth]
        if len(enc_depth) != len(dec_depth) or not enc_depth or min(enc_depth + dec_depth) < 1:
            raise ValueError(
                f"enc_depth {enc_depth} and dec_depth {dec_depth} need one positive entry per level, as many of each"
            )
        num_levels = len(enc_depth)
        if not 0 <= dec_cross_start < num_levels:
            raise ValueError(f"dec_cross_start must be in [0, {num_levels}), got {dec_cross_start}")
        if z_init_method not in Z_INIT_METHODS:
            raise ValueError(f"z_init_method must be one of {Z_INIT_METHODS}, got {z_init_method!r}")
        if initial_downsample_type not in INITIAL_DOWNSAMPLE_TYPES:
            raise ValueError(
                f"initial_downsample_type must be one of {INITIAL_DOWNSAMPLE_TYPES}, got {initial_downsample_type!r}"
            )
        if downsample_type != "patch_merge":
            raise ValueError(f"downsample_type must be 'patch_merge', got {downsample_type!r}")
        if upsample_type != "upsample":
            raise ValueError(f"upsample_type must be 'upsample', got {upsample_type!r}")
        if global_dim_ratio != 1 and not separate_global_qkv:
            raise ValueError(f"global_dim_ratio={global_dim_ratio} != 1 needs separate_global_qkv=True")
        downsample = _downsample_3d(downsample, "downsample")
        if downsample[0] != 1:
            raise ValueError(f"downsample must keep time (the decoder upsamples in space only), got {downsample}")
        block_units = resolve_block_units(block_units, base_units, downsample, scale_alpha, num_levels, "factor")
        if block_units[0] != base_units:
            raise ValueError(f"block_units {block_units} must start with base_units={base_units}")
        self.input_shape = input_shape
        self.target_shape = target_shape
        self.block_units = block_units
        T_in, H, W, C_in = input_shape
        T_out, _, _, C_out = target_shape
        use_global = num_global_vectors > 0

        # Modules are registered in the official order (top level, encoder, decoder), as in its state dicts.
        if use_global:
            self.init_global_vectors = nn.Parameter(torch.zeros(num_global_vectors, global_dim_ratio * base_units))
        if initial_downsample_type == "conv":
            scale = _downsample_3d(initial_downsample_scale, "initial_downsample_scale")
            self.initial_encoder = InitialConvEncoder(
                C_in, base_units, scale, initial_downsample_conv_layers, initial_downsample_activation, padding_type
            )
            self.final_decoder = FinalConvDecoder(
                target_shape[:3], base_units, final_upsample_conv_layers, initial_downsample_activation
            )
            self.dec_final_proj = nn.Linear(base_units, C_out)
            encoded_shape = self.initial_encoder.patch_merge.get_out_shape(input_shape)
        else:
            num_stages = initial_downsample_stack_conv_num_layers
            dims = initial_downsample_stack_conv_dim_list or [base_units] * num_stages
            stage_lists = {
                "initial_downsample_stack_conv_dim_list": list(dims),
                "initial_downsample_stack_conv_downscale_list": list(initial_downsample_stack_conv_downscale_list),
                "initial_downsample_stack_conv_num_conv_list": list(initial_downsample_stack_conv_num_conv_list),
            }
            for name, values in stage_lists.items():
                if len(values) < num_stages:
                    raise ValueError(f"{name} needs {num_stages} entries (one per stage), got {values}")
            dims, scales, num_convs = (v[:num_stages] for v in stage_lists.values())
            if dims[-1] != base_units:
                raise ValueError(f"the last stack_conv width {dims[-1]} must equal base_units={base_units}")
            self.initial_encoder = InitialStackConvEncoder(
                C_in, dims, scales, num_convs, initial_downsample_activation, padding_type
            )
            # Targets are built from the target shape so the decoder stages have T_out frames.
            dec_targets, dec_in_dim = FinalStackUpsamplingDecoder.get_init_params(
                target_shape, self.initial_encoder.get_out_shape_list(target_shape)
            )
            self.final_decoder = FinalStackUpsamplingDecoder(
                dec_targets, dec_in_dim, num_convs[::-1], initial_downsample_activation
            )
            self.dec_final_proj = nn.Linear(dec_targets[-1][-1], C_out)
            encoded_shape = self.initial_encoder.get_out_shape_list(input_shape)[-1]
        T_enc, H_enc, W_enc, _ = encoded_shape
        if T_enc != T_in:
            raise ValueError(f"the initial encoder must keep time: {T_in} frames became {T_enc}")

        # Memory shapes of every level: patch merging by `downsample` between levels.
        mem_shapes = level_shapes((T_in, H_enc, W_enc), block_units, downsample)
        self.mem_shapes = mem_shapes

        # Patterns are evaluated on the encoder memory shapes, the decoder's too, as in the official code.
        self_patterns = _per_level(self_pattern, num_levels, "self_pattern", "self_pattern")
        dec_self_patterns = _per_level(cross_self_pattern, num_levels, "cross_self_pattern", "self_pattern")
        cross_patterns = _per_level(cross_pattern, num_levels, "cross_pattern", "cross_pattern")
        common = dict(**cuboid_block_settings(self.config), separate_global_qkv=separate_global_qkv)
        self_kwargs = dict(
            **common,
            use_global_vector_ffn=use_global_vector_ffn,
            use_global_self_attn=use_global_self_attn,
            use_final_proj=use_final_proj,
        )
        self.encoder = EarthformerEncoder(
            mem_shapes,
            enc_depth,
            downsample,
            self_patterns,
            padding_type,
            use_global,
            global_dim_ratio,
            dict(**self_kwargs, use_inter_ffn=enc_use_inter_ffn, global_dim_ratio=global_dim_ratio),
        )
        self.enc_pos_embed = PosEmbed(base_units, T_in, H_enc, W_enc, pos_embed_type)
        top = mem_shapes[-1]
        self.z_proj = nn.Linear(top[-1], top[-1])
        self.dec_pos_embed = PosEmbed(top[-1], T_out, top[1], top[2], pos_embed_type)
        self.decoder = EarthformerDecoder(
            target_temporal_length=T_out,
            mem_shapes=mem_shapes,
            depth=dec_depth,
            cross_start=dec_cross_start,
            self_patterns=dec_self_patterns,
            cross_patterns=cross_patterns,
            cross_last_n_frames=dec_cross_last_n_frames,
            upsample_kernel_size=upsample_kernel_size,
            hierarchical_pos_embed=dec_hierarchical_pos_embed,
            pos_embed_type=pos_embed_type,
            max_temporal_relative=T_in + T_out,
            use_first_self_attn=dec_use_first_self_attn,
            use_self_global=use_global and use_dec_self_global,
            self_update_global=dec_self_update_global,
            use_cross_global=use_global and use_dec_cross_global,
            global_dim_ratio=global_dim_ratio,
            self_block_kwargs=dict(**self_kwargs, use_inter_ffn=dec_use_inter_ffn),
            cross_block_kwargs=dict(**common, use_inter_ffn=dec_use_inter_ffn),
        )
        self._init_weights(attn_linear_init, ffn_linear_init, conv_init, down_up_linear_init)

    def _init_weights(self, attn: str, ffn: str, conv: str, down_up: str) -> None:
        """Earthformer's initialisation (``apply_initialization`` with the model's four modes)."""
        if self.config.num_global_vectors > 0:
            nn.init.trunc_normal_(self.init_global_vectors, std=0.02)
        for coder in (self.initial_encoder, self.final_decoder):
            init_conv(coder, conv)
            init_linear(coder, down_up)
            init_norms(coder)
        init_linear(self.dec_final_proj, down_up)
        init_cuboid_blocks(self.encoder.blocks, attn=attn, ffn=ffn)
        init_linear(self.encoder.down_layers, down_up)
        init_norms(self.encoder.down_layers)
        if hasattr(self.encoder, "down_layer_global_proj"):
            init_linear(self.encoder.down_layer_global_proj, down_up)
        init_cuboid_blocks(self.decoder.self_blocks, attn=attn, ffn=ffn)
        init_cuboid_blocks(self.decoder.cross_blocks, attn=attn, ffn=ffn)
        if hasattr(self.decoder, "upsample_layers"):
            init_conv(self.decoder.upsample_layers, conv)
        # The initial query projection is always fan-in Kaiming in the official code.
        init_linear(self.z_proj, "kaiming_linear")

    def get_initial_z(self, final_mem: torch.Tensor, T_out: int) -> torch.Tensor:
        """The decoder's initial query ``(B, T_out, H_top, W_top, C_top)`` from the top memory ``(B, T_in, ...)``."""
        B = final_mem.shape[0]
        method = self.config.z_init_method
        if method == "zeros":
            z = torch.zeros((1, T_out, *final_mem.shape[2:]), dtype=final_mem.dtype, device=final_mem.device)
            return self.z_proj(self.dec_pos_embed(z)).expand(B, -1, -1, -1, -1)
        if method == "nearest_interp":
            size = (T_out, final_mem.shape[2], final_mem.shape[3])
            z = F.interpolate(final_mem.permute(0, 4, 1, 2, 3), size=size).permute(0, 2, 3, 4, 1)
        elif method == "last":
            z = final_mem[:, -1:].expand(B, T_out, -1, -1, -1)
        else:
            z = final_mem.mean(dim=1, keepdim=True).expand(B, T_out, -1, -1, -1)
        return self.z_proj(z)

    def forward(self, context: torch.Tensor, return_dict: bool = True) -> EarthformerModelOutput | tuple[torch.Tensor]:
        r"""
        Args:
            context (`torch.Tensor` of shape `(B, T_in, H, W, C_in)`): the observed frames (e.g. VIL scaled to [0, 1]).
            return_dict (`bool`, defaults to True): return an [`EarthformerModelOutput`] instead of a tuple.

        Returns:
            [`EarthformerModelOutput`] or `tuple`: the forecast, shape `(B, T_out, H, W, C_out)`.
        """
        check_sequence("context", context, (None, *self.input_shape))
        B = context.shape[0]
        x = self.initial_encoder(context)
        x = self.enc_pos_embed(x)
        global_vectors = None
        if self.config.num_global_vectors > 0:
            global_vectors = self.init_global_vectors.expand(B, -1, -1)
        memories, global_memories = self.encoder(x, global_vectors)
        z = self.get_initial_z(memories[-1], self.target_shape[0])
        out = self.decoder(z, memories, global_memories)
        out = self.dec_final_proj(self.final_decoder(out))
        if not return_dict:
            return (out,)
        return EarthformerModelOutput(sample=out)
