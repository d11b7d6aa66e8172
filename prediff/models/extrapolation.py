"""Lagrangian extrapolation in torch: the motion the context already shows, carried forward.

A forecaster's strongest simple baseline advects the last observed frame along the motion of the last few
(pysteps' "extrapolation"). `MotionExtrapolator` does the same without pysteps, on any device, batched:

1. **Motion.** A smooth motion field `v` (pixels per frame) on a coarse grid of control points, upsampled
   bilinearly, is fitted to the last `motion_frames` frames by minimising the backward-warping error
   `sum_k ||I_{k+1}(x) - I_k(x - v(x))||^2` plus a smoothness penalty on neighbouring control points, with Adam.
   A coarse grid suits radar: storms move with the large-scale flow, and the grid cannot chase noise.
2. **Advection.** Semi-Lagrangian: for lead `n`, every pixel follows the backward trajectory
   `x_{j+1} = x_j - v(x_j)` for `n` steps and takes the last frame's value there; points that come from outside
   the domain carry no information and get 0 (dry), as in pysteps.

It has no learned weights: it is a `ModelMixin` so that a pipeline moves, saves and loads it like any other
component; its folder holds only a `config.json`.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .modeling_utils import check_sequence

__all__ = ["MotionExtrapolator", "advect", "warp"]

#: The keyword arguments of `from_pretrained` that say where the config is; the rest (dtype, device map, ...)
#: concern weights, which this model has none of.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")


def _pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """`(H, W, 2)` pixel coordinates `(x, y)` of every pixel centre."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)


def warp(images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `images` `(N, C, H, W)` at pixel `positions` `(N, H, W, 2)` (x, y); 0 outside."""
    height, width = images.shape[-2:]
    grid = torch.stack(
        [positions[..., 0] * (2 / max(width - 1, 1)) - 1, positions[..., 1] * (2 / max(height - 1, 1)) - 1], dim=-1
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def advect(last_frame: torch.Tensor, motion: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Semi-Lagrangian extrapolation.

    Args:
        last_frame: `(N, C, H, W)` the frame to carry forward.
        motion: `(N, 2, H, W)` motion in pixels per frame, x then y.
        num_frames: leads to produce.

    Returns:
        `(N, num_frames, C, H, W)`: the frame advected 1, 2, ... `num_frames` steps.
    """
    n, _, height, width = last_frame.shape
    positions = _pixel_grid(height, width, last_frame.device).expand(n, height, width, 2)
    frames = []
    for _ in range(num_frames):
        # The velocity is read where the trajectory is now: curved paths follow rotating flows.
        positions = positions - warp(motion, positions).permute(0, 2, 3, 1)
        frames.append(warp(last_frame, positions))
    return torch.stack(frames, dim=1)


class MotionExtrapolator(ModelMixin, ConfigMixin):
    r"""
    Extrapolation of a `(B, T, H, W, C)` sequence along its own motion (see the module docstring). Frames are
    in scaled units (0 = dry); the motion is fitted to the mean over channels and every channel is advected.

    Parameters:
        motion_frames (`int`, defaults to 2): how many of the last frames the motion is fitted to.
        grid_spacing (`int`, defaults to 8): pixels between the motion field's control points.
        num_iterations (`int`, defaults to 50): Adam iterations of the motion fit.
        learning_rate (`float`, defaults to 1.0): Adam step, in pixels per frame.
        smoothness (`float`, defaults to 10.0): weight of the smoothness penalty (relative to the warping error
            of [0, 1] frames, times 1e-4).
    """

    #: No weights file is saved (the state dict is empty); the check of a saved pipeline folder reads this
    #: (`prediff.pipelines.loading.carries_weights`) and wants only its config.json.
    has_weights: ClassVar[bool] = False

    @register_to_config
    def __init__(
        self,
        motion_frames: int = 2,
        grid_spacing: int = 8,
        num_iterations: int = 50,
        learning_rate: float = 1.0,
        smoothness: float = 10.0,
    ):
        super().__init__()
        for name, value in (("motion_frames", motion_frames), ("grid_spacing", grid_spacing)):
            if not isinstance(value, int) or value < (2 if name == "motion_frames" else 1):
                raise ValueError(f"{name} must be an int >= {2 if name == 'motion_frames' else 1}, got {value!r}")
        if not isinstance(num_iterations, int) or num_iterations < 0:
            raise ValueError(f"num_iterations must be an int >= 0, got {num_iterations!r}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        if not (math.isfinite(smoothness) and smoothness >= 0):
            raise ValueError(f"smoothness must be a number >= 0, got {smoothness!r}")
        # Diffusers reads a model's device and dtype from its first parameter or buffer; this empty, unsaved
        # buffer gives them to a model without weights.
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
    ) -> MotionExtrapolator:
        """Load the settings saved by `save_pretrained` (a `config.json`; there are no weights to read)."""
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder, **hub_kwargs)
        return cls.from_config(config)

    def control_grid(self, height: int, width: int) -> tuple[int, int]:
        """Control points `(rows, columns)` of the motion field of `height x width` frames."""
        spacing = self.config.grid_spacing
        return max(2, round(height / spacing)), max(2, round(width / spacing))

    def estimate_motion(self, frames: torch.Tensor) -> torch.Tensor:
        """Motion `(B, 2, H, W)` in pixels per frame (x, y) of frames `(B, T, H, W, C)`, `T >= motion_frames`."""
        check_sequence("frames", frames, (None, None, None, None, None))
        batch, length, height, width, _ = frames.shape
        count = self.config.motion_frames
        if length < count:
            raise ValueError(f"the motion fit needs {count} frames (motion_frames), got {length}")
        images = frames[:, -count:].float().mean(dim=-1).detach()
        earlier = images[:, :-1].reshape(-1, 1, height, width)
        later = images[:, 1:].reshape(-1, 1, height, width)
        grid = _pixel_grid(height, width, frames.device)
        rows, cols = self.control_grid(height, width)
        with torch.enable_grad():
            control = torch.zeros(batch, 2, rows, cols, device=frames.device, requires_grad=True)
            optimizer = torch.optim.Adam([control], lr=self.config.learning_rate)
            smoothness = self.config.smoothness * 1e-4
            for _ in range(self.config.num_iterations):
                motion = F.interpolate(control, size=(height, width), mode="bilinear", align_corners=True)
                motion = motion.repeat_interleave(count - 1, dim=0).permute(0, 2, 3, 1)
                # Summed (not averaged) over the batch: every sample's fit is then independent of the others.
                error = (warp(earlier, grid - motion) - later).pow(2).mean(dim=(1, 2, 3)).sum()
                roughness = (
                    control.diff(dim=-1).pow(2).mean(dim=(1, 2, 3)) + control.diff(dim=-2).pow(2).mean(dim=(1, 2, 3))
                ).sum()
                optimizer.zero_grad(set_to_none=True)
                (error + smoothness * roughness).backward()
                optimizer.step()
        return F.interpolate(control.detach(), size=(height, width), mode="bilinear", align_corners=True)

    def forward(self, frames: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The last frame of `frames` `(B, T, H, W, C)` advected `1 ... num_frames` steps along their motion:
        `(B, num_frames, H, W, C)`, same dtype, clipped below at 0."""
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        motion = self.estimate_motion(frames)
        last = frames[:, -1].float().permute(0, 3, 1, 2)
        advected = advect(last, motion, num_frames).permute(0, 1, 3, 4, 2)
        return advected.clamp(min=0).to(frames.dtype)
