"""What every prediff network shares: presets, attention-backend switching and input checks."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from ..utils.memory import check_memory
from .cuboid.attention import CuboidAttentionBase, check_attention_backend


def check_model_config_memory(model_cls: type[ModelMixin], config: dict[str, Any], where: str | None = None) -> None:
    """Refuse, before anything is allocated, a network whose configuration asks for more parameters and buffers
    than this machine's memory holds (a hand-edited `base_units` of 10**9, frames of 100000 x 100000).

    The network is built on PyTorch's "meta" device, which records shapes and allocates nothing, so the count is
    exact for any class.

    Args:
        model_cls: the network's class.
        config: its constructor's keyword arguments (a `config.json`).
        where: the file the configuration comes from, if any (named in the message).

    Raises:
        ValueError: naming `where`, the size entries of the configuration and the memory they need.
    """
    if torch.get_default_device().type == "meta":
        return
    sizes = ", ".join(f"{key}={value}" for key, value in config.items() if _is_size(value))
    what = f"the parameters and buffers of {model_cls.__name__}({sizes})" + (f" in {where}" if where else "")
    try:
        with torch.device("meta"):
            model = model_cls.from_config(config)
    except RuntimeError as error:
        # The meta device still computes storage sizes: beyond 2**63 bytes they overflow.
        if "overflow" in str(error):
            raise ValueError(f"{what} would need more than 2**63 bytes of memory") from None
        raise
    tensors = [*model.parameters(), *model.buffers()]
    check_memory(what, sum(t.numel() * t.element_size() for t in tensors))


def _is_size(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return bool(value) and all(_is_size(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


class GradientCheckpointingMixin:
    """``_checkpointed(block, *args)`` runs ``block`` through Diffusers' gradient checkpointing once the model's
    ``enable_gradient_checkpointing()`` has set ``gradient_checkpointing`` (and the function) on this module."""

    gradient_checkpointing = False

    def _checkpointed(self, module: torch.nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)


class CuboidModelMixin(GradientCheckpointingMixin, ModelMixin, ConfigMixin):
    """Base of the Earthformer networks: ``from_preset`` and ``set_attention_backend`` on top of Diffusers' mixins."""

    _supports_gradient_checkpointing = True
    #: Published configurations: preset name -> constructor keyword arguments.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self) -> None:
        super().__init__()
        # `@register_to_config` has recorded the arguments before the subclass builds anything.
        check_model_config_memory(type(self), dict(self.config))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """Build the published configuration ``name`` (randomly initialised); ``overrides`` replace its entries."""
        if name not in cls.presets:
            raise ValueError(f"unknown preset {name!r} for {cls.__name__}; expected one of {sorted(cls.presets)}")
        return cls(**{**cls.presets[name], **overrides})

    def set_attention_backend(self, backend: str) -> None:
        """Use ``backend`` ("sdpa" default, "reference" plain einsum + explicit mask, "xformers") in every layer."""
        check_attention_backend(backend)
        for module in self.modules():
            if isinstance(module, CuboidAttentionBase):
                module.attention_backend = backend

    @property
    def attention_backend(self) -> str:
        backends = {m.attention_backend for m in self.modules() if isinstance(m, CuboidAttentionBase)}
        return backends.pop() if len(backends) == 1 else "mixed"


def check_sequence(name: str, tensor: Any, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a floating-point tensor of shape ``expected`` (None = any size).

    Only the metadata is read. The values are not: ``torch.isfinite(tensor).all()`` would wait for the device at
    every call, i.e. at every denoising and training step. The callers check values once instead: the pipelines'
    ``check_inputs`` refuse non-finite context and latents, the data sets non-finite items, and the trainers stop
    on a non-finite loss.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != len(expected):
        raise ValueError(
            f"{name} must have {len(expected)} dimensions {_fmt(expected)}, got shape {tuple(tensor.shape)}"
        )
    for axis, (size, want) in enumerate(zip(tensor.shape, expected)):
        if want is not None and size != want:
            raise ValueError(
                f"{name} has size {size} on axis {axis}, expected {want}: "
                f"shape {tuple(tensor.shape)} vs {_fmt(expected)}"
            )
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_timestep(timestep: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """A scalar or ``(B,)`` timestep as a ``(B,)`` tensor; anything else raises ``ValueError``. The values are not
    read (a device sync at every step, see :func:`check_sequence`); the pipelines take them from their scheduler."""
    if not isinstance(timestep, torch.Tensor):
        timestep = torch.tensor(timestep, device=device)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch_size)
    if timestep.ndim != 1 or timestep.shape[0] != batch_size:
        raise ValueError(f"timestep must be a scalar or of shape ({batch_size},), got shape {tuple(timestep.shape)}")
    return timestep.to(device)


def _fmt(expected: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if v is None else str(v) for v in expected) + ")"
