"""Augmentation of the official PreDiff training (``aug_mode "2"``): random flips and quarter turns.

The same transform is applied to every frame of a window, so motion stays physically consistent (a flipped
storm still moves smoothly).
"""

from __future__ import annotations

from typing import Any

import torch


def flip_rotate(frames: torch.Tensor, hflip: bool, vflip: bool, quarter_turns: int) -> torch.Tensor:
    """Flip and rotate every frame of a channels-last sequence.

    Args:
        frames: (..., T, H, W, C); the spatial axes are -3 (H) and -2 (W).
        hflip: mirror left-right (along W); applied first.
        vflip: mirror top-bottom (along H); applied second.
        quarter_turns: counter-clockwise rotation by ``90 * quarter_turns`` degrees, applied last (H and W
            swap for odd values).
    """
    if frames.ndim < 4:
        raise ValueError(
            f"frames must be (..., T, H, W, C) with at least 4 dimensions, got shape {tuple(frames.shape)}"
        )
    if hflip:
        frames = torch.flip(frames, dims=(-2,))
    if vflip:
        frames = torch.flip(frames, dims=(-3,))
    if quarter_turns % 4:
        frames = torch.rot90(frames, k=quarter_turns % 4, dims=(-3, -2))
    return frames


class RandomFlipRotate:
    """Random horizontal flip, vertical flip and quarter-turn rotation, identical on all frames of a window.

    Call it on an item dict (it transforms ``"frames"`` and records the choice under ``"augmentation"``) or on
    a (T, H, W, C) tensor. Pass it as ``transform=`` to any prediff data set. Rotations by 90 or 270 degrees
    swap H and W, so ``rotate=True`` needs square frames.

    Args:
        p_hflip (`float`, defaults to 0.5): probability of a left-right flip.
        p_vflip (`float`, defaults to 0.5): probability of a top-bottom flip.
        rotate (`bool`, defaults to True): rotate by 0, 90, 180 or 270 degrees, uniformly.
        generator (`torch.Generator`, *optional*): source of randomness; the global torch RNG by default
            (which ``DataLoader`` seeds differently in every worker).
    """

    def __init__(
        self,
        p_hflip: float = 0.5,
        p_vflip: float = 0.5,
        rotate: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, p in (("p_hflip", p_hflip), ("p_vflip", p_vflip)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        self.p_hflip, self.p_vflip, self.rotate = float(p_hflip), float(p_vflip), bool(rotate)
        self.generator = generator

    def sample(self) -> tuple[bool, bool, int]:
        """Draw (hflip, vflip, quarter_turns)."""
        draws = torch.rand(2, generator=self.generator)
        turns = int(torch.randint(0, 4, (1,), generator=self.generator)) if self.rotate else 0
        return bool(draws[0] < self.p_hflip), bool(draws[1] < self.p_vflip), turns

    def __call__(self, item: Any) -> Any:
        frames = item["frames"] if isinstance(item, dict) else item
        if self.rotate and frames.shape[-3] != frames.shape[-2]:
            raise ValueError(f"rotate=True needs square frames, got H x W = {frames.shape[-3]} x {frames.shape[-2]}")
        hflip, vflip, turns = self.sample()
        out = flip_rotate(frames, hflip, vflip, turns).contiguous()
        if not isinstance(item, dict):
            return out
        return {**item, "frames": out, "augmentation": torch.tensor([int(hflip), int(vflip), turns])}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p_hflip={self.p_hflip}, p_vflip={self.p_vflip}, rotate={self.rotate})"
