"""Knowledge controls: per-sample violations, gradients against plain autograd, combination, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from prediff.knowledge import (
    AnticipatedIntensityControl,
    EnergyConservationControl,
    FunctionControl,
    KnowledgeControl,
    KnowledgeControlState,
    knowledge_gradients,
    per_sample_values,
)
from prediff.models.alignment import KnowledgeAlignmentModel

VALUE_RANGE = (0.0, 255.0)


def linear_decode(latents: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in decoder (N, T, h, w, c) -> (N, T, 2h, 2w, 1) in physical units."""
    unit = latents.mean(dim=-1, keepdim=True).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return unit * 255.0


def make_state(n_contexts=2, members=2, seed=0, knowledge_model=None, alpha=0.3) -> KnowledgeControlState:
    g = torch.Generator().manual_seed(seed)
    n = n_contexts * members
    return KnowledgeControlState(
        latents=torch.randn(n, 2, 4, 4, 4, generator=g).requires_grad_(True),
        timestep=torch.tensor(500),
        noise_pred=torch.randn(n, 2, 4, 4, 4, generator=g),
        context_latents=torch.randn(n, 3, 4, 4, 4, generator=g),
        alpha_prod_t=torch.tensor(alpha),
        batch_index=torch.arange(n_contexts).repeat_interleave(members),
        decode=linear_decode,
        value_range=VALUE_RANGE,
        knowledge_model=knowledge_model,
    )


@pytest.fixture(scope="module")
def align() -> KnowledgeAlignmentModel:
    torch.manual_seed(0)
    return KnowledgeAlignmentModel(
        input_shape=(2, 4, 4, 4),
        out_channels=1,
        base_units=16,
        depth=(1, 1),
        num_heads=2,
        pool_heads_channels=8,
    ).eval()


def test_per_sample_values_broadcast_and_errors():
    state = make_state(n_contexts=2, members=3)
    assert torch.equal(per_sample_values(5.0, state, "x"), torch.full((6,), 5.0))
    assert per_sample_values([1.0, 2.0], state, "x").tolist() == [1, 1, 1, 2, 2, 2]
    assert per_sample_values(list(range(6)), state, "x").tolist() == list(range(6))
    with pytest.raises(ValueError, match=r"target must be a number, one value per context \(2,\).*\(6,\)"):
        per_sample_values([1.0, 2.0, 3.0], state, "target")


def test_control_arguments_are_validated():
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        FunctionControl(lambda x: x.sum(), scale=-1)
    with pytest.raises(ValueError, match="form must be one of"):
        FunctionControl(lambda x: x.sum(), form="mean-shift")
    with pytest.raises(ValueError, match="fn must be callable"):
        FunctionControl(3.0)
    with pytest.raises(ValueError, match="method must be one of"):
        AnticipatedIntensityControl(target=1.0, method="exact")
    with pytest.raises(ValueError, match="give either target or all of n_sigma"):
        AnticipatedIntensityControl(n_sigma=2.0, mean=10.0)
    with pytest.raises(ValueError, match="not both"):
        AnticipatedIntensityControl(target=3.0, n_sigma=2.0, mean=1.0, std=1.0)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="final_iterations must be an integer >= 1"):
            AnticipatedIntensityControl(target=3.0, final_iterations=bad)
    assert AnticipatedIntensityControl(n_sigma=-2.0, mean=30.0, std=4.0).target == 22.0
    with pytest.raises(ValueError, match="needs a KnowledgeAlignmentModel"):
        AnticipatedIntensityControl(target=3.0, method="learned").check(None)
    # The default method is the exact one and needs no network.
    AnticipatedIntensityControl(target=3.0).check(None)
    assert AnticipatedIntensityControl(target=3.0).method == "analytic"
    with pytest.raises(ValueError, match="needs a knowledge-alignment network"):
        EnergyConservationControl(initial_energy=1.0).check(None)
    AnticipatedIntensityControl(target=3.0, method="analytic").check(None)  # needs no network


def test_analytic_intensity_gradient_matches_plain_autograd():
    state = make_state()
    control = AnticipatedIntensityControl(target=[40.0, 200.0], scale=3.0, method="analytic", form="score")
    score, official = knowledge_gradients([control], state)
    assert official is None
    # Plain reference: |mean(decode(z0)) / 255 - target / 255| with the noise estimate held fixed.
    z = state.latents.detach().clone().requires_grad_(True)
    a = state.alpha_prod_t
    z0 = (z - math.sqrt(1 - a) * state.noise_pred) / math.sqrt(a)
    stat = (linear_decode(z0) / 255.0).mean(dim=(1, 2, 3, 4))
    target = torch.tensor([40.0, 40.0, 200.0, 200.0]) / 255.0
    (ref,) = torch.autograd.grad((stat - target).abs().sum(), z)
    torch.testing.assert_close(score, 3.0 * ref)


def test_violation_is_per_sample_not_batch_coupled(align):
    state = make_state(knowledge_model=align)
    controls = [
        AnticipatedIntensityControl(target=[10.0, 90.0], scale=1.0, method="learned", form="score"),
        AnticipatedIntensityControl(target=[10.0, 90.0], scale=1.0, method="analytic", form="score"),
        EnergyConservationControl(initial_energy=[0.5, -0.5], scale=1.0, form="score"),
    ]
    for control in controls:
        full, _ = knowledge_gradients([control], state)
        # Row 3 alone (context 1, member 1) gets exactly its gradient within the batch.
        single = KnowledgeControlState(
            latents=state.latents[3:].detach().clone().requires_grad_(True),
            timestep=state.timestep,
            noise_pred=state.noise_pred[3:],
            context_latents=state.context_latents[3:],
            alpha_prod_t=state.alpha_prod_t,
            batch_index=torch.tensor([0]),
            decode=linear_decode,
            value_range=VALUE_RANGE,
            knowledge_model=align,
        )
        control_single = type(control).__new__(type(control))
        control_single.__dict__.update(control.__dict__)
        for name in ("target", "initial_energy"):
            if hasattr(control, name):
                setattr(control_single, name, getattr(control, name)[1])
        alone, _ = knowledge_gradients([control_single], single)
        torch.testing.assert_close(full[3:], alone, rtol=1e-4, atol=1e-6)
        assert full[:3].abs().sum() > 0


def test_learned_controls_follow_their_definitions(align):
    state = make_state(knowledge_model=align)
    with torch.no_grad():
        # By default the network reads the clean estimate at timestep 0; the official form reads z_t at t.
        clean = align(state.pred_original_sample(), torch.zeros_like(state.timestep)).sample  # (N, T, 1)
        noisy = align(state.latents, state.timestep).sample
    assert not torch.allclose(clean, noisy)
    intensity = AnticipatedIntensityControl(target=51.0, scale=1.0, method="learned", form="score")
    torch.testing.assert_close(intensity.violation(state), (clean.mean(dim=(1, 2)) - 0.2).abs())
    official = AnticipatedIntensityControl(target=51.0, method="learned", form="official")
    assert official.network_input == "noisy"
    torch.testing.assert_close(official.violation(state), (noisy.mean(dim=(1, 2)) - 0.2).abs())
    energy = EnergyConservationControl(initial_energy=0.25, scale=1.0, form="score", network_input="noisy")
    torch.testing.assert_close(energy.violation(state), (noisy[..., 0] - 0.25).norm(dim=1))
    with pytest.raises(ValueError, match="network_input must be one of"):
        EnergyConservationControl(initial_energy=0.25, network_input="x0")
    # A control's own model overrides the pipeline's.
    other = KnowledgeAlignmentModel(
        input_shape=(2, 4, 4, 4),
        out_channels=1,
        base_units=16,
        depth=(1, 1),
        num_heads=2,
        pool_heads_channels=8,
    ).eval()
    own = AnticipatedIntensityControl(target=51.0, method="learned", model=other)
    assert not torch.allclose(own.violation(state), intensity.violation(state))


def test_scale_zero_is_skipped_and_controls_combine_linearly():
    state = make_state()

    def must_not_run(x):
        raise AssertionError("a control with scale 0 was evaluated")

    assert knowledge_gradients([FunctionControl(must_not_run, scale=0.0)], state) == (None, None)

    def fa(x):
        return (x.mean(dim=(1, 2, 3, 4)) - 30.0) ** 2

    def fb(x):
        return x[:, :, :4].abs().mean(dim=(1, 2, 3, 4))

    both, _ = knowledge_gradients(
        [FunctionControl(fa, scale=2.0, form="score"), FunctionControl(fb, scale=0.5, form="score")], state
    )
    ga, _ = knowledge_gradients([FunctionControl(fa, scale=1.0, form="score")], state)
    gb, _ = knowledge_gradients([FunctionControl(fb, scale=1.0, form="score")], state)
    torch.testing.assert_close(both, 2.0 * ga + 0.5 * gb)
    score, official = knowledge_gradients(
        [FunctionControl(fa, scale=2.0, form="score"), FunctionControl(fb, scale=0.5, form="official")], state
    )
    torch.testing.assert_close(score, 2.0 * ga)
    torch.testing.assert_close(official, 0.5 * gb)


def test_differentiate_through_unet_uses_the_noise_graph():
    state = make_state()
    weight = torch.tensor(0.7)
    state.noise_pred = weight * state.latents  # a noise estimate that depends on z_t
    control = FunctionControl(lambda x: x.mean(dim=(1, 2, 3, 4)).abs(), form="score", differentiate_through_unet=True)
    with_graph, _ = knowledge_gradients([control], state)
    state.noise_pred = state.noise_pred.detach()
    without, _ = knowledge_gradients([control], state)
    a = state.alpha_prod_t
    # dz0/dz_t = (1 - sqrt(1 - a) * w) / sqrt(a) versus 1 / sqrt(a).
    torch.testing.assert_close(with_graph, without * (1 - math.sqrt(1 - a) * 0.7))


def test_bad_violations_raise():
    state = make_state()
    with pytest.raises(ValueError, match=r"must return shape \(4,\)"):
        knowledge_gradients([FunctionControl(lambda x: x.mean())], state)
    with pytest.raises(ValueError, match="violations >= 0"):
        knowledge_gradients([FunctionControl(lambda x: x.mean(dim=(1, 2, 3, 4)) - 1e6)], state)
    with pytest.raises(ValueError, match="does not depend on the latents"):
        knowledge_gradients([FunctionControl(lambda x: torch.ones(x.shape[0]))], state)
    with pytest.raises(NotImplementedError):
        knowledge_gradients([KnowledgeControl()], state)
    state.latents = state.latents.detach()
    with pytest.raises(ValueError, match="must require grad"):
        knowledge_gradients([FunctionControl(lambda x: x.mean(dim=(1, 2, 3, 4)).abs())], state)


@pytest.mark.parametrize("method", ["analytic", "learned"])
def test_x0_form_takes_the_gauss_newton_step_that_zeroes_the_violation(method, align):
    # With the noise estimate held fixed, z_t = sqrt(a) x0 + const: the x0-form shift of the noise estimate moves
    # z_t (through x0) by -(1 - a) c g. For the linear stand-in decoder the analytic violation is then zero (the
    # untrained network is not linear, so only the step itself is checked there).
    state = make_state(knowledge_model=align if method == "learned" else None)
    target = [40.0, 200.0]
    control = AnticipatedIntensityControl(target=target, method=method)
    assert control.form == "x0" and control.scale == 1.0
    violation = control.violation(state).detach()
    (grad,) = torch.autograd.grad(control.violation(state).sum(), state.latents)
    score, official = knowledge_gradients([control], state)
    assert official is None
    a = state.alpha_prod_t
    expected = violation / ((1 - a) * grad.flatten(1).pow(2).sum(1))
    torch.testing.assert_close(score, expected.view(-1, 1, 1, 1, 1) * grad)
    shifted = state.latents.detach() - (1 - a) * score
    after = control.violation(
        KnowledgeControlState(**{**state.__dict__, "latents": shifted.requires_grad_(True)})
    ).detach()
    if method == "analytic":
        assert (after < 1e-4 * violation).all(), (violation, after)


def saturating_decode(latents: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in decoder: the linear one through a softplus, as a decoder's output saturates."""
    return torch.nn.functional.softplus(linear_decode(latents) / 255.0 - 0.5) * 255.0


@pytest.mark.parametrize("iterations", [1, 2, 4])
def test_x0_form_iterates_its_gauss_newton_step_at_the_last_step_only(iterations):
    # A nonlinear statistic keeps a remainder after one first-order step; at the last step (whose clean estimate
    # is the forecast) the step is repeated from where it landed, each evaluation on the moved latents.
    control = AnticipatedIntensityControl(target=[150.0, 20.0], final_iterations=iterations)
    misses = {}
    for final in (False, True):
        state = make_state()
        state.decode, state.final_step = saturating_decode, final
        score, _ = knowledge_gradients([control], state)
        shifted = (state.latents.detach() - (1 - state.alpha_prod_t) * score).requires_grad_(True)
        before = control.violation(state).detach()
        misses[final] = (control.violation(replace(state, latents=shifted)).detach() / before).max().item()
    assert 1e-3 < misses[False] < 0.5  # one step leaves a remainder
    if iterations == 1:
        assert misses[True] == misses[False]
    else:
        # Newton's method: the remainder shrinks quadratically with every iteration.
        assert misses[True] < misses[False] ** iterations * 10, misses


def test_final_iterations_stop_once_the_violation_is_gone():
    calls = []

    def count(x):
        calls.append(1)
        return (x.mean(dim=(1, 2, 3, 4)) - 0.3).abs()

    state = make_state()
    state.final_step = True
    knowledge_gradients([FunctionControl(count, final_iterations=5)], state)
    # Linear: the first step zeroes it (to rounding), so the second evaluation ends the loop, not all five.
    assert len(calls) == 2


def test_newton_step_leaves_samples_without_gradient_alone():
    from prediff.knowledge import newton_step_size

    grad = torch.zeros(2, 3, 4)
    grad[0] = 1.0
    factor = newton_step_size(torch.tensor([2.0, 5.0]), grad, torch.tensor(0.5))
    assert factor.shape == (2, 1, 1)
    torch.testing.assert_close(factor[:, 0, 0], torch.tensor([2.0 / (0.5 * 12.0), 0.0]))
