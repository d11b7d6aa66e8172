"""The knowledge-control interface: what a control sees at a denoising step and how its gradient steers
sampling.

A control returns a per-sample violation ``L(z_t) >= 0``, differentiable in the noisy latents ``z_t``. Its
gradient ``g = dL/dz_t`` is applied in one of three forms:

- ``"x0"`` (the default, every scheduler): the clean estimate ``x0`` the sampler steps toward is moved by
  ``scale`` times the Gauss-Newton step that zeroes the violation to first order (see
  [`newton_step_size`]), through the noise estimate. With the default ``scale=1`` every step aims at a clean
  forecast that satisfies the control, whatever the sampler, its step count or the size of the gradient, so no
  strength has to be tuned per pipeline.
  At the last denoising step the clean estimate is the forecast itself, so the step is repeated there (up to
  ``final_iterations`` Gauss-Newton iterations, each from where the last one landed): a statistic that is not
  linear in the latents (a decoder) leaves a remainder after one step, and a few-step sampler has no later step
  to take it up.
- ``"score"`` (every scheduler): the noise estimate becomes ``eps + scale * sqrt(1 - alpha_bar_t) * g``, the
  classifier-guidance form with a fixed strength; it does not vanish for deterministic samplers (DDIM,
  DPM-Solver++), but how far it moves depends on the gradient's size, so ``scale`` needs tuning.
- ``"official"`` (DDPM only, PreDiff's own form): the posterior mean of ``z_{t-1}`` moves by ``-scale *
  sigma_t * g``, ``sigma_t`` the fixed-small posterior standard deviation (official SEVIR-LR scale: 50).

Both move the sample down the gradient of the violation. Unlike the official code, which couples the batch
through one norm over all samples, every violation here is per sample, so an ensemble member is never steered
by another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..utils.units import to_intensity_unit
from .defaults import DEFAULT_CONTROL_SCALE

__all__ = [
    "CONTROL_FORMS",
    "DEFAULT_CONTROL_SCALE",
    "KnowledgeControl",
    "KnowledgeControlState",
    "knowledge_gradients",
    "newton_step_size",
    "per_sample_values",
]

CONTROL_FORMS = ("x0", "score", "official")
#: The default trust region of the x0 form: none (see `KnowledgeControl`'s `max_step`).
DEFAULT_MAX_STEP = None
#: Gauss-Newton iterations of the x0 form at the last denoising step (see `KnowledgeControl`).
DEFAULT_FINAL_ITERATIONS = 3
#: They stop early once every violation is at most this fraction of what it was at the step's start.
FINAL_TOLERANCE = 1e-4


@dataclass
class KnowledgeControlState:
    """Everything a control may use at one denoising step. Rows are ordered (context sample, ensemble member).

    Args:
        latents (`torch.Tensor` of shape `(N, T_out, h, w, c)`): the noisy latents `z_t` (the denoiser's
            input), a leaf that requires grad; `N = B * M` for `B` contexts and `M` ensemble members.
        timestep (`torch.Tensor`, scalar): the scheduler's timestep `t`.
        noise_pred (`torch.Tensor` of shape `(N, T_out, h, w, c)`): the denoiser's noise estimate; part of the
            graph of `latents` only for controls with `differentiate_through_unet=True`.
        context_latents (`torch.Tensor` of shape `(N, T_in, h, w, c)`): the encoded context.
        alpha_prod_t (`torch.Tensor`, scalar): `alpha_bar_t` of the training schedule.
        batch_index (`torch.Tensor` of shape `(N,)`): the context sample (0 to B-1) of each row.
        decode (`Callable`): latents `(N, T, h, w, c)` -> frames `(N, T, H, W, C)` in physical units,
            differentiable.
        value_range (`tuple[float, float]`): (transformed) values mapped to 0 and 1 before encoding.
        knowledge_model (`torch.nn.Module`, *optional*): the pipeline's knowledge-alignment network.
        latent_offset (`torch.Tensor` of shape `(N, T_out, h, w, c)`, *optional*): what the diffusion latents
            are relative to: the encoded extrapolation when the pipeline has an extrapolator (the diffusion then
            models a residual), else None. `decode` already adds it; alignment networks see `latents + offset`.
        value_transform (`dict`, *optional*): the pipeline's value transform applied before `value_range` (None:
            linear).
        row_start (`int`, defaults to 0), all_rows (`int`, *optional*), all_contexts (`int`, *optional*): when the
            state holds a chunk of the forecast's rows (see [`KnowledgeControl`]'s `rowwise`), where the chunk
            starts and how many rows and contexts the whole forecast has; None: these rows are all of them.
            [`per_sample_values`] uses them to pick a chunk's share of per-row and per-context values.
        final_step (`bool`, defaults to False): whether this is the sampler's last step, whose clean estimate is
            the forecast (form "x0" then iterates its Gauss-Newton step, see [`KnowledgeControl`]).
    """

    latents: torch.Tensor
    timestep: torch.Tensor
    noise_pred: torch.Tensor
    context_latents: torch.Tensor
    alpha_prod_t: torch.Tensor
    batch_index: torch.Tensor
    decode: Callable[[torch.Tensor], torch.Tensor]
    value_range: tuple[float, float]
    knowledge_model: nn.Module | None = None
    latent_offset: torch.Tensor | None = None
    value_transform: dict[str, Any] | None = None
    row_start: int = 0
    all_rows: int | None = None
    all_contexts: int | None = None
    final_step: bool = False

    @property
    def num_rows(self) -> int:
        """Rows of this state (of the chunk, when the pipeline differentiates the rows in chunks)."""
        return self.latents.shape[0]

    @property
    def num_contexts(self) -> int:
        """Contexts of the whole forecast."""
        if self.all_contexts is not None:
            return self.all_contexts
        return int(self.batch_index.max().item()) + 1

    def offset_latents(self, latents: torch.Tensor | None = None) -> torch.Tensor:
        """`latents + latent_offset` in the autoencoder's (scaled) latent space; `latents` defaults to the noisy
        `z_t` (pass the clean estimate for its full latents)."""
        latents = self.latents if latents is None else latents
        if self.latent_offset is None:
            return latents
        return latents + self.latent_offset.to(latents.dtype)

    def pred_original_sample(self) -> torch.Tensor:
        """The clean estimate `z_0 = (z_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)`, `(N, T_out, h,
        w, c)`."""
        a = self.alpha_prod_t.to(self.latents.dtype)
        return (self.latents - (1 - a).sqrt() * self.noise_pred) / a.sqrt()

    def to_intensity_unit(self, value: torch.Tensor | float) -> torch.Tensor | float:
        """Physical units -> [0, 1] linearly between the physical ends of the value range, the scale of mean
        intensities (see [`~prediff.utils.units.to_intensity_unit`]); `to_unit` for a linear pipeline."""
        return to_intensity_unit(value, self.value_range, self.value_transform)


def per_sample_values(value: Any, state: KnowledgeControlState, name: str) -> torch.Tensor:
    """A control argument given as a number, one value per context `(B,)` or one per row `(B * M,)`, as
    `(N,)` for the state's rows (a chunk's share when the state holds a chunk)."""
    device, dtype = state.latents.device, state.latents.dtype
    tensor = torch.as_tensor(value, dtype=torch.float64).to(device=device, dtype=dtype)
    all_rows = state.num_rows if state.all_rows is None else state.all_rows
    if tensor.ndim == 0:
        return tensor.expand(state.num_rows)
    if tensor.ndim == 1 and tensor.shape[0] == all_rows:
        return tensor[state.row_start : state.row_start + state.num_rows]
    if tensor.ndim == 1 and tensor.shape[0] == state.num_contexts:
        return tensor[state.batch_index]
    raise ValueError(
        f"{name} must be a number, one value per context ({state.num_contexts},) or one per ensemble member "
        f"({all_rows},), got shape {tuple(tensor.shape)}"
    )


class KnowledgeControl:
    """Base class of a knowledge control. Subclasses implement [`~KnowledgeControl.violation`].

    Args:
        scale (`float`, defaults to 1.0): guidance strength; 0 leaves the forecast exactly unchanged. With form
            "x0" the fraction of the Gauss-Newton step taken at every denoising step (1: all of it).
        form (`str`, defaults to `"x0"`): `"x0"` (every scheduler, normalised), `"score"` (every scheduler,
            fixed strength) or `"official"` (PreDiff's DDPM mean shift).
        differentiate_through_unet (`bool`, defaults to False): let the gradient flow through the denoiser's
            noise estimate too (one extra backward pass through the denoiser per step). By default the
            estimate is held fixed, which is exact for controls on `z_t` itself and much cheaper for controls
            on the clean estimate.
        max_step (`float`, *optional*): form "x0" only: the largest change of the clean estimate per denoising
            step (at the last step: per Gauss-Newton iteration), as a root mean square over the (scaled) latents
            (see [`newton_step_size`]); None (default): no bound. A bound of about 1 keeps a learned statistic
            with weak gradients from throwing the sample out of the data, at the price of not reaching far
            targets.
        final_iterations (`int`, defaults to 3): form "x0" only: Gauss-Newton iterations at the sampler's last
            step, each from the clean estimate the previous one gave (1: a single step, as at the other steps),
            until every violation is at most 1e-4 of what it was at the step's start. Each iteration costs one
            more evaluation and gradient of the violation, at that step only. Not with
            `differentiate_through_unet`, where moving the latents would need a new noise estimate.

    A subclass whose violation of any chunk of rows equals those rows of the whole forecast's violation (per-row
    values picked with [`per_sample_values`], nothing computed across rows) sets the class attribute `rowwise`
    to True: the pipeline then differentiates the rows in chunks, so that a control that decodes holds the
    autoencoder's graph of one chunk rather than of the whole ensemble. The built-in controls are rowwise;
    [`FunctionControl`] is not, since its function may combine rows.
    """

    #: Whether the violation may be computed on chunks of rows (see the class docstring).
    rowwise: bool = False

    def __init__(
        self,
        scale: float = DEFAULT_CONTROL_SCALE,
        form: str = "x0",
        differentiate_through_unet: bool = False,
        max_step: float | None = DEFAULT_MAX_STEP,
        final_iterations: int = DEFAULT_FINAL_ITERATIONS,
    ):
        scale = float(scale)
        if not torch.isfinite(torch.tensor(scale)) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {scale}")
        if form not in CONTROL_FORMS:
            raise ValueError(f"form must be one of {CONTROL_FORMS}, got {form!r}")
        self.scale = scale
        self.form = form
        self.differentiate_through_unet = bool(differentiate_through_unet)
        if max_step is not None and not (math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step must be a positive number or None, got {max_step!r}")
        self.max_step = max_step
        if isinstance(final_iterations, bool) or not isinstance(final_iterations, int) or final_iterations < 1:
            raise ValueError(f"final_iterations must be an integer >= 1, got {final_iterations!r}")
        self.final_iterations = final_iterations

    def check(self, knowledge_model: nn.Module | None) -> None:
        """Raise `ValueError` if this control cannot run with the pipeline's `knowledge_model` (called up
        front)."""

    def violation(self, state: KnowledgeControlState) -> torch.Tensor:
        """The per-sample violation `L >= 0`, shape `(N,)`, differentiable in `state.latents`."""
        raise NotImplementedError(f"{type(self).__name__} must implement violation(state)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, form={self.form!r})"


def newton_step_size(
    violation: torch.Tensor, grad: torch.Tensor, alpha_prod_t: torch.Tensor, max_step: float | None = None
) -> torch.Tensor:
    """The per-sample factor `c = L / ((1 - alpha_bar_t) ||g||^2)`, shaped to broadcast against `grad`.

    With the noise estimate held fixed, `z_t = sqrt(alpha_bar_t) x0 + const`, so `dL/dx0 = sqrt(alpha_bar_t) g`
    for any control, `g = dL/dz_t`. The score-form shift `eps += sqrt(1 - alpha_bar_t) c g` moves the clean
    estimate by `dx0 = -(1 - alpha_bar_t) c g / sqrt(alpha_bar_t)`, which changes the violation by
    `-(1 - alpha_bar_t) c ||g||^2 = -L` to first order: the Gauss-Newton step that zeroes it. Samples whose
    gradient vanishes are left alone.

    `max_step` bounds the step as a trust region: the root mean square of `dx0` stays at most `max_step`. A
    statistic predicted from very noisy latents barely depends on them, and the full step would then throw the
    clean estimate far outside the data.
    """
    a = alpha_prod_t.to(grad.dtype)
    squared_norm = grad.flatten(1).pow(2).sum(dim=1)
    factor = violation / ((1 - a) * squared_norm)
    if max_step is not None:
        rms = (squared_norm / grad[0].numel()).sqrt()
        factor = torch.minimum(factor, max_step * a.sqrt() / ((1 - a) * rms))
    factor = torch.where(squared_norm > 0, factor, torch.zeros_like(factor))
    return factor.view(-1, *([1] * (grad.ndim - 1)))


def _newton_steps(
    control: KnowledgeControl, state: KnowledgeControlState, violation: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """The x0 form's summed step `sum_k c_k g_k` (the score-form gradient that moves the clean estimate by all of
    them): one Gauss-Newton step, or at the last denoising step up to `control.final_iterations`, each evaluated
    where the previous ones moved `z_t` (by `-(1 - alpha_bar_t) c g`, the noise estimate held fixed)."""
    a = state.alpha_prod_t.to(grad.dtype)
    total = newton_step_size(violation, grad, state.alpha_prod_t, control.max_step) * grad
    iterations = control.final_iterations if state.final_step and not control.differentiate_through_unet else 1
    for _ in range(iterations - 1):
        moved = replace(state, latents=(state.latents.detach() - (1 - a) * total).requires_grad_(True))
        loss = control.violation(moved)
        if (loss.detach() <= FINAL_TOLERANCE * violation).all():
            break
        (grad,) = torch.autograd.grad(loss.sum(), moved.latents)
        total = total + newton_step_size(loss.detach(), grad, state.alpha_prod_t, control.max_step) * grad
    return total


def knowledge_gradients(
    controls: Sequence[KnowledgeControl], state: KnowledgeControlState
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The scaled gradients of the controls, summed per form.

    Returns:
        `(score, official)`: `sum(scale * dL/dz_t)` over the score-form controls (x0-form controls included,
        their gradient times [`newton_step_size`]) and over the official-form controls, each
        `(N, T_out, h, w, c)` or None when no control of that form is active. Controls with scale 0 are
        skipped entirely (no model call, no gradient), so they cannot change the result.
    """
    if not state.latents.requires_grad:
        raise ValueError("state.latents must require grad so that the violation can be differentiated")
    sums: dict[str, torch.Tensor | None] = {"score": None, "official": None}
    active = [c for c in controls if c.scale != 0]
    for i, control in enumerate(active):
        loss = control.violation(state)
        if not isinstance(loss, torch.Tensor) or loss.shape != (state.num_rows,):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"{control!r}.violation must return shape ({state.num_rows},), got {shape}")
        if not loss.requires_grad:
            raise ValueError(f"{control!r}.violation does not depend on the latents (no gradient)")
        # Samples are independent, so the gradient of the sum is every sample's own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), state.latents, retain_graph=i < len(active) - 1)
        form = control.form
        if form == "x0":
            grad = _newton_steps(control, state, loss.detach(), grad)
            form = "score"
        grad = control.scale * grad
        current = sums[form]
        sums[form] = grad if current is None else current + grad
    return sums["score"], sums["official"]
