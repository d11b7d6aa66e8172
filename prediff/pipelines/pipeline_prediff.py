"""PreDiffPipeline: latent-diffusion ensemble forecasts of `(B, T, H, W, C)` sequences with knowledge
control."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..knowledge import KnowledgeControl, KnowledgeControlState, knowledge_gradients
from ..models.alignment import KnowledgeAlignmentModel
from ..models.autoencoder import (
    AUTOENCODER_CLASSES,
    Autoencoder,
    autoencoder_from_preset,
    decode_sequence,
    encode_sequence,
)
from ..models.earthformer_unet import EarthformerUNetModel
from ..models.extrapolation import MotionExtrapolator
from ..schedulers import (
    PREDIFF_NOISE_SCHEDULE,
    default_inference_steps,
    prediff_scheduler,
    prediff_training_scheduler,
    record_portable_settings,
)
from ..utils.checks import check_cap_radius, check_intensity_growth, check_positive_int
from .intensity_cap import intensity_cap, radius_in_pixels
from .pipeline_output import PreDiffPipelineOutput
from .pipeline_utils import ForecastPipelineMixin, count_parameters, forecast_call, to_context_tensor

__all__ = ["PREDIFF_PIPELINE_PRESETS", "Extrapolation", "PreDiffPipeline"]

OUTPUT_TYPES = ("np", "pt", "latent")

#: The chunk sizes that `unet_chunk_size = "auto"` (rows per denoiser call) and `vae_chunk_size = "auto"` (frames
#: per autoencoder call) pick. On a CPU, calls this small keep their activations in cache: 8 rows and 32 frames
#: were 1.4x and 1.9x faster than 32 rows and 64 frames on a 2-core CPU. On an accelerator, larger calls keep it
#: busy while still bounding memory.
AUTO_CHUNK_SIZES = {"cpu": {"unet": 8, "vae": 32}, "accelerator": {"unet": 32, "vae": 64}}

#: Pipeline presets: each component is a preset name of its class or the keyword arguments of its constructor.
PREDIFF_PIPELINE_PRESETS: dict[str, dict[str, Any]] = {
    "prediff-sevirlr": dict(
        vae="prediff-sevirlr",
        unet="prediff-sevirlr",
        knowledge_model="prediff-sevirlr-avg-intensity",
        value_range=(0.0, 255.0),
        units="VIL (vertically integrated liquid), 0-255 as stored in SEVIR",
        training_data="SEVIR-LR: SEVIR VIL at 128x128 (3x3 block maxima of 384x384), every 2nd frame "
        "(10 minutes); "
        "7 context + 6 target frames, events before 2019-06-01",
    ),
    # 32x32 frames, 3 context + 2 target frames, ~0.3 M parameters: for tests and demos.
    "prediff-tiny": dict(
        vae="prediff-tiny",
        unet=dict(input_shape=(3, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1), num_heads=2),
        knowledge_model=dict(
            input_shape=(2, 8, 8, 4),
            out_channels=1,
            base_units=16,
            depth=(1, 1),
            num_heads=2,
            pool_heads_channels=8,
        ),
        value_range=(0.0, 255.0),
    ),
}


def _check_default_steps(value: dict[str, int] | None) -> dict[str, int] | None:
    """`default_inference_steps`: None or a mapping of scheduler class names to positive step counts."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and isinstance(steps, int) and not isinstance(steps, bool) and steps > 0
        for name, steps in value.items()
    ):
        raise ValueError(
            "default_inference_steps must map scheduler class names to positive step counts, e.g. "
            f'{{"LCMScheduler": 1}}, got {value!r}'
        )
    return dict(value)


def control_list(knowledge_controls: Any) -> list[KnowledgeControl]:
    """The `knowledge_controls` argument of a forecast (None, one control, a list or tuple of them) as a list."""
    if knowledge_controls is None:
        return []
    if isinstance(knowledge_controls, KnowledgeControl):
        return [knowledge_controls]
    if isinstance(knowledge_controls, (list, tuple)):
        return list(knowledge_controls)
    raise ValueError(
        "knowledge_controls must be a KnowledgeControl or a list of them, got "
        f"{type(knowledge_controls).__name__} (wrap a function of the forecast in FunctionControl(fn))"
    )


class Extrapolation(NamedTuple):
    """The extrapolation of the contexts, one row per forecast row.

    Args:
        frames: `(N, T_out, H, W, C)` the extrapolated frames in the networks' [0, 1] scale.
        latents: `(N, T_out, h, w, c)` their scaled posterior-mean latents, the offset of the diffusion latents.
        decoded: `(N, T_out, H, W, C)` those latents decoded, in the [0, 1] scale.

    The residual arithmetic happens on the [0, 1] scale, before the value transform back to physical units: with
    a nonlinear transform (rain rate in dB) a difference of physical values would not be that of the networks.
    """

    frames: torch.Tensor
    latents: torch.Tensor
    decoded: torch.Tensor

    def repeat_interleave(self, repeats: int) -> Extrapolation:
        """Every row repeated `repeats` times in place (rows ordered (context, member))."""
        return Extrapolation(*(field.repeat_interleave(repeats, dim=0) for field in self))

    def rows(self, index: slice) -> Extrapolation:
        """The rows `index` of every field."""
        return Extrapolation(*(field[index] for field in self))


class PreDiffPipeline(ForecastPipelineMixin, DiffusionPipeline):
    r"""
    Probabilistic forecasting with PreDiff: the context frames are encoded frame by frame with the
    autoencoder, the Earthformer-UNet denoises target latents conditioned on them, optional knowledge controls
    steer every step, and the result is decoded back to physical units. Every ensemble member is an
    independent sample.

    Args:
        vae ([`~diffusers.AutoencoderKL`], [`~diffusers.AutoencoderKLTemporalDecoder`] or
            [`~diffusers.AsymmetricAutoencoderKL`], whose decoder may be narrower than its encoder):
            Frame autoencoder; frames enter it in [0, 1] (physical units scaled by `value_range`).
        unet ([`EarthformerUNetModel`]): the latent denoiser (predicts epsilon).
        scheduler ([`~diffusers.schedulers.SchedulerMixin`]): any epsilon scheduler on the training noise
            schedule: DDPM, DDIM, DPM-Solver++, UniPC, Euler (see [`~prediff.schedulers.prediff_scheduler`]).
        knowledge_model ([`KnowledgeAlignmentModel`], *optional*): predicts a statistic of the clean forecast
            from the noisy latents, used by learned knowledge controls.
        extrapolator ([`MotionExtrapolator`], *optional*): advects the last context frame along the context's
            motion. With it, the denoiser is conditioned on the encoded context followed by the encoded
            extrapolation (`unet.input_shape[0] = T_in + T_out`), the diffusion models the latent residual
            `z_future - z_extrapolated`, and the forecast is the extrapolation plus the decoded change
            `D(z_extrapolated + residual) - D(z_extrapolated)`, clipped to `value_range`. Without it: PreDiff as
            published.
        value_range (`tuple[float, float]`, defaults to `(0.0, 255.0)`): (transformed) values mapped to 0 and 1.
        units (`str`, *optional*): what the physical values are (model card only).
        training_data (`str`, *optional*): what the components were trained on (model card only).
        value_transform (`dict`, *optional*): applied to physical values before `value_range`, e.g.
            `{"kind": "db", "threshold": 0.1, "zerovalue": -15.0}` for rain rate in mm/h (see
            [`~prediff.utils.units`]); None keeps the linear map of VIL levels.
        pixel_size_km (`float`, *optional*): the grid spacing the components were trained for.
        frame_interval_minutes (`float`, *optional*): the time between frames they were trained for.
        max_intensity_growth (`float`, *optional*): when set (at least 1), no member exceeds this multiple of the
            highest value of its context's last frame, in physical units (see [`cap_intensity`]). A calibration
            for rain rate: a dB-space error of a few dB is a factor of several in mm/h, and a member that grows a
            cell far beyond anything in the context costs more than it ever gains. Not applied with knowledge
            controls, which state the intensity the user anticipates. None (the default): no cap.
        intensity_cap_radius_km (`float`, *optional*): with `max_intensity_growth`, the cap of each pixel is the
            maximum of the last context frame within this distance (needs `pixel_size_km`); None (the default):
            the maximum of the whole frame.
        default_inference_steps (`dict[str, int]`, *optional*): the step count a forecast takes by default, per
            scheduler class name, e.g. `{"LCMScheduler": 1}` for a student trained to sample in one step. A
            scheduler of another class (a user's swap) falls back to its preset's count
            ([`~prediff.schedulers.default_inference_steps`]). None (the default): always the preset's.
    """

    output_class = PreDiffPipelineOutput
    model_cpu_offload_seq = "vae->knowledge_model->unet->vae"
    _optional_components = ["knowledge_model", "extrapolator"]
    _callback_tensor_inputs = ["latents", "context_latents"]

    def __init__(
        self,
        vae: Autoencoder,
        unet: EarthformerUNetModel,
        scheduler: SchedulerMixin,
        knowledge_model: KnowledgeAlignmentModel | None = None,
        extrapolator: MotionExtrapolator | None = None,
        value_range: tuple[float, float] = (0.0, 255.0),
        units: str | None = None,
        training_data: str | None = None,
        value_transform: dict[str, Any] | None = None,
        pixel_size_km: float | None = None,
        frame_interval_minutes: float | None = None,
        max_intensity_growth: float | None = None,
        intensity_cap_radius_km: float | None = None,
        default_inference_steps: dict[str, int] | None = None,
    ):
        super().__init__()
        if not isinstance(vae, AUTOENCODER_CLASSES):
            names = ", ".join(cls.__name__ for cls in AUTOENCODER_CLASSES)
            raise ValueError(f"vae must be one of {names}, got {type(vae).__name__}")
        if unet.input_shape[3] != vae.config.latent_channels:
            raise ValueError(
                f"unet input_shape {unet.input_shape} has {unet.input_shape[3]} channels but the vae has "
                f"latent_channels={vae.config.latent_channels}"
            )
        if extrapolator is not None and unet.input_shape[0] <= unet.target_shape[0]:
            raise ValueError(
                f"with an extrapolator the unet is conditioned on T_in context + T_out extrapolated frames, so its "
                f"input_shape[0] must exceed target_shape[0]; got input_shape {unet.input_shape} and target_shape "
                f"{unet.target_shape}"
            )
        # Saved configs then carry the settings that make `OtherScheduler.from_config(pipe.scheduler.config)` safe.
        record_portable_settings(scheduler)
        self.register_modules(
            vae=vae, unet=unet, scheduler=scheduler, knowledge_model=knowledge_model, extrapolator=extrapolator
        )
        self.register_units(value_range, value_transform, units, training_data, pixel_size_km, frame_interval_minutes)
        self.register_to_config(
            max_intensity_growth=check_intensity_growth(max_intensity_growth),
            intensity_cap_radius_km=check_cap_radius(intensity_cap_radius_km, self.pixel_size_km),
            default_inference_steps=_check_default_steps(default_inference_steps),
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        #: Frames per autoencoder call when encoding / decoding (None: all at once; "auto": by device, see
        #: `AUTO_CHUNK_SIZES`). Chunks bound memory for large ensembles and, on a CPU, keep a call's activations in
        #: cache.
        self.vae_chunk_size: int | str | None = "auto"
        #: Forecast frames whose knowledge-control gradient is computed together (rows of `T_out` frames, at least
        #: one row; None: all rows). A control that decodes holds the autoencoder's graph of every frame it
        #: differentiates, about 10 MB per 64x64 frame of the shipped pipeline; chunks bound that. Only controls
        #: that are `rowwise` are chunked, and not with `differentiate_through_unet`.
        self.control_chunk_size: int | None = 32
        #: Rows (context x member) per denoiser call (None: all rows at once; "auto": by device, see
        #: `AUTO_CHUNK_SIZES`). The denoiser's activations grow with the rows of a call, about 10 MB a row of the
        #: shipped pipeline; chunks bound that for large ensembles. A call of at most this many rows is unchanged
        #: bit for bit (float32 results depend on the batch size).
        self.unet_chunk_size: int | str | None = "auto"
        self._interrupt = False
        self._num_timesteps = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(
        cls, name: str, scheduler: str = "sde-dpmsolver++", knowledge_model: bool = True
    ) -> PreDiffPipeline:
        """Build a randomly initialised pipeline of a published configuration (see
        `PREDIFF_PIPELINE_PRESETS`).

        Args:
            name: "prediff-sevirlr" (the official SEVIR-LR components) or "prediff-tiny".
            scheduler: a [`~prediff.schedulers.prediff_scheduler`] name; the default is SDE-DPM-Solver++, 20 steps.
            knowledge_model: include the knowledge-alignment network.
        """
        if name not in PREDIFF_PIPELINE_PRESETS:
            raise ValueError(f"unknown pipeline preset {name!r}; expected one of {sorted(PREDIFF_PIPELINE_PRESETS)}")
        preset = PREDIFF_PIPELINE_PRESETS[name]

        def build(model_cls, spec):
            return model_cls.from_preset(spec) if isinstance(spec, str) else model_cls(**spec)

        vae = autoencoder_from_preset(preset["vae"])
        unet = build(EarthformerUNetModel, preset["unet"]).eval()
        align = build(KnowledgeAlignmentModel, preset["knowledge_model"]).eval() if knowledge_model else None
        return cls(
            vae=vae,
            unet=unet,
            scheduler=prediff_scheduler(scheduler),
            knowledge_model=align,
            value_range=preset["value_range"],
            units=preset.get("units"),
            training_data=preset.get("training_data"),
        )

    # ------------------------------------------------------------------ properties

    @property
    def context_shape(self) -> tuple[int, int, int, int]:
        """`(T_in, H, W, C)` of one context sample."""
        T_cond, h, w, _ = self.unet.input_shape
        T_in = T_cond - self.unet.target_shape[0] if self.extrapolator is not None else T_cond
        return T_in, h * self.vae_scale_factor, w * self.vae_scale_factor, self.vae.config.in_channels

    @property
    def forecast_shape(self) -> tuple[int, int, int, int]:
        """`(T_out, H, W, C)` of one forecast."""
        T_out = self.unet.target_shape[0]
        return (T_out, *self.context_shape[1:])

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------ scaling and latent helpers

    @property
    def scaling_factor(self) -> float:
        """The autoencoder's latent scaling (Diffusers' `vae.config.scaling_factor`; 1.0 in the official
        presets): latents are multiplied by it after encoding and divided by it before decoding."""
        return float(self.vae.config.scaling_factor)

    def chunk_size(self, component: str) -> int | None:
        """Rows per denoiser call (`component="unet"`) or frames per autoencoder call (`"vae"`): the pipeline's
        `unet_chunk_size` / `vae_chunk_size`, with `"auto"` resolved by the execution device (`AUTO_CHUNK_SIZES`)."""
        size = getattr(self, f"{component}_chunk_size")
        if size != "auto":
            return size
        device = "cpu" if self._execution_device.type == "cpu" else "accelerator"
        return AUTO_CHUNK_SIZES[device][component]

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `(B, T, H, W, C)` in [0, 1] -> scaled posterior-mean latents `(B, T, h, w, c)`, float32."""
        device = self._execution_device
        frames = frames.to(device=device, dtype=torch.float32)
        latents = encode_sequence(self.vae, frames, sample_posterior=False, chunk_size=self.chunk_size("vae"))
        return latents.float() * self.scaling_factor

    def encode_context(self, context: torch.Tensor) -> torch.Tensor:
        """Physical-unit context `(B, T_in, H, W, C)` -> scaled posterior-mean latents `(B, T_in, h, w, c)`."""
        return self.encode_frames(self.scale_to_unit(context.float()))

    def decode_unit(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents `(N, T, h, w, c)` -> frames `(N, T, H, W, C)` in the [0, 1] scale, float32,
        differentiable."""
        return decode_sequence(self.vae, latents / self.scaling_factor, chunk_size=self.chunk_size("vae")).float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents `(N, T, h, w, c)` -> frames `(N, T, H, W, C)` in physical units, float32,
        differentiable."""
        return self.scale_to_physical(self.decode_unit(latents))

    @torch.no_grad()
    def prepare_extrapolation(self, unit_context: torch.Tensor) -> Extrapolation:
        """The extrapolation of a context `(B, T_in, H, W, C)` in [0, 1], in the three forms the forecast
        needs (see [`Extrapolation`])."""
        T_out = self.forecast_shape[0]
        frames = self.extrapolator(unit_context, T_out)
        latents = self.encode_frames(frames)
        return Extrapolation(frames.float(), latents, self.decode_unit(latents.to(self.vae.dtype)))

    def decode_forecast(
        self, latents: torch.Tensor, extrapolation: Extrapolation | None = None, clamp: bool = False
    ) -> torch.Tensor:
        """The denoiser's latents `(N, T_out, h, w, c)` -> forecast frames `(N, T_out, H, W, C)` in physical
        units, differentiable: `decode_latents(latents)`, or with an extrapolation (rows matching), the
        extrapolated frames plus the change the residual makes to their decoding. `clamp` clips the [0, 1]
        scale, i.e. the physical values to `physical_range`."""
        unit = self.decode_forecast_unit(latents, extrapolation)
        return self.scale_to_physical(unit.clamp(0.0, 1.0) if clamp else unit)

    def decode_forecast_unit(self, latents: torch.Tensor, extrapolation: Extrapolation | None = None) -> torch.Tensor:
        """`decode_forecast` before the value transform and without clamping: frames `(N, T_out, H, W, C)` in the
        networks' [0, 1] scale, differentiable."""
        if extrapolation is None:
            return self.decode_unit(latents)
        # The autoencoder's reconstruction error of the extrapolation cancels in the difference, so a zero residual
        # gives the sharp extrapolation itself.
        return extrapolation.frames + self.decode_unit(latents + extrapolation.latents) - extrapolation.decoded

    @property
    def default_num_inference_steps(self) -> int:
        """The step count of a forecast that names none: the pipeline's `default_inference_steps` for its
        scheduler's class, else the count the scheduler preset is meant for."""
        recorded = self.config.get("default_inference_steps") or {}
        steps = recorded.get(type(self.scheduler).__name__)
        return int(steps) if steps is not None else default_inference_steps(self.scheduler)

    @property
    def max_intensity_growth(self) -> float | None:
        """The cap on every member relative to the context's last frame (None: no cap); set it to change it."""
        return self.config.get("max_intensity_growth")

    @max_intensity_growth.setter
    def max_intensity_growth(self, value: float | None) -> None:
        self.register_to_config(max_intensity_growth=check_intensity_growth(value))

    @property
    def intensity_cap_radius_km(self) -> float | None:
        """The neighbourhood of each pixel's cap (None: the whole frame); set it to change it."""
        return self.config.get("intensity_cap_radius_km")

    @intensity_cap_radius_km.setter
    def intensity_cap_radius_km(self, value: float | None) -> None:
        self.register_to_config(intensity_cap_radius_km=check_cap_radius(value, self.pixel_size_km))

    def intensity_cap(self, last_frame: torch.Tensor) -> torch.Tensor | None:
        """`(B, H, W)` the highest value each pixel of a forecast may take, from the last context frame
        `(B, H, W, C)` in physical units (NaN outside the domain; see [`~prediff.pipelines.intensity_cap`]);
        None without `max_intensity_growth`."""
        if self.max_intensity_growth is None:
            return None
        radius_px = radius_in_pixels(self.intensity_cap_radius_km, self.pixel_size_km)
        return intensity_cap(last_frame, self.max_intensity_growth, radius_px)

    def cap_intensity(self, frames: torch.Tensor, context: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Forecast rows `(N, T_out, H, W, C)` in physical units, each capped by [`intensity_cap`] of the last
        frame of its context `(B, T_in, H, W, C)` (`batch_index`: each row's context)."""
        cap = self.intensity_cap(context[:, -1])
        if cap is None:
            return frames
        return torch.minimum(frames, cap.to(frames)[batch_index][:, None, :, :, None])

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        context: Any,
        num_inference_steps: Any,
        num_ensemble_members: Any,
        generator: Any,
        latents: Any,
        knowledge_controls: Sequence[KnowledgeControl],
        output_type: Any,
        callback_on_step_end: Any,
        callback_on_step_end_tensor_inputs: Sequence[str] | None,
    ) -> torch.Tensor:
        """Validate the arguments of `__call__`; returns the context as a tensor. Raises `ValueError` naming
        the offending argument, the expected and the received value."""
        context = to_context_tensor(context, (None, *self.context_shape))
        check_positive_int("num_inference_steps", num_inference_steps)
        train_steps = self.scheduler.config.get("num_train_timesteps", None)
        if train_steps is not None and num_inference_steps > train_steps:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} exceeds the scheduler's num_train_timesteps={train_steps}"
            )
        check_positive_int("num_ensemble_members", num_ensemble_members)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        self._check_scheduler()
        rows = context.shape[0] * num_ensemble_members
        self.check_forecast_memory(context.shape[0], num_ensemble_members, "num_ensemble_members")
        is_generator_list = isinstance(generator, list) and all(isinstance(g, torch.Generator) for g in generator)
        if not (generator is None or isinstance(generator, torch.Generator) or is_generator_list):
            raise ValueError(
                "generator must be a torch.Generator, a list of them or None (seed one with "
                f"torch.Generator().manual_seed(seed)), got {generator!r}"
            )
        if isinstance(generator, list) and len(generator) != rows:
            raise ValueError(
                f"a list of generators needs one per ensemble member of every context, batch_size * "
                f"num_ensemble_members = {rows}, got {len(generator)}"
            )
        if latents is not None:
            expected = [
                (rows, *self.unet.target_shape),
                (context.shape[0], num_ensemble_members, *self.unet.target_shape),
            ]
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) not in expected:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"latents must be a torch.Tensor of shape {expected[0]} or {expected[1]}, got {got}")
            if not latents.is_floating_point() or not torch.isfinite(latents).all():
                raise ValueError("latents must be a finite floating-point tensor")
        for control in knowledge_controls:
            if not isinstance(control, KnowledgeControl):
                raise ValueError(
                    f"knowledge_controls must be KnowledgeControl instances, got {type(control).__name__}"
                )
            if control.form == "official" and control.scale != 0 and not isinstance(self.scheduler, DDPMScheduler):
                raise ValueError(
                    f"{control!r} uses the official DDPM mean-shift form, which needs a DDPMScheduler; "
                    f"the pipeline has {type(self.scheduler).__name__} (use form='score' with other "
                    "schedulers)"
                )
            control.check(self.knowledge_model)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(
                "callback_on_step_end must be callable as callback_on_step_end(pipeline, i, t, callback_kwargs), "
                f"got {type(callback_on_step_end).__name__}"
            )
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, got {unknown}"
                )
        return context

    def _check_scheduler(self) -> None:
        scheduler = self.scheduler
        name = type(scheduler).__name__
        for attr in ("set_timesteps", "step", "scale_model_input"):
            if not callable(getattr(scheduler, attr, None)):
                raise ValueError(f"the scheduler {name} cannot be driven by PreDiffPipeline: it has no {attr}()")
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(alphas, torch.Tensor) or alphas.ndim != 1:
            raise ValueError(
                f"the scheduler {name} has no alphas_cumprod: PreDiffPipeline needs a discrete-time "
                "diffusion scheduler on the training noise schedule (DDPM, DDIM, DPM-Solver++, UniPC, Euler)"
            )
        self._check_noise_schedule(alphas)
        prediction_type = scheduler.config.get("prediction_type", None)
        if prediction_type != "epsilon":
            raise ValueError(
                f"the denoiser predicts epsilon, but the scheduler {name} has prediction_type={prediction_type!r}"
            )
        # Clipping or thresholding the clean estimate assumes data in [-1, 1]; latents are not, so either one
        # silently wrecks the forecast (DDIM and DDPM clip by default).
        for setting, what in (("clip_sample", "clips"), ("thresholding", "thresholds")):
            if scheduler.config.get(setting, False):
                raise ValueError(
                    f"the scheduler {name} {what} the clean latent estimate ({setting}=True), but latents are not "
                    f"scaled to its [-1, 1] range; build it with {name}.from_config(pipe.scheduler.config, "
                    f"{setting}=False) or use prediff.schedulers.prediff_scheduler(...)"
                )

    def _check_noise_schedule(self, alphas: torch.Tensor) -> None:
        """Reject a scheduler whose noise levels `alpha_bar_t` are not those the denoiser was trained on.

        Every prediff denoiser is trained with [`~prediff.schedulers.prediff_training_scheduler`]; any scheduler
        with the same `alpha_bar_t` (a preset, `SomeScheduler.from_config(pipe.scheduler.config)`, or
        `trained_betas=official_betas()`) is accepted, whatever its config says about how they were made.
        """
        name = type(self.scheduler).__name__
        trained = prediff_training_scheduler().alphas_cumprod.double()
        remedy = (
            "build it with prediff.schedulers.prediff_scheduler(...) or "
            "SchedulerClass.from_config(prediff.schedulers.prediff_training_scheduler().config)"
        )
        if alphas.shape != trained.shape:
            raise ValueError(
                f"the scheduler {name} has {alphas.shape[0]} noise levels (num_train_timesteps), but the denoiser "
                f"was trained on {trained.shape[0]}; {remedy}"
            )
        # float32 cumulative products made in different ways agree to ~1e-6; another schedule is off by far more.
        deviation = (alphas.detach().cpu().double() - trained).abs() / trained
        if deviation.max() > 1e-4:
            t = int(deviation.argmax())
            config = self.scheduler.config
            differs = [
                f"{key}={config[key]!r} (trained: {value!r})"
                for key, value in PREDIFF_NOISE_SCHEDULE.items()
                if key in config and config[key] != value
            ]
            raise ValueError(
                f"the scheduler {name} is not on the noise schedule the denoiser was trained with: its "
                f"alphas_cumprod[{t}] = {float(alphas[t]):.4g} where training had {float(trained[t]):.4g}"
                + (f"; its config has {', '.join(differs)}" if differs else "")
                + f"; {remedy}"
            )

    # ------------------------------------------------------------------ sampling helpers

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """Initial noise `(N, T_out, h, w, c)` in float32 (the scheduler runs in float32 whatever the model
        dtype)."""
        device = self._execution_device
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            latents = latents.reshape(shape).to(device=device, dtype=torch.float32)
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict[str, Any]:
        # Not every scheduler's step() takes a generator (only the stochastic ones use it).
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        return {"generator": generator} if "generator" in accepted else {}

    def _alpha_prod(self, t: torch.Tensor) -> torch.Tensor:
        # Continuous-time samplers (Euler) may use fractional timesteps; the nearest trained level is used.
        alphas = self.scheduler.alphas_cumprod
        index = int(torch.as_tensor(t).round().clamp(0, alphas.shape[0] - 1).item())
        return alphas[index].to(device=self._execution_device, dtype=torch.float32)

    def _posterior_std(self, t: torch.Tensor) -> torch.Tensor:
        """`sigma_t`: the fixed-small DDPM posterior standard deviation of the jump from `t` to the previous
        step."""
        scheduler = self.scheduler
        alphas = scheduler.alphas_cumprod
        t = int(t)
        prev_t = int(scheduler.previous_timestep(t))
        alpha_prod_t = alphas[t]
        alpha_prod_prev = alphas[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta_t = 1 - alpha_prod_t / alpha_prod_prev
        variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * beta_t
        # The official code clips the log-variance at log(1e-20), so sigma_0 is 1e-10 rather than 0.
        return variance.clamp(min=1e-20).sqrt().to(device=self._execution_device, dtype=torch.float32)

    def _denoise(self, model_input: torch.Tensor, t: torch.Tensor, context_latents: torch.Tensor) -> torch.Tensor:
        """The denoiser's noise estimate `(N, T_out, h, w, c)` in float32, `unet_chunk_size` rows per call."""
        dtype = self.unet.dtype
        num_rows = model_input.shape[0]
        chunk = self.chunk_size("unet") or num_rows
        if num_rows <= chunk:
            return self.unet(model_input.to(dtype), t, context_latents).sample.float()
        return torch.cat(
            [
                self.unet(model_input[i : i + chunk].to(dtype), t, context_latents[i : i + chunk]).sample.float()
                for i in range(0, num_rows, chunk)
            ]
        )

    def _noise_pred(
        self,
        model_input: torch.Tensor,
        t: torch.Tensor,
        context_latents: torch.Tensor,
        controls: list[KnowledgeControl],
        batch_index: torch.Tensor,
        decode: Callable[[torch.Tensor], torch.Tensor],
        extrapolation: Extrapolation | None,
        num_contexts: int,
        final_step: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (score-guided) noise estimate in float32 and the summed official-form gradient, if any;
        `final_step`: this is the sampler's last step (see `KnowledgeControlState`)."""
        if not controls:
            return self._denoise(model_input, t, context_latents), None
        through_unet = any(c.differentiate_through_unet for c in controls)
        num_rows = model_input.shape[0]
        alpha_prod_t = self._alpha_prod(t)
        with torch.enable_grad():
            if through_unet:
                z = model_input.detach().requires_grad_(True)
                noise_pred = self.unet(z.to(self.unet.dtype), t, context_latents).sample.float()
            else:
                with torch.no_grad():
                    noise_pred = self._denoise(model_input, t, context_latents)
            # Rows are independent, so each chunk's gradient is its rows' share of the whole one; a chunk's
            # graph is freed before the next is built. The denoiser's graph, when differentiated, spans all rows.
            chunk = num_rows
            if not through_unet and self.control_chunk_size is not None and all(c.rowwise for c in controls):
                chunk = max(1, self.control_chunk_size // model_input.shape[1])
            score_parts, official_parts = [], []
            for start in range(0, num_rows, chunk):
                rows = slice(start, start + chunk)
                if through_unet:
                    rows_decode = decode
                else:
                    z = model_input[rows].detach().requires_grad_(True)
                    part = extrapolation.rows(rows) if extrapolation is not None else None
                    rows_decode = partial(self.decode_forecast, extrapolation=part) if chunk < num_rows else decode
                state = KnowledgeControlState(
                    latents=z,
                    timestep=torch.as_tensor(t, device=z.device),
                    noise_pred=noise_pred[rows],
                    context_latents=context_latents[rows],
                    alpha_prod_t=alpha_prod_t,
                    batch_index=batch_index[rows],
                    decode=rows_decode,
                    value_range=self.value_range,
                    value_transform=self.value_transform,
                    knowledge_model=self.knowledge_model,
                    latent_offset=extrapolation.latents[rows] if extrapolation is not None else None,
                    row_start=start,
                    all_rows=num_rows,
                    all_contexts=num_contexts,
                    final_step=final_step,
                )
                score_part, official_part = knowledge_gradients(controls, state)
                score_parts.append(score_part)
                official_parts.append(official_part)
        score_grad = None if score_parts[0] is None else torch.cat(score_parts)
        official_grad = None if official_parts[0] is None else torch.cat(official_parts)
        noise_pred = noise_pred.detach()
        if score_grad is not None:
            # Classifier-guidance form: eps <- eps + scale * sqrt(1 - alpha_bar_t) * dL/dz_t.
            noise_pred = noise_pred + (1 - alpha_prod_t).sqrt() * score_grad.float()
        return noise_pred, official_grad

    # ------------------------------------------------------------------ call

    @forecast_call
    @torch.no_grad()
    def __call__(
        self,
        context: torch.Tensor | np.ndarray,
        num_inference_steps: int | None = None,
        num_ensemble_members: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        knowledge_controls: KnowledgeControl | Sequence[KnowledgeControl] | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> PreDiffPipelineOutput | tuple:
        r"""
        Forecast an ensemble from a context sequence.

        Args:
            context (`torch.Tensor` or `np.ndarray` of shape `(B, T_in, H, W, C)`):
                The observed frames in physical units (e.g. VIL 0-255); scaled to [0, 1] with `value_range`.
            num_inference_steps (`int`, *optional*):
                Denoising steps; default: `default_num_inference_steps`, the pipeline's own count for its
                scheduler (a distilled student's) or the count the scheduler preset is meant for
                ([`~prediff.schedulers.DEFAULT_INFERENCE_STEPS`]: (SDE-)DPM-Solver++ and UniPC 20, DDIM, Euler and
                DDPM 50, LCM 4), else 50. Pass 1000 with a DDPM scheduler for the official sampler.
            num_ensemble_members (`int`, defaults to 1): independent samples per context.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Randomness; a list gives every ensemble member of every context its own generator, ordered
                (context, member), length `B * num_ensemble_members`. The same seeds give the same ensemble.
            latents (`torch.Tensor`, *optional*):
                Initial noise `(B * M, T_out, h, w, c)` or `(B, M, T_out, h, w, c)` instead of drawing it.
            knowledge_controls ([`KnowledgeControl`] or a list or tuple of them, *optional*):
                Controls that steer every step, each with its own scale (see `prediff.knowledge`); a plain
                function of the forecast goes in a [`FunctionControl`].
            output_type (`str`, defaults to `"np"`): `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, defaults to True): return a [`PreDiffPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called as `callback_on_step_end(self, i, t, callback_kwargs)` after every step with the
                tensors named in `callback_on_step_end_tensor_inputs`; tensors in the returned dict replace
                the pipeline's.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`):
                Among `"latents"` `(B * M, T_out, h, w, c)` and `"context_latents"` `(B * M, T_in, h, w, c)`.

        Returns:
            [`PreDiffPipelineOutput`] or `tuple`: frames `(B, M, T_out, H, W, C)` in physical units (np/pt) or
            latents `(B, M, T_out, h, w, c)` (latent).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        controls = control_list(knowledge_controls)
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps

        context = self.check_inputs(
            context,
            num_inference_steps,
            num_ensemble_members,
            generator,
            latents,
            controls,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        self._interrupt = False
        device = self._execution_device
        batch_size, members = context.shape[0], num_ensemble_members
        # Scale 0 must leave the result bit for bit unchanged: such controls are dropped before anything runs.
        controls = [c for c in controls if c.scale != 0]

        # 1. The condition: the context's latents (posterior mean) and, with an extrapolator, those of its
        #    extrapolation, repeated for every member: rows ordered (context, member).
        unit_context = self.scale_to_unit(context.to(device=device, dtype=torch.float32))
        context_latents = self.encode_frames(unit_context)
        extrapolation = None
        if self.extrapolator is not None:
            extrapolation = self.prepare_extrapolation(unit_context)
            context_latents = torch.cat([context_latents, extrapolation.latents], dim=1)
            extrapolation = extrapolation.repeat_interleave(members)
        context_latents = context_latents.to(self.unet.dtype).repeat_interleave(members, dim=0)
        batch_index = torch.arange(batch_size, device=device).repeat_interleave(members)
        decode = partial(self.decode_forecast, extrapolation=extrapolation)

        # 2. Timesteps and initial noise.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents((batch_size * members, *self.unet.target_shape), generator, latents)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator)

        # 3. Denoising loop.
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_input = self.scheduler.scale_model_input(latents, t)
                noise_pred, official_grad = self._noise_pred(
                    model_input,
                    t,
                    context_latents,
                    controls,
                    batch_index,
                    decode,
                    extrapolation,
                    batch_size,
                    final_step=i == len(timesteps) - 1,
                )
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if official_grad is not None:
                    # PreDiff's own form: the posterior mean moves by -scale * sigma_t * g (noise is additive,
                    # so shifting the sample after the step is the same as shifting the mean before it).
                    latents = latents - self._posterior_std(t) * official_grad.float()

                if callback_on_step_end is not None:
                    scope = {"latents": latents, "context_latents": context_latents}
                    callback_kwargs = {k: scope[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    context_latents = callback_outputs.pop("context_latents", context_latents)
                progress_bar.update()

        # 4. Decode to physical units.
        if output_type == "latent":
            frames = latents.reshape(batch_size, members, *latents.shape[1:])
        else:
            frames = decode(latents.to(self.vae.dtype), clamp=extrapolation is not None)
            if not controls:
                frames = self.cap_intensity(frames, context.to(device), batch_index)
            frames = frames.reshape(batch_size, members, *frames.shape[1:])
            if output_type == "np":
                frames = frames.cpu().numpy()
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames,)
        return PreDiffPipelineOutput(frames=frames)

    # ------------------------------------------------------------------ model card

    def _card_text(self) -> str:
        T_in, H, W, C = self.context_shape
        T_out = self.forecast_shape[0]
        _, h, w, c = self.unet.input_shape
        lo, hi = self.value_range
        units = self.config.get("units") or "the physical units of the training data"
        training = self.config.get("training_data") or "not recorded for this pipeline"
        transform = self.value_transform
        transform = "" if transform is None else f"the value transform `{dict(transform)}` first, then "
        recorded = ((self.pixel_size_km, "km pixels"), (self.frame_interval_minutes, "minutes between frames"))
        grid = ", ".join(f"{value:g} {unit}" for value, unit in recorded if value is not None) or "not recorded"
        if self.extrapolator is None:
            clamping = "outputs are not clamped"
            motion = "none: the denoiser sees the encoded context only (PreDiff as published)."
        else:
            clamping = "outputs are clipped to that range"
            motion = (
                "a `MotionExtrapolator` advects the last context frame along the context's motion; the denoiser "
                "is conditioned on the encoded context and the encoded extrapolation, the diffusion models the "
                "latent residual over the extrapolation, and the forecast is the extrapolation plus the decoded "
                "change."
            )
        if self.max_intensity_growth is not None:
            where = (
                "its context's last frame"
                if self.intensity_cap_radius_km is None
                else f"its context's last frame within {self.intensity_cap_radius_km:g} km"
            )
            clamping += (
                f"; without knowledge controls no member exceeds {self.max_intensity_growth:g} times the maximum of "
                f"{where} (`max_intensity_growth`, `intensity_cap_radius_km`)"
            )
        return f"""# PreDiff pipeline

Probabilistic precipitation / Earth-system forecasting with latent diffusion (PreDiff, NeurIPS 2023) and an
Earthformer-UNet denoiser, with optional knowledge control.

## Inputs and outputs

- **Context**: `(B, {T_in}, {H}, {W}, {C})` = (batch, time, height, width, channels), channels last, in
{units}.
- **Scaling**: {transform}values are mapped to [0, 1] with `(x - {lo:g}) / ({hi:g} - {lo:g})` before encoding,
  and back after decoding (`value_range = ({lo:g}, {hi:g})`); {clamping}.
- **Grid and clock**: {grid}.
- **Forecast**: `(B, M, {T_out}, {H}, {W}, {C})` for `M` ensemble members, in the same units.
- **Latents**: every frame is encoded separately to `({h}, {w}, {c})` and multiplied by the latent scaling
  factor {self.scaling_factor:.6g}.
- **Motion**: {motion}

## Components

| component | class | parameters |
|---|---|---|
| vae | `{type(self.vae).__name__}` | {count_parameters(self.vae)} |
| unet | `{type(self.unet).__name__}` | {count_parameters(self.unet)} |
| knowledge_model | `{type(self.knowledge_model).__name__ if self.knowledge_model is not None else "-"}` | \
{count_parameters(self.knowledge_model)} |
| scheduler | `{type(self.scheduler).__name__}` | - |

## Training data

{training}

## Usage

```python
import numpy as np
import torch
from prediff import PreDiffPipeline

pipe = PreDiffPipeline.from_pretrained("<this repository>")
context = np.zeros((1, {T_in}, {H}, {W}, {C}), dtype=np.float32)  # observed frames, {units}
generators = [torch.Generator().manual_seed(i) for i in range(8)]
# forecast: (1, 8, {T_out}, {H}, {W}, {C}), ensemble members in the second axis
forecast = pipe(context, num_ensemble_members=8, generator=generators).frames
```

Weights are stored as safetensors; `from_pretrained` refuses pickle files unless `allow_pickle=True`.
"""
