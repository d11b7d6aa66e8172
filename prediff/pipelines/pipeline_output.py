"""Output dataclasses of the prediff pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput


@dataclass
class PreDiffPipelineOutput(BaseOutput):
    """
    Output of [`PreDiffPipeline`].

    Args:
        frames (`np.ndarray` or `torch.Tensor`):
            The ensemble forecast, shape `(batch_size, num_ensemble_members, T_out, H, W, C)` in the data's
            physical units (`output_type="np"` or `"pt"`), or the final latents `(batch_size,
            num_ensemble_members, T_out, h, w, c)` (`output_type="latent"`).
    """

    frames: np.ndarray | torch.Tensor


@dataclass
class EarthformerPipelineOutput(BaseOutput):
    """
    Output of [`EarthformerPipeline`].

    Args:
        frames (`np.ndarray` or `torch.Tensor`):
            The deterministic forecast, shape `(batch_size, T_out, H, W, C)` in the data's physical units.
    """

    frames: np.ndarray | torch.Tensor
