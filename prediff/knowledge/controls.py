"""Built-in knowledge controls: anticipated intensity, energy conservation, any function of a forecast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import (
    DEFAULT_CONTROL_SCALE,
    DEFAULT_FINAL_ITERATIONS,
    DEFAULT_MAX_STEP,
    KnowledgeControl,
    KnowledgeControlState,
    per_sample_values,
)
from .defaults import CONTROL_METHODS, DEFAULT_CONTROL_METHOD

__all__ = [
    "AnticipatedIntensityControl",
    "EnergyConservationControl",
    "FunctionControl",
    "LearnedStatisticControl",
]

#: What a learned control's network reads: the clean estimate (at timestep 0) or the noisy latents `z_t`.
LEARNED_INPUTS = ("clean", "noisy")


class LearnedStatisticControl(KnowledgeControl):
    """Steer a statistic predicted by a knowledge-alignment network `U_phi(z_t, t) -> (N, T_out, K)` to a
    target.

    The network is this control's own `model` or, when None, the pipeline's `knowledge_model`. Subclasses
    choose the reduction of the prediction and the target; the violation is the per-sample L2 norm of their
    difference, as in the official code (whose norm runs over the whole batch instead).

    Args:
        model (`torch.nn.Module`, *optional*): the alignment network; default: the pipeline's.
        network_input (`str`, *optional*): `"clean"` evaluates the network on the sampler's clean estimate at
            timestep 0, the gradient on x0 of DPS (Chung et al. 2023): the network then reads a sharp sample,
            where its prediction depends strongly on the latents. `"noisy"` evaluates it on `z_t` at the current
            timestep, as the official code does; at high noise the prediction barely depends on `z_t`, so the
            Gauss-Newton step of form "x0" overshoots. Default: `"noisy"` for form "official", else `"clean"`.
        kwargs: see [`KnowledgeControl`].
    """

    def __init__(self, model: nn.Module | None = None, network_input: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if network_input is None:
            network_input = "noisy" if self.form == "official" else "clean"
        if network_input not in LEARNED_INPUTS:
            raise ValueError(f"network_input must be one of {LEARNED_INPUTS}, got {network_input!r}")
        self.model = model
        self.network_input = network_input

    def check(self, knowledge_model: nn.Module | None) -> None:
        if self.model is None and knowledge_model is None:
            raise ValueError(
                f"{type(self).__name__} needs a knowledge-alignment network: pass model=... or build the "
                "pipeline with knowledge_model=..."
            )

    def predict(self, state: KnowledgeControlState) -> torch.Tensor:
        """`U_phi(z_t, t)` or, with `network_input="clean"`, `U_phi(x0, 0)`; shape `(N, T_out, K)`."""
        model = self.model if self.model is not None else state.knowledge_model
        if model is None:
            self.check(None)
        if self.network_input == "clean":
            latents, timestep = state.offset_latents(state.pred_original_sample()), torch.zeros_like(state.timestep)
        else:
            latents, timestep = state.offset_latents(), state.timestep
        latents = latents.to(model.dtype)
        return model(latents, timestep.expand(latents.shape[0])).sample.to(state.latents.dtype)


class AnticipatedIntensityControl(LearnedStatisticControl):
    """Anticipated average intensity: the mean of the forecast over all future frames and pixels is steered to
    a target (PreDiff's extreme-precipitation "what-if" experiments).

    Args:
        target (`float` or sequence, *optional*): anticipated mean intensity in the data's physical units
            (e.g. VIL 0-255); a number, one per context `(B,)` or one per ensemble member `(B * M,)`.
        scale (`float`, defaults to 1.0): guidance strength; with the default form "x0", the fraction of the
            remaining gap closed at every step (official SEVIR-LR: 50 with `method="learned"` and
            `form="official"`).
        method (`str`, defaults to `"analytic"`): `"analytic"` decodes the current clean estimate with the
            autoencoder and averages it, no training needed; it is exact, so with the default form it reaches
            the target (measured on the shipped pipeline: within 0.02 sigma up to mu + 4 sigma). `"learned"`
            predicts the per-frame mean intensity of the clean forecast from `z_t` with a trained
            [`~prediff.KnowledgeAlignmentModel`] (the official method): cheaper per step, but only as accurate
            as the network; train it for the control (`alignment-robust.yaml` of the shipped recipes: measured
            within 0.12 sigma up to mu + 4 sigma).
        n_sigma, mean, std (`float`, *optional*): give the target as `mean + n_sigma * std` of the training
            distribution of future mean intensity (physical units) instead of `target`; PreDiff uses n in
            {-4, -2, 0, 2, 4}.
        model (`torch.nn.Module`, *optional*): the alignment network for `method="learned"`; default: the
            pipeline's.
        network_input (`str`, *optional*): what the learned network reads (see [`LearnedStatisticControl`]).
        form, differentiate_through_unet, max_step, final_iterations: see [`~prediff.knowledge.KnowledgeControl`].

    The violation is `|mean intensity - target|` on a [0, 1] scale linear in physical units: the mean and the
    target are divided by the pipeline's physical range. With a value transform (rain rate in dB) the mean is
    still taken in physical units, mm/h: an anticipated mean rain rate, not a mean of dB. The learned statistic
    is trained on the same scale (`prediff train alignment`).
    """

    # Per-row values through per_sample_values, nothing across rows: the pipeline may take the rows in chunks.
    rowwise = True

    def __init__(
        self,
        target: Any = None,
        scale: float = DEFAULT_CONTROL_SCALE,
        method: str = DEFAULT_CONTROL_METHOD,
        n_sigma: float | None = None,
        mean: float | None = None,
        std: float | None = None,
        model: nn.Module | None = None,
        form: str = "x0",
        differentiate_through_unet: bool = False,
        max_step: float | None = DEFAULT_MAX_STEP,
        final_iterations: int = DEFAULT_FINAL_ITERATIONS,
        network_input: str | None = None,
    ):
        super().__init__(
            model=model,
            network_input=network_input,
            scale=scale,
            form=form,
            differentiate_through_unet=differentiate_through_unet,
            max_step=max_step,
            final_iterations=final_iterations,
        )
        if method not in CONTROL_METHODS:
            raise ValueError(f"method must be one of {CONTROL_METHODS}, got {method!r}")
        sigma_form = (n_sigma, mean, std)
        if target is None:
            if any(v is None for v in sigma_form):
                raise ValueError(
                    "give either target or all of n_sigma, mean and std; got target=None, "
                    f"n_sigma={n_sigma}, mean={mean}, std={std}"
                )
            if std < 0:
                raise ValueError(f"std must be >= 0, got {std}")
            target = mean + n_sigma * std
        elif any(v is not None for v in sigma_form):
            raise ValueError(f"give either target or n_sigma/mean/std, not both (target={target}, n_sigma={n_sigma})")
        self.target = target
        self.method = method

    def check(self, knowledge_model: nn.Module | None) -> None:
        if self.method == "learned" and self.model is None and knowledge_model is None:
            raise ValueError(
                "AnticipatedIntensityControl(method='learned') needs a KnowledgeAlignmentModel: build the "
                "pipeline with knowledge_model=..., pass model=..., or use method='analytic'"
            )

    def statistic(self, state: KnowledgeControlState) -> torch.Tensor:
        """The current mean intensity of every sample, `(N,)`, in the [0, 1] scale linear in physical units
        (mm/h for rain rate, whatever the pipeline's value transform)."""
        if self.method == "learned":
            return self.predict(state).mean(dim=(1, 2))
        frames = state.decode(state.pred_original_sample())
        return state.to_intensity_unit(frames).mean(dim=(1, 2, 3, 4))

    def violation(self, state: KnowledgeControlState) -> torch.Tensor:
        target = state.to_intensity_unit(per_sample_values(self.target, state, "target"))
        return (self.statistic(state) - target).abs()

    def __repr__(self) -> str:
        return f"AnticipatedIntensityControl(target={self.target}, scale={self.scale}, method={self.method!r})"


class EnergyConservationControl(LearnedStatisticControl):
    """Energy conservation for N-body dynamics: every future frame's total energy, as predicted from `z_t` by
    a knowledge-alignment network trained on simulator energies, is steered to the initial energy.

    Args:
        initial_energy (`float` or sequence): the conserved energy (kinetic + potential, in the units the
            alignment network was trained on); a number, one per context `(B,)` or one per member `(B * M,)`.
        scale (`float`, defaults to 1.0): guidance strength (see [`~prediff.knowledge.KnowledgeControl`]).
        model (`torch.nn.Module`, *optional*): alignment network with output `(N, T_out, 1)`; default: the
            pipeline's `knowledge_model`.
        network_input (`str`, *optional*): what the network reads (see [`LearnedStatisticControl`]).
        form, differentiate_through_unet, max_step, final_iterations: see [`~prediff.knowledge.KnowledgeControl`].

    The violation is the L2 norm over the future frames of `E_pred(frame) - initial_energy`.
    """

    # Per-row values through per_sample_values, nothing across rows: the pipeline may take the rows in chunks.
    rowwise = True

    def __init__(
        self,
        initial_energy: Any,
        scale: float = DEFAULT_CONTROL_SCALE,
        model: nn.Module | None = None,
        form: str = "x0",
        differentiate_through_unet: bool = False,
        max_step: float | None = DEFAULT_MAX_STEP,
        final_iterations: int = DEFAULT_FINAL_ITERATIONS,
        network_input: str | None = None,
    ):
        super().__init__(
            model=model,
            network_input=network_input,
            scale=scale,
            form=form,
            differentiate_through_unet=differentiate_through_unet,
            max_step=max_step,
            final_iterations=final_iterations,
        )
        self.initial_energy = initial_energy

    def violation(self, state: KnowledgeControlState) -> torch.Tensor:
        energy = self.predict(state)
        if energy.shape[-1] != 1:
            raise ValueError(f"the energy network must predict one value per frame, got shape {tuple(energy.shape)}")
        target = per_sample_values(self.initial_energy, state, "initial_energy")
        return torch.linalg.vector_norm(energy[..., 0] - target[:, None], dim=1)

    def __repr__(self) -> str:
        return f"EnergyConservationControl(initial_energy={self.initial_energy}, scale={self.scale})"


class FunctionControl(KnowledgeControl):
    """A control from any differentiable function of the decoded forecast.

    Args:
        fn (`Callable`): `fn(forecast) -> violation`, forecast `(N, T_out, H, W, C)` in physical units (the
            decoded current clean estimate, rows ordered (context, member)), violation `(N,)` and >= 0, e.g.
            `lambda x: (x[..., :16, :16, :].mean(dim=(1, 2, 3, 4)) - 120).abs()`.
        scale (`float`, defaults to 1.0): guidance strength.
        form, differentiate_through_unet, max_step, final_iterations: see [`~prediff.knowledge.KnowledgeControl`].
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        scale: float = DEFAULT_CONTROL_SCALE,
        form: str = "x0",
        differentiate_through_unet: bool = False,
        max_step: float | None = DEFAULT_MAX_STEP,
        final_iterations: int = DEFAULT_FINAL_ITERATIONS,
    ):
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        super().__init__(
            scale=scale,
            form=form,
            differentiate_through_unet=differentiate_through_unet,
            max_step=max_step,
            final_iterations=final_iterations,
        )
        self.fn = fn

    def violation(self, state: KnowledgeControlState) -> torch.Tensor:
        loss = self.fn(state.decode(state.pred_original_sample()))
        if isinstance(loss, torch.Tensor) and loss.shape == (state.num_rows,) and (loss.detach() < 0).any():
            raise ValueError(f"the function of FunctionControl must return violations >= 0, got {loss.detach()}")
        return loss

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"FunctionControl(fn={name}, scale={self.scale})"
