"""Write your own knowledge control: keep a region of the forecast below an intensity cap.

A control is a subclass of `prediff.knowledge.KnowledgeControl` whose `violation(state)` returns one
number `>= 0` per forecast row, differentiable in the noisy latents `state.latents`. The pipeline
differentiates it at every denoising step and, by default (form "x0"), moves the clean estimate by the
Gauss-Newton step that zeroes the violation to first order, so the finished forecast obeys the constraint.

Here the constraint is knowledge a forecaster might have, "the mean over this region stays below C" (e.g.
downstream of a dry air mass): the violation is `relu(regional mean - C)` for every future frame, measured
on the decoded current clean estimate `state.decode(state.pred_original_sample())` in physical units.

    python examples/custom_knowledge_control.py                # the shipped pipeline, 4 members, 20 steps
    python examples/custom_knowledge_control.py --cap 5 --scale 0.5   # close half the gap at every step
"""

from __future__ import annotations

import argparse

import torch

from prediff import SyntheticStormDataset
from prediff.knowledge import KnowledgeControl, KnowledgeControlState
from prediff.pretrained import load_shipped_pipeline


class RegionCapControl(KnowledgeControl):
    """Keep the mean intensity over a rectangle of every future frame at or below `cap`.

    Args:
        rows, cols (`slice`): the region, in pixels of the forecast frames.
        cap (`float`): the highest allowed regional mean, in physical units (VIL 0-255).
        scale (`float`): guidance strength.
    """

    def __init__(self, rows: slice, cols: slice, cap: float, scale: float = 1.0):
        super().__init__(scale=scale)
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        self.rows, self.cols, self.cap = rows, cols, float(cap)

    def region_mean(self, frames: torch.Tensor) -> torch.Tensor:
        """`(N, T, H, W, C)` frames -> `(N, T)` regional means."""
        return frames[:, :, self.rows, self.cols].mean(dim=(2, 3, 4))

    def violation(self, state: KnowledgeControlState) -> torch.Tensor:
        frames = state.decode(state.pred_original_sample())  # (N, T_out, H, W, C), physical units
        excess = torch.relu(self.region_mean(frames) - self.cap)  # (N, T_out)
        # The [0, 1] scale keeps the gradient size independent of the data's units.
        lo, hi = state.value_range
        return (excess / (hi - lo)).sum(dim=1)


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cap", type=float, default=10.0, help="highest allowed regional mean (VIL 0-255)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tiny", action="store_true", help="2 members, 4 steps (a quick check)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.members, args.steps = 2, 4

    pipe = load_shipped_pipeline()
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    # The sequence with the most rain among a few, so that the cap has something to do.
    storms = SyntheticStormDataset(8, T_in + T_out, H, W, seed=args.seed, progress=False)
    frames = max((storms[i]["frames"] for i in range(len(storms))), key=lambda f: float(f[T_in:].mean()))
    context = frames[None, :T_in].numpy() * 255.0

    # The quadrant of the frame with the most rain in the last observation.
    half_h, half_w = H // 2, W // 2
    quadrants = [(slice(r, r + half_h), slice(c, c + half_w)) for r in (0, half_h) for c in (0, half_w)]
    rows, cols = max(quadrants, key=lambda q: float(context[0, -1, q[0], q[1]].mean()))
    control = RegionCapControl(rows, cols, cap=args.cap, scale=args.scale)

    results = []
    for controls in ([], [control]):
        generator = torch.Generator().manual_seed(args.seed)
        forecast = pipe(
            context,
            num_inference_steps=args.steps,
            num_ensemble_members=args.members,
            generator=generator,
            knowledge_controls=controls,
        ).frames  # (1, M, T_out, H, W, 1)
        region = control.region_mean(torch.from_numpy(forecast[0])).mean().item()
        results.append(region)
        print(f"{'with' if controls else 'without'} the cap: regional mean {region:6.2f} (cap {args.cap:g})")
    return results[0], results[1]


if __name__ == "__main__":
    main()
