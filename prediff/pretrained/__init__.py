"""Pipelines shipped inside the package: they work offline, right after installation.

`prediff-storms-tiny` is a PreDiff pipeline (autoencoder, motion extrapolator, Earthformer-UNet denoiser of the
residual over the extrapolation, and knowledge-alignment network) trained with `prediff train` on the synthetic
storms of `prediff.data` (data seed 0). It forecasts 4 frames of 64x64 VIL (digital levels 0-255) from 4
context frames. Its folder holds `model_index.json`, one subfolder per component (configs and safetensors
weights), a model card `README.md` with the exact training commands and measured scores, and
`future_intensity.json`: the training distribution of the future mean intensity, which the
anticipated-intensity knowledge control uses for its `mu + n sigma` targets.

`prediff-radar-tiny` is the same architecture fine-tuned on real radar rain rate (FMI and KNMI composites from
pysteps' example archive, 2 km, 10 minutes) through pysteps' dB transform: 4 frames of 64x64 mm/h in, 4 out,
forecasting frames of any larger size by blended tiles.

`prediff-storms-fast` is `prediff-storms-tiny` with its denoiser distilled into a two-step student trained against
CRPS (`prediff train distill`) and its alignment network fine-tuned for that student: the same components otherwise,
sampled by default with Diffusers' `LCMScheduler` in 2 steps instead of 20 (1 to 4 work).

`earthformer-storms-tiny` is a deterministic Earthformer forecaster ([`EarthformerPipeline`]) trained on the same
storms with `prediff train earthformer`: the same 4 -> 4 frames of 64x64 VIL, one forecast per context.

Examples:

```py
>>> from prediff.pretrained import load_shipped_pipeline, shipped_intensity_stats
>>> pipe = load_shipped_pipeline()
>>> pipe.context_shape, pipe.forecast_shape
((4, 64, 64, 1), (4, 64, 64, 1))
>>> mu, sigma = shipped_intensity_stats()  # VIL units, 0-255
>>> earthformer = load_shipped_pipeline("earthformer-storms-tiny")  # an EarthformerPipeline
>>> radar = load_shipped_pipeline("prediff-radar-tiny")  # rain rate in mm/h
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # the pipeline module imports torch and diffusers; only load it when a pipeline is loaded
    import torch

    from ..pipelines import EarthformerPipeline, PreDiffPipeline

__all__ = [
    "DEFAULT_SHIPPED_PIPELINE",
    "SHIPPED_PIPELINES",
    "ShippedIntensityStats",
    "load_shipped_pipeline",
    "shipped_intensity_stats",
    "shipped_pipeline_path",
]

#: Names of the pipelines shipped with the package (folders next to this file) and the files each must hold.
SHIPPED_PIPELINE_FILES: dict[str, tuple[str, ...]] = {
    "prediff-storms-tiny": (
        "model_index.json",
        "vae/config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ),
    "earthformer-storms-tiny": (
        "model_index.json",
        "model/config.json",
        "model/diffusion_pytorch_model.safetensors",
    ),
    # The denoiser of prediff-storms-tiny distilled to 2 steps (`prediff train distill`), with its LCMScheduler.
    "prediff-storms-fast": (
        "model_index.json",
        "vae/config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ),
    "prediff-radar-tiny": (
        "model_index.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ),
}
SHIPPED_PIPELINES: tuple[str, ...] = tuple(SHIPPED_PIPELINE_FILES)
DEFAULT_SHIPPED_PIPELINE = "prediff-storms-tiny"

#: The file of a pipeline folder (shipped or trained) that records the training distribution of the future mean
#: intensity, in physical units (read by `shipped_intensity_stats` and `intensity.pipeline_intensity_stats`).
INTENSITY_STATS_FILE = "future_intensity.json"


class ShippedIntensityStats(NamedTuple):
    """Mean and standard deviation over the training sequences of the average intensity of their target
    frames, in the physical units of the pipeline (VIL 0-255). Anticipated intensities are
    `mean + n * std`."""

    mean: float
    std: float

    def target(self, n_sigma: float) -> float:
        """The anticipated average intensity `mean + n_sigma * std` (physical units)."""
        return float(self.mean + n_sigma * self.std)


def shipped_pipeline_path(name: str = DEFAULT_SHIPPED_PIPELINE) -> Path:
    """The folder of the shipped pipeline `name`, checked to hold a complete pipeline.

    Raises:
        ValueError: `name` is not one of `SHIPPED_PIPELINES`.
        FileNotFoundError: the folder or one of its components is missing (e.g. an installation made without
            the package data).
    """
    if name not in SHIPPED_PIPELINES:
        raise ValueError(f"name must be one of {SHIPPED_PIPELINES}, got {name!r}")
    folder = Path(__file__).resolve().parent / name
    missing = [part for part in SHIPPED_PIPELINE_FILES[name] if not (folder / part).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the shipped pipeline {name!r} is incomplete in {folder}: missing {', '.join(missing)} "
            "(the package was installed without its data files; reinstall prediff)"
        )
    return folder


def shipped_intensity_stats(name: str = DEFAULT_SHIPPED_PIPELINE) -> ShippedIntensityStats:
    """The training distribution `(mean, std)` of the future mean intensity of the shipped pipeline `name`,
    in physical units (read from its `future_intensity.json`)."""
    path = shipped_pipeline_path(name) / INTENSITY_STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the shipped pipeline {name!r} has no {INTENSITY_STATS_FILE} in {path.parent}")
    record: dict[str, Any] = json.loads(path.read_text())
    try:
        mean, std = float(record["mean"]), float(record["std"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} must hold numbers 'mean' and 'std', got {record!r}") from None
    return ShippedIntensityStats(mean, std)


def load_shipped_pipeline(
    name: str = DEFAULT_SHIPPED_PIPELINE,
    scheduler: str | None = None,
    torch_dtype: torch.dtype | None = None,
) -> PreDiffPipeline | EarthformerPipeline:
    """Load a pipeline shipped with the package (no network, safetensors only).

    Args:
        name: one of `SHIPPED_PIPELINES`.
        scheduler: PreDiff pipelines only: a [`~prediff.schedulers.prediff_scheduler`] name ("sde-dpmsolver++",
            "ddim", "ddpm", ...) replacing the saved one.
        torch_dtype: load the weights in this dtype (default float32).

    Returns:
        For `prediff-storms-tiny` and `prediff-storms-fast`, a [`PreDiffPipeline`] whose `__call__(context)`
        takes `(B, 4, 64, 64, 1)` VIL context frames (0-255) and returns `(B, M, 4, 64, 64, 1)` ensemble
        forecasts in the same units; for `earthformer-storms-tiny`, an [`EarthformerPipeline`] returning
        `(B, 4, 64, 64, 1)`.
    """
    from ..pipelines import EarthformerPipeline, PreDiffPipeline

    folder = shipped_pipeline_path(name)
    class_name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if class_name == "EarthformerPipeline":
        if scheduler is not None:
            raise ValueError(f"{name!r} is a deterministic Earthformer pipeline: it has no scheduler to replace")
        return EarthformerPipeline.from_pretrained(folder, torch_dtype=torch_dtype)
    kwargs: dict[str, Any] = {}
    if scheduler is not None:
        from ..schedulers import prediff_scheduler

        kwargs["scheduler"] = prediff_scheduler(scheduler)
    return PreDiffPipeline.from_pretrained(folder, torch_dtype=torch_dtype, **kwargs)
