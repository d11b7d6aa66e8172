"""What the prediff pipelines share: physical-unit scaling, context checks, evaluation mode while forecasting,
safe loading and model cards."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from huggingface_hub import ModelCard, ModelCardData, create_repo, snapshot_download, upload_folder

from ..models.modeling_utils import check_model_config_memory
from ..utils.checks import check_array, check_value_range, holds_real_numbers
from ..utils.files import atomic_output, plain_permissions_for_writes
from ..utils.memory import check_memory, format_bytes
from ..utils.units import check_value_transform, from_transformed, to_physical, to_unit

__all__ = [
    "ForecastPipelineMixin",
    "count_parameters",
    "forecast_call",
    "forecast_whole_domain",
    "larger_than_tile",
    "range_outside",
    "to_context_tensor",
]


def range_outside(values: np.ndarray | torch.Tensor, value_range: tuple[float, float]) -> tuple[float, float] | None:
    """`(min, max)` of `values` when they leave `value_range` by more than float round-off, else None."""
    lo, hi = (float(v) for v in value_range)
    found_lo, found_hi = float(values.min()), float(values.max())
    # A relative tolerance keeps float round-off at the ends of the range from counting.
    tol = 1e-6 * (hi - lo)
    return (found_lo, found_hi) if found_lo < lo - tol or found_hi > hi + tol else None


def warn_outside_range(pipe: Any, context: Any, stacklevel: int = 2) -> None:
    """One warning naming both ranges when a context leaves the pipeline's `physical_range` (anything but a
    non-empty array of finite real numbers is left to the pipeline's own checks)."""
    real = holds_real_numbers(context) and math.prod(context.shape) > 0
    found = range_outside(context, pipe.physical_range) if real else None
    if found is not None and all(math.isfinite(v) for v in found):
        lo, hi = pipe.physical_range
        warnings.warn(
            f"context values span [{found[0]:g}, {found[1]:g}], outside the pipeline's value_range "
            f"[{lo:g}, {hi:g}] (its physical units); convert the context to those units, or the forecast is "
            "meaningless",
            stacklevel=stacklevel + 1,
        )


def forecast_call(call: Callable) -> Callable:
    """Decorator of a pipeline's `__call__(self, context, ...)`: what every forecast does around its own work.

    - The networks run in evaluation mode (see [`ForecastPipelineMixin.networks_in_eval_mode`]): dropout off,
      so the same generators give the same forecast, whether the modules were just built or loaded.
    - A context outside the pipeline's `physical_range` gets one warning per call naming both ranges (e.g. data
      scaled to [0, 1] given to a 0-255 pipeline gives a forecast without meaning and no other sign).
    """

    @functools.wraps(call)
    def wrapper(self, context: Any, *args: Any, **kwargs: Any) -> Any:
        if larger_than_tile(context, self.context_shape):
            return forecast_whole_domain(self, call, context, *args, **kwargs)
        warn_outside_range(self, context)
        with self.networks_in_eval_mode():
            return call(self, context, *args, **kwargs)

    return wrapper


def larger_than_tile(context: Any, context_shape: tuple[int, ...]) -> bool:
    """Whether `context` is a `(B, T, H, W, C)` array whose frames exceed the pipeline's tile (and so are
    forecast as overlapping tiles, see [`~prediff.pipelines.tiling.forecast_tiled`])."""
    shape = getattr(context, "shape", None)
    if shape is None or len(shape) != 5:
        return False
    (H, W), (tile_h, tile_w) = shape[2:4], context_shape[1:3]
    return (H, W) != (tile_h, tile_w) and H >= tile_h and W >= tile_w


def forecast_whole_domain(pipe: Any, call: Callable, context: Any, *args: Any, **kwargs: Any) -> Any:
    """A pipeline call on frames larger than its tile: the same arguments, through
    [`~prediff.pipelines.tiling.forecast_tiled`]; NaN marks pixels outside the domain and stays NaN."""
    from .tiling import forecast_tiled

    arguments = inspect.signature(call).bind(pipe, context, *args, **kwargs).arguments
    arguments = {name: value for name, value in arguments.items() if name not in ("self", "context")}
    output_type = arguments.pop("output_type", "np")
    return_dict = arguments.pop("return_dict", True)
    generator = arguments.pop("generator", None)
    if output_type not in ("np", "pt"):
        raise ValueError(f"frames larger than the pipeline's tile are forecast as 'np' or 'pt', not {output_type!r}")
    for name in ("latents", "callback_on_step_end", "callback_on_step_end_tensor_inputs"):
        if arguments.get(name) is not None:
            raise ValueError(f"{name} is not supported for frames larger than the pipeline's tile")
        arguments.pop(name, None)
    frames = forecast_tiled(pipe, context, generator=generator, progress=not pipe._progress_disabled(), **arguments)
    frames = torch.from_numpy(frames) if output_type == "pt" else frames
    return pipe.output_class(frames=frames) if return_dict else (frames,)


def to_context_tensor(context: Any, expected: tuple[int | None, ...], name: str = "context") -> torch.Tensor:
    """Check a finite `(B, T_in, H, W, C)` array or tensor of at least one sample (None in `expected` = any
    size; see [`~prediff.utils.checks.check_array`]) and return it as a floating tensor (integers as
    float32)."""
    layout = "shape (B, T_in, H, W, C)"
    context = check_array(name, context, len(expected), layout, sizes=expected, to="tensor")
    if context.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(context.shape)}")
    return context if context.is_floating_point() else context.float()


class ForecastPipelineMixin:
    """Loading restricted to safetensors and known component classes, evaluation mode and size checks while
    forecasting, and a model card written with every save."""

    _card_tags: tuple[str, ...] = ("prediff", "weather-forecasting", "nowcasting")

    def _progress_disabled(self) -> bool:
        return bool(getattr(self, "_progress_bar_config", {}).get("disable", False))

    def register_units(
        self,
        value_range: tuple[float, float],
        value_transform: dict[str, Any] | None,
        units: str | None,
        training_data: str | None,
        pixel_size_km: float | None,
        frame_interval_minutes: float | None,
    ) -> None:
        """Check and record in the pipeline config how physical values map to the networks' [0, 1] (see
        [`~prediff.utils.units`]) and the grid and clock the pipeline was trained for (None: not recorded)."""
        value_range = check_value_range(value_range)
        value_transform = check_value_transform(value_transform)
        for name, value in (("pixel_size_km", pixel_size_km), ("frame_interval_minutes", frame_interval_minutes)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        self.register_to_config(
            value_range=list(value_range),
            value_transform=value_transform,
            units=units,
            training_data=training_data,
            pixel_size_km=None if pixel_size_km is None else float(pixel_size_km),
            frame_interval_minutes=None if frame_interval_minutes is None else float(frame_interval_minutes),
        )

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of the (transformed) values mapped to 0 and 1."""
        lo, hi = self.config.value_range
        return float(lo), float(hi)

    @property
    def value_transform(self) -> dict[str, Any] | None:
        """The value transform applied before `value_range` (None: linear, as for VIL levels)."""
        return check_value_transform(self.config.get("value_transform"))

    @property
    def physical_range(self) -> tuple[float, float]:
        """`value_range` in physical units: the values mapped to 0 and 1 (e.g. 0 and 316 mm/h for dB -15..25)."""
        lo, hi = self.value_range
        transform = self.value_transform
        return float(from_transformed(lo, transform)), float(from_transformed(hi, transform))

    @property
    def pixel_size_km(self) -> float | None:
        """The grid spacing the pipeline was trained for, in km (None: not recorded)."""
        return self.config.get("pixel_size_km")

    @property
    def frame_interval_minutes(self) -> float | None:
        """The time between frames the pipeline was trained for, in minutes (None: not recorded)."""
        return self.config.get("frame_interval_minutes")

    def scale_to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Physical units -> [0, 1]: the value transform, then `value_range` (see
        [`~prediff.utils.units.to_unit`])."""
        return to_unit(x, self.value_range, self.value_transform)

    def scale_to_physical(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> physical units, not clamped, as in the official code (see
        [`~prediff.utils.units.to_physical`])."""
        return to_physical(x, self.value_range, self.value_transform)

    @contextlib.contextmanager
    def networks_in_eval_mode(self) -> Iterator[None]:
        """Put every network of the pipeline in evaluation mode for the block, then give every module back the
        mode it had (a training loop that forecasts with its networks goes on training)."""
        modules = [
            module
            for component in self.components.values()
            if isinstance(component, torch.nn.Module)
            for module in component.modules()
        ]
        modes = [module.training for module in modules]
        for component in self.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        try:
            yield
        finally:
            for module, mode in zip(modules, modes):
                module.training = mode

    def check_forecast_memory(self, batch_size: int, num_members: int, members_name: str) -> None:
        """Refuse, before anything is allocated, a forecast of `batch_size` contexts x `num_members` members
        whose float32 context and forecast frames alone would not fit in this machine's memory.

        `members_name` is how the caller names the member count (`num_ensemble_members`, `--members`).
        """
        frames_per_row = math.prod(self.context_shape) + math.prod(self.forecast_shape)
        check_memory(
            f"{members_name}={num_members} with {batch_size} context(s): the float32 frames of "
            f"{batch_size * num_members} (context, forecast) pairs of shape {tuple(self.context_shape)} -> "
            f"{tuple(self.forecast_shape)}",
            4 * batch_size * num_members * frames_per_row,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        allow_pickle: bool = False,
        torch_dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        variant: str | None = None,
        **kwargs: Any,
    ):
        r"""Load a saved pipeline from a local folder or a Hub repository id (cached copies work offline,
        e.g. with `HF_HUB_OFFLINE=1`).

        Weights load from safetensors only: pickle-based `.bin` files can execute code when loaded, so they
        are refused unless `allow_pickle=True` is given explicitly; even then safetensors are preferred and a
        component falls back to `.bin` only where it has no safetensors file. No code from the repository is
        ever run: every component must be a class of prediff or Diffusers. Keyword arguments named like a
        component (`unet=...`) replace that component; others are passed to the pipeline's constructor.
        """
        if not allow_pickle and kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False loads pickle files; pass allow_pickle=True to allow that")
        kwargs.pop("use_safetensors", None)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    str(pretrained_model_name_or_path),
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=bool(local_files_only),
                )
            )
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"no model_index.json in {folder}: not a saved pipeline")
        try:
            index = json.loads(index_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{index_path} is not valid JSON: {error}") from None
        if not isinstance(index, dict):
            raise ValueError(f"{index_path} must hold a JSON object, got {type(index).__name__}")
        if index.get("_class_name") not in (None, cls.__name__):
            raise ValueError(f"{folder} holds a {index['_class_name']}, not a {cls.__name__}")
        components, options = cls._get_signature_keys(cls)
        unknown = sorted(name for name in index if not name.startswith("_") and name not in components + options)
        if unknown:
            raise ValueError(
                f"{index_path} has unknown entries {unknown}; a {cls.__name__} has the components {components} "
                f"and the options {options}"
            )
        init = {}
        for name, value in index.items():
            if name.startswith("_"):
                continue
            if name in kwargs:
                init[name] = kwargs.pop(name)
            elif name in components:
                init[name] = _load_component(folder, name, value, allow_pickle, torch_dtype, variant)
            else:
                init[name] = value
        init.update(kwargs)
        pipeline = cls(**init)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline

    def model_card(self) -> ModelCard:
        """The model card: inputs, units and scaling, shapes, components and training data."""
        data = ModelCardData(library_name="prediff", tags=list(self._card_tags), pipeline_tag="other")
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{self._card_text()}")

    def _card_text(self) -> str:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Save every component (safetensors by default), `model_index.json` and a `README.md` model card.

        With `push_to_hub=True` the folder is uploaded afterwards (`repo_id`, `token`, `private`,
        `commit_message`, `create_pr` as in Diffusers).
        """
        hub_kwargs = {
            k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message", "create_pr") if k in kwargs
        }
        with plain_permissions_for_writes(save_directory):
            super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        card = str(self.model_card())
        path = os.path.join(save_directory, "README.md")
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(card, encoding="utf-8")
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            self._push_folder(save_directory, repo_id, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> str:
        """Upload the pipeline (safetensors weights, configs and this pipeline's model card) to the Hub."""
        with tempfile.TemporaryDirectory() as tmpdir:
            self.save_pretrained(tmpdir, safe_serialization=safe_serialization, variant=variant)
            return self._push_folder(
                tmpdir,
                repo_id,
                commit_message=commit_message,
                private=private,
                token=token,
                create_pr=create_pr,
            )

    def _push_folder(
        self,
        folder: str | os.PathLike,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        return upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            commit_message=commit_message or f"Upload {type(self).__name__}",
            create_pr=create_pr,
        )


def count_parameters(module: torch.nn.Module | None) -> str:
    return "-" if module is None else f"{sum(p.numel() for p in module.parameters()):,}"


#: Diffusers' own noise schedules have 1000 training timesteps; far more can only be a mistake, and every
#: scheduler holds a few arrays of that length (betas, alphas, their products, timesteps, sigmas).
MAX_TRAIN_TIMESTEPS = 100_000
_BYTES_PER_TRAIN_TIMESTEP = 64


def _check_num_train_timesteps(steps: Any, where: str) -> None:
    """Refuse a scheduler configuration (from `where`) whose noise schedule is absurdly long: building the
    scheduler allocates its arrays."""
    if isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= MAX_TRAIN_TIMESTEPS:
        return
    need = ""
    if isinstance(steps, int) and steps > MAX_TRAIN_TIMESTEPS:
        need = f" (about {format_bytes(steps * _BYTES_PER_TRAIN_TIMESTEP)} of noise schedule arrays)"
    raise ValueError(
        f"{where}: num_train_timesteps={steps!r}{need} must be an integer from 1 to {MAX_TRAIN_TIMESTEPS} "
        "(PreDiff's denoisers are trained with 1000)"
    )


def _component_class(name: str, library: str, class_name: str, index_path: Path) -> type:
    """The class recorded for component `name` in `model_index.json`, if it is one a pipeline may load: a
    network of `prediff.models`, one of Diffusers' autoencoders PreDiff takes (`AUTOENCODER_CLASSES`) or a
    Diffusers scheduler. The recorded module is never imported: it could be any module, whose import runs its
    code."""
    from .. import models
    from ..models.autoencoder import AUTOENCODER_CLASSES

    candidates = [getattr(models, n) for n in models.__all__] + list(AUTOENCODER_CLASSES)
    allowed = {c.__name__: c for c in candidates if isinstance(c, type) and issubclass(c, ModelMixin)}
    component_cls = allowed.get(class_name)
    if component_cls is None and library == "diffusers":
        schedulers = importlib.import_module("diffusers.schedulers")
        found = getattr(schedulers, class_name, None)
        is_scheduler = isinstance(found, type) and issubclass(found, SchedulerMixin) and found is not SchedulerMixin
        component_cls = found if is_scheduler else None
    # The recorded library must be the class's module or a package above it ("diffusers", "prediff.models").
    module = getattr(component_cls, "__module__", "")
    if component_cls is None or not f"{module}.".startswith(f"{library}."):
        raise ValueError(
            f"{index_path}: component {name!r} is {library}.{class_name}; a pipeline loads only "
            f"{', '.join(sorted(allowed))} and Diffusers schedulers"
        )
    return component_cls


def _load_component(
    folder: Path,
    name: str,
    entry: Any,
    allow_pickle: bool,
    torch_dtype: torch.dtype | None,
    variant: str | None,
) -> Any:
    """Load the component `name` recorded as `[library, class_name]` in `model_index.json` from the plain
    subfolder `name` of `folder`, after checking the sizes its configuration asks for."""
    index_path = folder / "model_index.json"
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str | None) for v in entry)):
        raise ValueError(f"{index_path}: component {name!r} must be [library, class name], got {entry!r}")
    library, class_name = entry
    if library is None or class_name is None:
        return None
    component_cls = _component_class(name, library, class_name, index_path)
    subfolder = folder / name
    if not subfolder.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"component folder {subfolder} leads outside the pipeline folder {folder}")
    config = component_cls.load_config(folder, subfolder=name)
    where = f"{subfolder / component_cls.config_name}"
    if issubclass(component_cls, SchedulerMixin):
        _check_num_train_timesteps(config.get("num_train_timesteps", 1000), where)
        return component_cls.from_config(config)
    # Diffusers' AsymmetricAutoencoderKL records `block_out_channels` and `force_upcast` in its config itself, then
    # warns whenever it is built from that config that they are not its arguments: that one class is built and
    # loaded without Diffusers' warnings.
    quiet = component_cls.__name__ == "AsymmetricAutoencoderKL"
    with _diffusers_errors_only() if quiet else contextlib.nullcontext():
        check_model_config_memory(component_cls, config, where)
        # Diffusers reads use_safetensors=False as ".bin only"; None is its "safetensors, else .bin" fallback.
        model = component_cls.from_pretrained(
            folder,
            subfolder=name,
            use_safetensors=None if allow_pickle else True,
            torch_dtype=torch_dtype,
            variant=variant,
        )
    return model.eval()


@contextlib.contextmanager
def _diffusers_errors_only() -> Iterator[None]:
    """Diffusers' logging at error level inside the block, its previous level restored after."""
    from diffusers.utils import logging as diffusers_logging

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(previous)
