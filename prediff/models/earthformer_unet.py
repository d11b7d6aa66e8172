"""PreDiff's latent denoiser: the Earthformer-UNet (``CuboidTransformerUNet`` in the official code)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .cuboid.blocks import PatchMerging3D, PosEmbed, StackCuboidSelfAttentionBlock, Upsample3DLayer
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


def hierarchy_block_units(base_units: int, downsample: int, scale_alpha: float, num_levels: int) -> list[int]:
    """Channel width per level: ``base * (downsample ** scale_alpha) ** i`` (the official rule)."""
    return [int(base_units * (downsample**scale_alpha) ** i) for i in range(num_levels)]


def hierarchy_shapes(data_shape: tuple[int, int, int, int], block_units: list[int], downsample: int):
    """``(T, H, W, C_i)`` of every level; each level halves (by ``downsample``) H and W, rounding up."""
    T, H, W, _ = data_shape
    shapes = []
    for i, units in enumerate(block_units):
        if i > 0:
            H, W = -(-H // downsample), -(-W // downsample)
        shapes.append((T, H, W, units))
    return shapes


class EarthformerUNetModel(CuboidModelMixin):
    r"""
    Earthformer-UNet: the latent denoiser of PreDiff. Context latents and noisy target latents are concatenated in
    time (with a context-indicator channel) and processed by a U-Net of time-conditioned 3x3x3 residual blocks and
    cuboid-attention blocks; the noise of the target frames is predicted.

    Parameters:
        input_shape (`tuple[int, int, int, int]`): context latent shape `(T_in, h, w, c)`.
        target_shape (`tuple[int, int, int, int]`): target latent shape `(T_out, h, w, c)`, same h, w, c.
        base_units (`int`, defaults to 256): width of the first level.
        block_units (`list[int]`, *optional*): width of every level; default `base * (downsample ** scale_alpha) ** i`.
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
        if block_units is None:
            block_units = hierarchy_block_units(base_units, downsample, scale_alpha, num_levels)
        elif len(block_units) != num_levels:
            raise ValueError(f"block_units {block_units} must have one entry per level of depth {depth}")
        self.input_shape = input_shape
        self.target_shape = target_shape
        self.block_units = list(block_units)
        T = input_shape[0] + target_shape[0]
        _, h, w, c = input_shape
        self.data_shape = (T, h, w, c + 1)
        self.mem_shapes = hierarchy_shapes(self.data_shape, self.block_units, downsample)

        self.first_proj = TimeEmbedResBlock(c + 1, proj_drop, out_channels=block_units[0], use_embed=False)
        self.pos_embed = PosEmbed(block_units[0], T, h, w, typ=pos_embed_type)
        time_embed_channels = block_units[0] * time_embed_channels_mult
        self.time_embed = TimeEmbedLayer(block_units[0], time_embed_channels)

        block_kwargs = dict(
            num_heads=num_heads,
            padding_type=padding_type,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            ffn_drop=ffn_drop,
            activation=ffn_activation,
            gated_ffn=gated_ffn,
            use_inter_ffn=True,
            use_relative_pos=use_relative_pos,
            use_final_proj=use_final_proj,
        )

        def cuboid_blocks(level: int) -> nn.ModuleList:
            shape = self.mem_shapes[level]
            return nn.ModuleList(
                StackCuboidSelfAttentionBlock.from_pattern(self_pattern, shape, **block_kwargs)
                for _ in range(depth[level])
            )

        def time_block(level: int) -> TimeEmbedResBlock:
            units = self.mem_shapes[level][-1]
            return TimeEmbedResBlock(units, time_embed_dropout, emb_channels=time_embed_channels)

        self.downsample_layers = nn.ModuleList(
            PatchMerging3D(
                self.mem_shapes[i][-1], self.mem_shapes[i + 1][-1], (1, downsample, downsample), padding_type
            )
            for i in range(num_levels - 1)
        )
        self.upsample_layers = nn.ModuleList(
            Upsample3DLayer(
                self.mem_shapes[i + 1][-1], self.mem_shapes[i][-1], self.mem_shapes[i][:3], upsample_kernel_size
            )
            for i in range(num_levels - 1)
        )
        # One time block per level and path, shared by all repetitions of that level (as in the checkpoints).
        self.down_time_embed_blocks = nn.ModuleList(time_block(i) for i in range(num_levels))
        self.up_time_embed_blocks = nn.ModuleList(time_block(i) for i in range(num_levels))
        self.down_self_blocks = nn.ModuleList(cuboid_blocks(i) for i in range(num_levels))
        self.up_self_blocks = nn.ModuleList(cuboid_blocks(i) for i in range(num_levels))
        self.final_proj = nn.Linear(block_units[0], c)

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
        t_emb = self.time_embed(timestep_embedding(timestep, self.block_units[0]).to(x.dtype))

        num_levels = len(self.block_units)
        skips = []
        for i in range(num_levels):
            if i > 0:
                x = self.downsample_layers[i - 1](x)
            for block in self.down_self_blocks[i]:
                x = self._checkpointed(self.down_time_embed_blocks[i], x, t_emb)
                x = self._checkpointed(block, x)[0]
            if i < num_levels - 1:
                skips.append(x)
        for i in reversed(range(num_levels)):
            if self.config.unet_res_connect and i < num_levels - 1:
                x = x + skips[i]
            for block in self.up_self_blocks[i]:
                x = self._checkpointed(self.up_time_embed_blocks[i], x, t_emb)
                x = self._checkpointed(block, x)[0]
            if i > 0:
                x = self.upsample_layers[i - 1](x)
        out = self.final_proj(x[:, T_in:])
        if not return_dict:
            return (out,)
        return EarthformerUNetOutput(sample=out)
