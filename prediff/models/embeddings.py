"""Timestep embeddings and the time-conditioned residual block of PreDiff's Earthformer-UNet."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``(B,) -> (B, dim)``, **cosines first, then sines**, as PreDiff's checkpoints expect."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimeEmbedLayer(nn.Module):
    """``Linear -> SiLU -> Linear`` on the sinusoidal features (checkpoint names ``layer.0``, ``layer.2``)."""

    def __init__(self, base_channels: int, time_embed_channels: int):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Linear(base_channels, time_embed_channels),
            nn.SiLU(),
            nn.Linear(time_embed_channels, time_embed_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups when possible, otherwise one group per channel (the official rule).
    return nn.GroupNorm(32 if channels % 32 == 0 else channels, channels)


class TimeEmbedResBlock(nn.Module):
    """Residual block of 3x3x3 convolutions on ``(B, T, H, W, C)``, optionally conditioned on a time embedding.

    ``GroupNorm -> SiLU -> Conv3d -> (+ Linear(SiLU(t_emb)) per channel) -> GroupNorm -> SiLU -> Dropout -> Conv3d``,
    plus the input (through a 1x1x1 convolution when the width changes). The last convolution starts at zero, so
    the block starts as the identity (or as its skip convolution).

    Args:
        channels (`int`): input channels.
        dropout (`float`): dropout before the last convolution.
        emb_channels (`int`, *optional*): width of the time embedding; required when ``use_embed``.
        out_channels (`int`, *optional*): output channels (default: ``channels``).
        use_embed (`bool`): condition on the time embedding.
    """

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        emb_channels: int | None = None,
        out_channels: int | None = None,
        use_embed: bool = True,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_embed = use_embed
        self.in_layers = nn.Sequential(
            _group_norm(channels), nn.SiLU(), nn.Conv3d(channels, out_channels, kernel_size=3, padding=1)
        )
        if use_embed:
            if emb_channels is None:
                raise ValueError("TimeEmbedResBlock with use_embed=True needs emb_channels")
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            _group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv3d(channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """``x: (B, T, H, W, C)``, ``emb: (B, E)`` -> ``(B, T, H, W, C_out)``."""
        # A channels-last (B,T,H,W,C) tensor viewed as (B,C,T,H,W) is already in channels_last_3d memory format,
        # so the convolutions and norms run on it without a copy.
        x = x.permute(0, 4, 1, 2, 3)
        if torch.is_grad_enabled() and not x.requires_grad:
            # PyTorch's CPU GroupNorm backward crashes on a channels-last input that needs no gradient (while the
            # norm's weights do); the network input is such a tensor, so it gets the plain layout.
            x = x.contiguous()
        h = self.in_layers(x)
        if self.use_embed:
            h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None, None]
        h = self.out_layers(h)
        return (self.skip_connection(x) + h).permute(0, 2, 3, 4, 1)
