"""PreDiff's latent denoiser: the Earthformer-UNet (``CuboidTransformerUNet`` in the official code)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .cuboid.blocks import PosEmbed
from .cuboid.hierarchy import (
    Shape4,
    cuboid_block_settings,
    level_shapes,
    patch_merging_layers,
    resolve_block_units,
    self_attention_levels,
    upsampling_layers,
)
from .cuboid.initialization import init_cuboid_blocks, init_linear
from .embeddings import TimeEmbedLayer, TimeEmbedResBlock, timestep_embedding
from .modeling_utils import CuboidModelMixin, check_sequence, check_timestep


@dataclass
class EarthformerUNetOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, T_out, h, w, c)`):
            The predicted noise (epsilon) of the target latents.
    """

    sample: torch.Tensor


def time_conditioned_stem(
    in_channels: int,
    thw: tuple[int, int, int],
    units: int,
    dropout: float,
    pos_embed_type: str,
    time_embed_channels_mult: int,
) -> tuple[TimeEmbedResBlock, PosEmbed, TimeEmbedLayer]:
    """The input modules of the time-conditioned networks (denoiser and knowledge alignment): a residual block from
    ``in_channels`` to ``units`` channels, the position embedding of ``thw = (T, h, w)``, and the timestep embedding
    of width ``units * time_embed_channels_mult``, in this order (the checkpoints' order)."""
    T, h, w = thw
    first_proj = TimeEmbedResBlock(in_channels, dropout, out_channels=units, use_embed=False)
    pos_embed = PosEmbed(units, T, h, w, typ=pos_embed_type)
    return first_proj, pos_embed, TimeEmbedLayer(units, units * time_embed_channels_mult)


def time_blocks(shapes: list[Shape4], emb_channels: int, dropout: float) -> nn.ModuleList:
    """One time-conditioned residual block per level, at that level's width; all the cuboid blocks of a level share
    it (as in the official checkpoints)."""
    return nn.ModuleList(TimeEmbedResBlock(shape[-1], dropout, emb_channels=emb_channels) for shape in shapes)


def embed_timestep(time_embed: TimeEmbedLayer, timestep: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` timesteps -> ``(B, E)`` conditioning: sinusoidal features of width ``dim`` through ``time_embed``."""
    return time_embed(timestep_embedding(timestep, dim).to(dtype))


def run_time_conditioned_level(
    model: CuboidModelMixin, x: torch.Tensor, t_emb: torch.Tensor, time_block: nn.Module, blocks: nn.ModuleList
) -> torch.Tensor:
    """One level of a time-conditioned network on ``x (B, T, h, w, C)``: for every cuboid block, the level's time
    block then the cuboid block, each through the model's gradient checkpointing."""
    for block in blocks:
        x = model._checkpointed(time_block, x, t_emb)
        x = model._checkpointed(block, x)[0]
    return x


class EarthformerUNetModel(CuboidModelMixin):
    r"""
    Earthformer-UNet: the latent denoiser of PreDiff. Context latents and noisy target latents are concatenated in
    time (with a context-indicator channel) and processed by a U-Net of time-conditioned 3x3x3 residual blocks and
    cuboid-attention blocks; the noise of the target frames is predicted.

    Parameters:
        input_shape (`tuple[int, int, int, int]`): context latent shape `(T_in, h, w, c)`.
        target_shape (`tuple[int, int, int, int]`): target latent shape `(T_out, h, w, c)`, same h, w, c.
        base_units (`int`, defaults to 256): width of the first level.
        block_units (`list[int]`, *optional*): width of every level; by default `int(base_units * g ** i)` with
            `g = downsample ** scale_alpha` (Earthformer rounds `g ** i` instead; the two agree whenever `g ** i` is
            whole, as with `scale_alpha=1`: see `prediff.models.cuboid.hierarchy.level_units`).
        scale_alpha (`float`, defaults to 1.0): growth exponent of the widths.
        depth (`list[int]`, defaults to `[4, 4]`): repetitions of [time block, cuboid block] per level.
        num_heads (`int`, defaults to 4): attention heads.
        attn_drop, proj_drop, ffn_drop (`float`, defaults to 0.1): dropouts of attention, projections and FFNs.
        downsample (`int`, defaults to 2): spatial patch-merging factor between levels.
        upsample_kernel_size (`int`, defaults to 3): kernel of the upsampling convolution.
        self_pattern (`str`, defaults to `"axial"`): named cuboid pattern of every cuboid block.
        ffn_activation (`str`, defaults to `"gelu"`), gated_ffn (`bool`, defaults to False): FFN settings.
        padding_type (`str`, defaults to `"zeros"`): cuboid padding, "zeros", "ignore" or "nearest".
        pos_embed_type (`str`, defaults to `"t+h+w"`): learned position embedding, "t+h+w" or "t+hw".
        use_relative_pos (`bool`, defaults to True): relative position bias in the cuboids.
        use_final_proj (`bool`, defaults to True): output projection in every attention layer.
        time_embed_channels_mult (`int`, defaults to 4): timestep-embedding width as a multiple of `block_units[0]`.
        time_embed_dropout (`float`, defaults to 0.0): dropout inside the time blocks.
        unet_res_connect (`bool`, defaults to True): add each level's output to the up path.
        attn_linear_init, ffn_linear_init (`str`, defaults to `"kaiming_linear"`): init of attention / FFN linears.
        ffn2_linear_init, attn_proj_linear_init, final_proj_init (`str`, defaults to `"zeros"`): init of the last layer
            of every residual branch and of the output; zeros make the untrained network output exactly 0.
        down_up_linear_init (`str`, defaults to `"kaiming_linear"`): init of the patch-merging reductions.
    """

    presets = {
        "prediff-sevirlr": dict(
            input_shape=(7, 16, 16, 64),
            target_shape=(6, 16, 16, 64),
            base_units=256,
            depth=(4, 4),
            num_heads=4,
            downsample=2,
            self_pattern="axial",
        ),
    }

    @register_to_config
    def __init__(
        self,
        input_shape: tuple[int, int, int, int] = (7, 16, 16, 64),
        target_shape: tuple[int, int, int, int] = (6, 16, 16, 64),
        base_units: int = 256,
        block_units: list[int] | None = None,
        scale_alpha: float = 1.0,
        depth: tuple[int, ...] = (4, 4),
        num_heads: int = 4,
        attn_drop: float = 0.1,
        proj_drop: float = 0.1,
        ffn_drop: float = 0.1,
        downsample: int = 2,
        upsample_kernel_size: int = 3,
        self_pattern: str = "axial",
        ffn_activation: str = "gelu",
        gated_ffn: bool = False,
        padding_type: str = "zeros",
        pos_embed_type: str = "t+h+w",
        use_relative_pos: bool = True,
        use_final_proj: bool = True,
        time_embed_channels_mult: int = 4,
        time_embed_dropout: float = 0.0,
        unet_res_connect: bool = True,
        attn_linear_init: str = "kaiming_linear",
        ffn_linear_init: str = "kaiming_linear",
        ffn2_linear_init: str = "zeros",
        attn_proj_linear_init: str = "zeros",
        final_proj_init: str = "zeros",
        down_up_linear_init: str = "kaiming_linear",
    ):
        super().__init__()
        input_shape, target_shape = tuple(input_shape), tuple(target_shape)
        if len(input_shape) != 4 or len(target_shape) != 4:
            raise ValueError(f"input_shape and target_shape must be (T, h, w, c), got {input_shape}, {target_shape}")
        if input_shape[1:] != target_shape[1:]:
            raise ValueError(f"input_shape {input_shape} and target_shape {target_shape} must share (h, w, c)")
        num_levels = len(depth)
        downsample_3d = (1, downsample, downsample)
        self.input_shape = input_shape
        self.target_shape = target_shape
        self.block_units = resolve_block_units(
            block_units, base_units, downsample_3d, scale_alpha, num_levels, "product"
        )
        T = input_shape[0] + target_shape[0]
        _, h, w, c = input_shape
        self.data_shape = (T, h, w, c + 1)
        self.mem_shapes = level_shapes((T, h, w), self.block_units, downsample_3d)
        units = self.block_units[0]

        self.first_proj, self.pos_embed, self.time_embed = time_conditioned_stem(
            c + 1, (T, h, w), units, proj_drop, pos_embed_type, time_embed_channels_mult
        )
        self.downsample_layers = patch_merging_layers(self.mem_shapes, downsample_3d, padding_type)
        self.upsample_layers = upsampling_layers(self.mem_shapes, upsample_kernel_size, T)
        # One time block per level and path, shared by all repetitions of that level (as in the checkpoints).
        time_embed_channels = units * time_embed_channels_mult
        self.down_time_embed_blocks = time_blocks(self.mem_shapes, time_embed_channels, time_embed_dropout)
        self.up_time_embed_blocks = time_blocks(self.mem_shapes, time_embed_channels, time_embed_dropout)
        block_kwargs = dict(**cuboid_block_settings(self.config), use_inter_ffn=True, use_final_proj=use_final_proj)
        patterns = [self_pattern] * num_levels
        self.down_self_blocks = self_attention_levels(patterns, self.mem_shapes, depth, **block_kwargs)
        self.up_self_blocks = self_attention_levels(patterns, self.mem_shapes, depth, **block_kwargs)
        self.final_proj = nn.Linear(units, c)

        init_cuboid_blocks(
            self, attn=attn_linear_init, ffn=ffn_linear_init, ffn2=ffn2_linear_init, attn_proj=attn_proj_linear_init
        )
        init_linear(self.downsample_layers, down_up_linear_init)
        init_linear(self.final_proj, final_proj_init)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        context: torch.Tensor,
        return_dict: bool = True,
    ) -> EarthformerUNetOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, T_out, h, w, c)`): noisy target latents.
            timestep (`torch.Tensor` of shape `(B,)`, or a number): diffusion timesteps (0 to 999 for PreDiff).
            context (`torch.Tensor` of shape `(B, T_in, h, w, c)`): clean context latents.
            return_dict (`bool`, defaults to True): return an [`EarthformerUNetOutput`] instead of a tuple.

        Returns:
            [`EarthformerUNetOutput`] or `tuple`: the predicted noise, shape `(B, T_out, h, w, c)`.
        """
        check_sequence("sample", sample, (None, *self.target_shape))
        batch_size = sample.shape[0]
        check_sequence("context", context, (batch_size, *self.input_shape))
        timestep = check_timestep(timestep, batch_size, sample.device)
        T_in = self.input_shape[0]

        x = torch.cat([context, sample], dim=1)
        indicator = torch.zeros_like(x[..., :1])
        indicator[:, :T_in] = 1
        x = torch.cat([x, indicator], dim=-1)
        x = self.first_proj(x)
        x = self.pos_embed(x)
        t_emb = embed_timestep(self.time_embed, timestep, self.block_units[0], x.dtype)

        num_levels = len(self.block_units)
        skips = []
        for i in range(num_levels):
            if i > 0:
                x = self.downsample_layers[i - 1](x)
            x = run_time_conditioned_level(self, x, t_emb, self.down_time_embed_blocks[i], self.down_self_blocks[i])
            if i < num_levels - 1:
                skips.append(x)
        for i in reversed(range(num_levels)):
            if self.config.unet_res_connect and i < num_levels - 1:
                x = x + skips[i]
            x = run_time_conditioned_level(self, x, t_emb, self.up_time_embed_blocks[i], self.up_self_blocks[i])
            if i > 0:
                x = self.upsample_layers[i - 1](x)
        out = self.final_proj(x[:, T_in:])
        if not return_dict:
            return (out,)
        return EarthformerUNetOutput(sample=out)
