"""What every prediff network shares: presets, attention-backend switching and input checks."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from .cuboid.attention import ATTENTION_BACKENDS, CuboidCrossAttentionLayer, CuboidSelfAttentionLayer, require_xformers


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

    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """Build the published configuration ``name`` (randomly initialised); ``overrides`` replace its entries."""
        if name not in cls.presets:
            raise ValueError(f"unknown preset {name!r} for {cls.__name__}; expected one of {sorted(cls.presets)}")
        return cls(**{**cls.presets[name], **overrides})

    def set_attention_backend(self, backend: str) -> None:
        """Use ``backend`` ("sdpa" default, "reference" plain einsum + explicit mask, "xformers") in every layer."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        if backend == "xformers":
            require_xformers()
        for module in self.modules():
            if isinstance(module, (CuboidSelfAttentionLayer, CuboidCrossAttentionLayer)):
                module.attention_backend = backend

    @property
    def attention_backend(self) -> str:
        backends = {
            m.attention_backend
            for m in self.modules()
            if isinstance(m, (CuboidSelfAttentionLayer, CuboidCrossAttentionLayer))
        }
        return backends.pop() if len(backends) == 1 else "mixed"


def check_sequence(name: str, tensor: Any, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a finite floating tensor of shape ``expected`` (None = any size)."""
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
    # A data-dependent check would break a full-graph compile; compiled callers validate eagerly beforehand.
    if not torch.compiler.is_compiling() and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_timestep(timestep: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """A scalar or ``(B,)`` timestep as a ``(B,)`` tensor; anything else raises ``ValueError``."""
    if not isinstance(timestep, torch.Tensor):
        timestep = torch.tensor(timestep, device=device)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch_size)
    if timestep.ndim != 1 or timestep.shape[0] != batch_size:
        raise ValueError(f"timestep must be a scalar or of shape ({batch_size},), got shape {tuple(timestep.shape)}")
    if timestep.is_floating_point() and not torch.compiler.is_compiling() and not torch.isfinite(timestep).all():
        raise ValueError("timestep contains NaN or infinite values")
    return timestep.to(device)


def _fmt(expected: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if v is None else str(v) for v in expected) + ")"
