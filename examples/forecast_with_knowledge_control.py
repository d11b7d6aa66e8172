"""Ensemble forecasts with and without knowledge control, using the pipeline shipped with prediff.

The anticipated-intensity control tells PreDiff how much rain to expect: it steers every denoising step so
that the mean intensity of the forecast approaches an anticipated value, given here as `mu + n sigma` of the
training distribution of the future mean intensity (PreDiff's what-if experiments, n in -4, -2, 0, 2, 4).

    python examples/forecast_with_knowledge_control.py                      # 8 members, 20 steps
    python examples/forecast_with_knowledge_control.py --out what_if.png    # also draw the what-if figure
    python examples/forecast_with_knowledge_control.py --pipeline runs/my-denoiser --method learned

`--pipeline` takes any PreDiffPipeline folder (e.g. the output of `prediff train denoiser`); the default method
"analytic" steers the decoded clean estimate, so it works for pipelines without a knowledge_model; `--method
learned` uses the pipeline's alignment network instead (cheaper per step, as accurate as the network).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from prediff import AnticipatedIntensityControl, PreDiffPipeline, SyntheticStormDataset
from prediff.pretrained import load_shipped_pipeline, shipped_intensity_stats
from prediff.utils.units import to_physical


def main(argv: list[str] | None = None) -> dict[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=None, help="a PreDiffPipeline folder (default: the shipped one)")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the remaining gap closed at every step (default 1)"
    )
    parser.add_argument("--method", choices=("learned", "analytic"), default="analytic")
    parser.add_argument("--seed", type=int, default=7, help="seed of the storm sequence and the noise")
    parser.add_argument("--out", default=None, help="write the what-if figure to this PNG")
    parser.add_argument("--tiny", action="store_true", help="2 members, 4 steps (a quick check)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.members, args.steps = 2, 4

    # 1. The pipeline and the distribution of the future mean intensity it was trained on (VIL 0-255).
    if args.pipeline is None:
        pipe = load_shipped_pipeline()
        mu, sigma = shipped_intensity_stats()
    else:
        pipe = PreDiffPipeline.from_pretrained(args.pipeline)
        T_in, H, W, _ = pipe.context_shape
        stats = SyntheticStormDataset(64, T_in + pipe.forecast_shape[0], H, W, seed=0, progress=False)
        mu, sigma = stats.future_intensity_stats(context_length=T_in)  # in the [0, 1] scale of the data set
        lo, hi = pipe.value_range
        # The mean is a value, mapped to physical units; the spread is a difference of values, only scaled.
        mu, sigma = to_physical(mu, pipe.value_range), sigma * (hi - lo)
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]

    # 2. A storm sequence: the context the forecast starts from and the future it should have predicted.
    item = SyntheticStormDataset(1, T_in + T_out, H, W, seed=args.seed, progress=False)[0]["frames"]
    frames = item.numpy()[None] * 255.0  # (1, T, H, W, 1), VIL 0-255
    context, future = frames[:, :T_in], frames[:, T_in:]
    print(f"observed future mean intensity: {future.mean():.2f} (training mu = {mu:.2f}, sigma = {sigma:.2f})")

    # 3. Without control.
    generator = torch.Generator().manual_seed(args.seed)
    plain = pipe(context, num_inference_steps=args.steps, num_ensemble_members=args.members, generator=generator)
    print(f"no control:         forecast mean intensity {plain.frames.mean():7.2f}")

    # 4. With control, one anticipated intensity per row: the context repeated for every n.
    n_sigmas = (-4.0, -2.0, 0.0, 2.0, 4.0)
    # One target per context (a single number would apply to every row). The intensity distribution is skewed,
    # so mu - 2 sigma may be negative: targets are clipped to the physical range.
    lo, hi = pipe.value_range
    targets = [min(max(mu + n * sigma, lo), hi) for n in n_sigmas]
    control = AnticipatedIntensityControl(target=targets, scale=args.scale, method=args.method)
    generator = torch.Generator().manual_seed(args.seed)
    steered = pipe(
        np.repeat(context, len(n_sigmas), axis=0),
        num_inference_steps=args.steps,
        num_ensemble_members=args.members,
        generator=generator,
        knowledge_controls=[control],
    ).frames  # (5, M, T_out, H, W, 1)
    achieved = {}
    for n, target, forecast in zip(n_sigmas, targets, steered):
        achieved[n] = float(forecast.mean())
        print(f"anticipated mu {n:+g} sigma -> {target:7.2f}: forecast mean intensity {achieved[n]:7.2f}")

    if args.out:
        from prediff.visualization import plot_what_if

        plot_what_if(
            context[0],
            {n: forecast[0] for n, forecast in zip(n_sigmas, steered)},
            mu=mu,
            sigma=sigma,
            target=future[0],
            uncontrolled=plain.frames[0, 0],
            path=args.out,
        )
        print(f"wrote {args.out}")
    return achieved


if __name__ == "__main__":
    main()
