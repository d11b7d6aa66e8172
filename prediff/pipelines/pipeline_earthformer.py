"""EarthformerPipeline: deterministic Earthformer forecasts with PreDiffPipeline's conventions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.models.modeling_utils import ModelMixin

from .pipeline_output import EarthformerPipelineOutput
from .pipeline_utils import ForecastPipelineMixin, count_parameters, forecast_call, to_context_tensor

if TYPE_CHECKING:
    from ..models.earthformer import EarthformerModel

__all__ = ["EarthformerPipeline"]

OUTPUT_TYPES = ("np", "pt")


class EarthformerPipeline(ForecastPipelineMixin, DiffusionPipeline):
    r"""
    Deterministic forecasting with Earthformer (cuboid-attention encoder-decoder), in physical units.

    Args:
        model ([`EarthformerModel`]): the forecaster, `(B, T_in, H, W, C) -> (B, T_out, H, W, C)` in [0, 1].
        value_range (`tuple[float, float]`, defaults to `(0.0, 255.0)`): (transformed) values mapped to 0 and 1.
        units (`str`, *optional*): what the physical values are (model card only).
        training_data (`str`, *optional*): what the model was trained on (model card only).
        value_transform (`dict`, *optional*): applied to physical values before `value_range`, e.g.
            `{"kind": "db", "threshold": 0.1, "zerovalue": -15.0}` for rain rate (see [`~prediff.utils.units`]).
        pixel_size_km (`float`, *optional*): the grid spacing the model was trained for.
        frame_interval_minutes (`float`, *optional*): the time between frames the model was trained for.
    """

    output_class = EarthformerPipelineOutput
    model_cpu_offload_seq = "model"

    def __init__(
        self,
        model: EarthformerModel,
        value_range: tuple[float, float] = (0.0, 255.0),
        units: str | None = None,
        training_data: str | None = None,
        value_transform: dict[str, Any] | None = None,
        pixel_size_km: float | None = None,
        frame_interval_minutes: float | None = None,
    ):
        super().__init__()
        if not isinstance(model, ModelMixin) or "input_shape" not in model.config:
            raise ValueError(f"model must be an EarthformerModel, got {type(model).__name__}")
        self.register_modules(model=model)
        self.register_units(value_range, value_transform, units, training_data, pixel_size_km, frame_interval_minutes)

    @classmethod
    def from_preset(cls, name: str, value_range: tuple[float, float] = (0.0, 255.0)) -> EarthformerPipeline:
        """A randomly initialised pipeline around `EarthformerModel.from_preset(name)` (e.g.
        "earthformer-sevir")."""
        from ..models.earthformer import EarthformerModel

        return cls(EarthformerModel.from_preset(name).eval(), value_range=value_range)

    @property
    def context_shape(self) -> tuple[int, ...]:
        """`(T_in, H, W, C)` of one context sample."""
        return tuple(self.model.config.input_shape)

    @property
    def forecast_shape(self) -> tuple[int, ...]:
        """`(T_out, H, W, C)` of one forecast."""
        return tuple(self.model.config.target_shape)

    def check_inputs(self, context: Any, output_type: Any) -> torch.Tensor:
        """Validate the arguments of `__call__`; returns the context as a tensor."""
        context = to_context_tensor(context, (None, *self.context_shape))
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return context

    @forecast_call
    @torch.no_grad()
    def __call__(
        self,
        context: torch.Tensor | np.ndarray,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> EarthformerPipelineOutput | tuple:
        r"""
        Forecast deterministically from a context sequence.

        Args:
            context (`torch.Tensor` or `np.ndarray` of shape `(B, T_in, H, W, C)`): observed frames in
                physical units; scaled to [0, 1] with `value_range`.
            output_type (`str`, defaults to `"np"`): `"np"` or `"pt"`.
            return_dict (`bool`, defaults to True): return an [`EarthformerPipelineOutput`] instead of a
                tuple.

        Returns:
            [`EarthformerPipelineOutput`] or `tuple`: frames `(B, T_out, H, W, C)` in physical units.
        """
        context = self.check_inputs(context, output_type)
        device, dtype = self._execution_device, self.model.dtype
        unit = self.scale_to_unit(context.to(device=device, dtype=torch.float32)).to(dtype)
        frames = self.scale_to_physical(self.model(unit).sample.float())
        if output_type == "np":
            frames = frames.cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return EarthformerPipelineOutput(frames=frames)

    def _card_text(self) -> str:
        T_in, H, W, C = self.context_shape
        T_out = self.forecast_shape[0]
        lo, hi = self.value_range
        units = self.config.get("units") or "the physical units of the training data"
        training = self.config.get("training_data") or "not recorded for this pipeline"
        return f"""# Earthformer pipeline

Deterministic Earth-system forecasting with Earthformer (cuboid attention, NeurIPS 2022).

## Inputs and outputs

- **Context**: `(B, {T_in}, {H}, {W}, {C})` = (batch, time, height, width, channels), channels last, in
  {units}.
- **Scaling**: values are mapped to [0, 1] with `(x - {lo:g}) / ({hi:g} - {lo:g})` before the model and back
  after it (`value_range = ({lo:g}, {hi:g})`); outputs are not clamped.
- **Forecast**: `(B, {T_out}, {H}, {W}, {C})` in the same units.

## Components

| component | class | parameters |
|---|---|---|
| model | `{type(self.model).__name__}` | {count_parameters(self.model)} |

## Training data

{training}

## Usage

```python
from prediff import EarthformerPipeline

pipe = EarthformerPipeline.from_pretrained("<this repository>")
forecast = pipe(context).frames  # context (B, {T_in}, {H}, {W}, {C}) -> (B, {T_out}, {H}, {W}, {C})
```

Weights are stored as safetensors; `from_pretrained` refuses pickle files unless `allow_pickle=True`.
"""
