"""Optical-flow baselines through pysteps: Lagrangian extrapolation and the STEPS ensemble.

Both estimate a motion field from the last context frames (pysteps' optical-flow methods), then

- ``extrapolation``: advect the last frame along it (semi-Lagrangian), a deterministic forecast;
- ``steps``: run STEPS (Bowler et al. 2006; Seed et al. 2013), which advects a cascade of spatial scales,
  lets each evolve by an AR(2) process and adds stochastic noise and motion perturbations, giving an
  ensemble. STEPS works on log values: pixels ``>= wet_threshold`` become ``10 log10(x)`` decibels,
  drier ones a value 5 dB lower, as pysteps' ``dB_transform`` does; the result is transformed back and
  pixels below ``wet_threshold`` set to 0.

Pixels advected in from beyond the domain have no information; they are set to 0 (dry). Results are clipped
to ``value_range`` (VIL 0-255 by default). Works per sample and per channel, on the CPU, with numpy.
pysteps is optional: ``pip install "prediff[pysteps]"``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.checks import to_numpy
from .persistence import ArrayLike, check_context

#: How many of the last context frames each motion method uses by default.
MOTION_FRAMES = {"proesmans": 2, "lucaskanade": 3, "farneback": 2, "vet": 3, "darts": 9, "constant": 2}


def _import_pysteps() -> Any:
    try:
        # pysteps prints where it found its configuration file on import.
        with contextlib.redirect_stdout(io.StringIO()):
            import pysteps
            import pysteps.motion
            import pysteps.nowcasts
            import pysteps.utils
    except ImportError as err:  # pragma: no cover - exercised only without pysteps
        raise ImportError('The optical-flow and STEPS baselines need pysteps: pip install "prediff[pysteps]"') from err
    return pysteps


def _like(result: np.ndarray, context: ArrayLike) -> ArrayLike:
    """``result`` as the type of ``context``: a tensor on its device, or a float array of its precision."""
    if isinstance(context, torch.Tensor):
        dtype = context.dtype if context.is_floating_point() else torch.float32
        return torch.from_numpy(result).to(device=context.device, dtype=dtype)
    dtype = context.dtype if np.issubdtype(context.dtype, np.floating) else np.float32
    return result.astype(dtype)


def proesmans_levels(shape: tuple[int, int], most: int = 6) -> int:
    """Levels of the image pyramid pysteps' Proesmans method may use on frames of ``shape`` (H, W): at most ``most``
    (its default), and few enough that the coarsest level is at least 2 x 2 pixels. On a 1-pixel level pysteps' kernel
    reads outside its arrays (it copies each edge from the next row in), and the motion field becomes whatever
    memory lay there: now and then 1e+232 pixels per frame on 48 x 48 frames."""
    size = min(shape)
    if size < 2:
        raise ValueError(f"optical flow needs frames of at least 2 x 2 pixels, got {tuple(shape)}")
    levels = 1
    while levels < most and size // 2 >= 2:
        size //= 2
        levels += 1
    return levels


def estimate_motion(
    frames: np.ndarray, motion_method: str = "proesmans", motion_frames: int | None = None
) -> np.ndarray:
    """Motion field ``(2, H, W)`` (pixels per frame, x then y) from frames ``(T_in, H, W)`` with pysteps."""
    pysteps = _import_pysteps()
    n = MOTION_FRAMES.get(motion_method, 2) if motion_frames is None else motion_frames
    if not 2 <= n <= frames.shape[0]:
        raise ValueError(
            f"motion_frames must be in [2, T_in={frames.shape[0]}] for {motion_method!r}, got {n}; "
            "give a longer context or fewer motion frames"
        )
    try:
        method = pysteps.motion.get_method(motion_method)
    except ValueError as err:
        raise ValueError(f"unknown motion_method {motion_method!r}: {err}") from err
    with contextlib.redirect_stdout(io.StringIO()):
        if motion_method == "proesmans":
            velocity = method(frames[-n:], num_levels=proesmans_levels(frames.shape[1:]), verbose=False)
        else:
            velocity = method(frames[-n:])
    return np.nan_to_num(np.asarray(velocity, dtype=np.float64))


def _motion_input(frames: np.ndarray, db_threshold: float | None) -> np.ndarray:
    """The frames the motion is estimated on: as they are, or, with ``db_threshold``, pysteps' dB transform of them
    (``10 log10(x)`` from the threshold on, 5 dB below the threshold's value under it), as pysteps' examples
    estimate the motion of rain rate."""
    if db_threshold is None:
        return frames
    if not db_threshold > 0:
        raise ValueError(f"motion_db_threshold must be > 0 (the dB transform needs it), got {db_threshold}")
    from pysteps.utils import transformation

    metadata = {"transform": None, "unit": "", "threshold": db_threshold, "zerovalue": 0.0}
    return transformation.dB_transform(frames, metadata, threshold=db_threshold)[0]


def _check_range(value_range: tuple[float, float] | None) -> None:
    if value_range is not None and not value_range[0] < value_range[1]:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")


def _finish(field: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    field = np.nan_to_num(field, nan=0.0, posinf=0.0, neginf=0.0)
    return field if value_range is None else np.clip(field, *value_range)


def extrapolation(
    context: ArrayLike,
    num_frames: int,
    motion_method: str = "proesmans",
    motion_frames: int | None = None,
    value_range: tuple[float, float] | None = (0.0, 255.0),
    motion_db_threshold: float | None = None,
) -> ArrayLike:
    """Advect the last context frame along the optical flow of the last few.

    Args:
        context: ``(B, T_in, H, W, C)`` observed sequence, e.g. VIL 0-255.
        num_frames: frames to forecast (at the context's frame interval).
        motion_method: a pysteps optical-flow method: "proesmans" (default, no extra dependency),
            "lucaskanade" or "farneback" (need OpenCV), "vet", "darts".
        motion_frames: how many of the last frames the motion estimate uses (method default if None).
        value_range: clip the forecast to it (None: no clipping).
        motion_db_threshold: estimate the motion on the dB transform of the context with this threshold (data
            units, e.g. 0.1 mm/h for rain rate, as pysteps' examples do) instead of on the values as they are.

    Returns:
        ``(B, num_frames, H, W, C)`` of the type and device of ``context``.
    """
    check_context(context, num_frames)
    _check_range(value_range)
    pysteps = _import_pysteps()
    data = to_numpy(context).astype(np.float64, copy=False)
    b, _, h, w, c = data.shape
    out = np.zeros((b, num_frames, h, w, c))
    forecast = pysteps.nowcasts.get_method("extrapolation")
    for i in range(b):
        for k in range(c):
            frames = data[i, :, :, :, k]
            velocity = estimate_motion(_motion_input(frames, motion_db_threshold), motion_method, motion_frames)
            with contextlib.redirect_stdout(io.StringIO()):
                result = forecast(frames[-1], velocity, num_frames, extrap_kwargs={"outval": 0.0})
            out[i, :, :, :, k] = _finish(result, value_range)
    return _like(out, context)


def steps(
    context: ArrayLike,
    num_frames: int,
    num_members: int = 8,
    motion_method: str = "proesmans",
    motion_frames: int | None = None,
    wet_threshold: float = 1.0,
    num_cascade_levels: int = 6,
    km_per_pixel: float = 3.0,
    timestep_minutes: float = 10.0,
    value_range: tuple[float, float] | None = (0.0, 255.0),
    seed: int = 0,
    show_progress: bool = True,
    motion_db_threshold: float | None = None,
) -> ArrayLike:
    """STEPS ensemble nowcast.

    Args:
        context: ``(B, T_in, H, W, C)`` observed sequence with ``T_in >= 3`` (STEPS' AR(2) needs 3 frames).
        num_frames: frames to forecast.
        num_members: ensemble size M.
        motion_method, motion_frames: optical flow, as in :func:`extrapolation`.
        wet_threshold: smallest value counted as precipitation (data units; VIL 0-255 by default).
        num_cascade_levels: spatial scales of the cascade (fewer for small frames).
        km_per_pixel, timestep_minutes: grid spacing and frame interval, for the motion perturbations
            (SEVIR-LR: 3 km, 10 minutes).
        value_range: clip the forecast to it (None: no clipping).
        seed: seed of the random numbers; sample ``i``, channel ``k`` uses ``seed + i * C + k``.
        show_progress: show a progress bar over samples.
        motion_db_threshold: estimate the motion on the dB transform of the context, as in :func:`extrapolation`.

    Returns:
        ``(B, num_members, num_frames, H, W, C)`` of the type and device of ``context``.
    """
    check_context(context, num_frames)
    _check_range(value_range)
    if context.shape[1] < 3:
        raise ValueError(f"STEPS needs at least 3 context frames, got shape {tuple(context.shape)}")
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}")
    if not wet_threshold > 0:
        raise ValueError(f"wet_threshold must be > 0 (the log transform needs it), got {wet_threshold}")
    pysteps = _import_pysteps()
    from pysteps.utils import transformation

    data = to_numpy(context).astype(np.float64, copy=False)
    b, _, h, w, c = data.shape
    out = np.zeros((b, num_members, num_frames, h, w, c))
    nowcast = pysteps.nowcasts.get_method("steps")
    jobs = [(i, k) for i in range(b) for k in range(c)]
    for i, k in tqdm(jobs, desc="STEPS", disable=not show_progress or len(jobs) < 2):
        frames = data[i, :, :, :, k]
        if not (frames[-3:] >= wet_threshold).any():
            # Nothing to advect or perturb: the forecast stays dry. (pysteps' cascade of a constant field divides
            # by its zero spread, and its result is then not even reproducible.)
            out[i, :, :, :, :, k] = _finish(np.zeros((num_members, num_frames, h, w)), value_range)
            continue
        velocity = estimate_motion(_motion_input(frames, motion_db_threshold), motion_method, motion_frames)
        metadata = {"transform": None, "unit": "", "threshold": wet_threshold, "zerovalue": 0.0}
        log_frames, log_meta = transformation.dB_transform(frames[-3:], metadata, threshold=wet_threshold)
        with contextlib.redirect_stdout(io.StringIO()):
            result = nowcast(
                log_frames,
                velocity,
                num_frames,
                n_ens_members=num_members,
                n_cascade_levels=num_cascade_levels,
                precip_thr=log_meta["threshold"],
                kmperpixel=km_per_pixel,
                timestep=timestep_minutes,
                seed=seed + i * c + k,
            )
        values, _ = transformation.dB_transform(np.asarray(result), log_meta, inverse=True)
        values = np.where(values >= wet_threshold, values, 0.0)
        out[i, :, :, :, :, k] = _finish(values, value_range)
    return _like(out, context)
