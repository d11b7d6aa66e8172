"""Forecast your own radar data: an xarray-readable file (zarr or netCDF) in, an ensemble file out.

The input holds one variable with dimensions `(time, y, x)` in the units the pipeline was trained on (for
the shipped pipeline: VIL digital levels 0-255 on 64x64 pixels at 10-minute steps). The last `T_in` frames
are the context; larger frames are cropped around their centre. The output has dimensions
`(member, time, y, x)`, the forecast times continuing the input's time step, and records units, scaling and
the pipeline in its attributes. It is written atomically, as zarr (a `.zarr` path) or netCDF (anything
else), and never replaces an existing file unless `--overwrite` is given.

    python examples/forecast_own_data.py radar.zarr --variable vil --out forecast.zarr
    python examples/forecast_own_data.py radar.nc --variable vil --out forecast.nc --members 16 --steps 25
    python examples/forecast_own_data.py radar.zarr --pipeline runs/my-denoiser --out forecast.zarr

Reading a file:

    >>> import xarray as xr
    >>> forecast = xr.open_zarr("forecast.zarr")["vil"]      # (member, time, y, x)
    >>> forecast.mean("member").isel(time=-1).plot()          # the ensemble mean at the last lead time

Needs the data extra: `pip install "prediff[data]"`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prediff import PreDiffPipeline
from prediff.pretrained import load_shipped_pipeline
from prediff.utils.files import atomic_output


def _xarray() -> Any:
    try:
        import xarray as xr
    except ImportError as error:
        raise ImportError('reading and writing xarray data needs: pip install "prediff[data]"') from error
    return xr


def open_dataset(path: Path) -> Any:
    """An xarray Dataset from a zarr store or a netCDF file."""
    xr = _xarray()
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.suffix == ".zarr" or (path / ".zgroup").exists() or (path / "zarr.json").exists():
        return xr.open_zarr(path)
    return xr.open_dataset(path)


def read_context(path: Path, variable: str, num_frames: int, height: int, width: int) -> tuple[Any, np.ndarray]:
    """The last `num_frames` frames of `variable`, cropped to `height x width`: the DataArray and the context
    `(1, num_frames, height, width, 1)` as float32."""
    ds = open_dataset(path)
    if variable not in ds.data_vars:
        raise ValueError(f"variable must be one of {sorted(ds.data_vars)} in {str(path)!r}, got {variable!r}")
    da = ds[variable]
    if da.dims != ("time", "y", "x"):
        raise ValueError(f"{variable!r} must have dimensions ('time', 'y', 'x'), got {da.dims}")
    if da.sizes["time"] < num_frames:
        raise ValueError(f"{variable!r} must hold at least {num_frames} time steps, got {da.sizes['time']}")
    if da.sizes["y"] < height or da.sizes["x"] < width:
        raise ValueError(
            f"{variable!r} frames must be at least {height}x{width} pixels, got {da.sizes['y']}x{da.sizes['x']}"
        )
    top, left = (da.sizes["y"] - height) // 2, (da.sizes["x"] - width) // 2
    da = da.isel(time=slice(-num_frames, None), y=slice(top, top + height), x=slice(left, left + width))
    context = np.asarray(da.values, dtype=np.float32)[None, ..., None]
    return da, context


def write_forecast(frames: np.ndarray, template: Any, variable: str, attrs: dict, out: Path, overwrite: bool) -> None:
    """Write `(M, T_out, H, W)` forecast frames with the coordinates of `template` (the context DataArray)."""
    xr = _xarray()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    times = template["time"].values
    if len(times) >= 2:
        step = times[-1] - times[-2]
        new_times = times[-1] + step * np.arange(1, frames.shape[1] + 1)
    else:
        new_times = np.arange(1, frames.shape[1] + 1)
    da = xr.DataArray(
        frames.astype(np.float32),
        dims=("member", "time", "y", "x"),
        coords={
            "member": np.arange(frames.shape[0]),
            "time": new_times,
            "y": template["y"],
            "x": template["x"],
        },
        attrs=attrs,
        name=variable,
    )
    # Written next to the destination, then moved into place, so a failure never leaves half a file.
    zarr = out.suffix == ".zarr"
    with atomic_output(out, overwrite=overwrite, directory=zarr, make_parents=False) as tmp:
        if zarr:
            da.to_dataset().to_zarr(tmp, mode="w")
        else:
            da.to_dataset().to_netcdf(tmp)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="zarr store or netCDF file with a (time, y, x) variable")
    parser.add_argument("--variable", default="vil")
    parser.add_argument("--out", type=Path, required=True, help="output .zarr or .nc")
    parser.add_argument("--pipeline", default=None, help="a PreDiffPipeline folder (default: the shipped one)")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="2 members, 4 steps (a quick check)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.members, args.steps = 2, 4

    pipe = load_shipped_pipeline() if args.pipeline is None else PreDiffPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    T_in, H, W, _ = pipe.context_shape
    template, context = read_context(args.input, args.variable, T_in, H, W)
    lo, hi = pipe.value_range
    if context.min() < lo or context.max() > hi:
        raise ValueError(
            f"{args.variable!r} must lie in the pipeline's value range [{lo:g}, {hi:g}], "
            f"got [{context.min():g}, {context.max():g}]"
        )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{str(args.out)!r} already exists; pass --overwrite to replace it")

    generator = torch.Generator().manual_seed(args.seed)
    frames = pipe(context, num_inference_steps=args.steps, num_ensemble_members=args.members, generator=generator)
    forecast = frames.frames[0, ..., 0]  # (M, T_out, H, W)
    attrs = {
        "units": pipe.config.get("units") or template.attrs.get("units", ""),
        "value_range": [lo, hi],
        "scaling": f"the models see (x - {lo:g}) / ({hi:g} - {lo:g}); values are in physical units",
        "source": f"PreDiffPipeline {pipe.config.get('_name_or_path', '')}",
        "num_inference_steps": args.steps,
        "seed": args.seed,
    }
    write_forecast(forecast, template, args.variable, attrs, args.out, args.overwrite)
    print(f"wrote {forecast.shape[0]} members x {forecast.shape[1]} frames to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
