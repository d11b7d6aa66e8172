"""The non-finite loss and gradient guards of the training loop: a NaN or infinite loss, or gradient norm, on any
process stops every process before the optimizer steps and before anything is saved, so the last checkpoint
stays the last good one."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["NonFiniteGradientError", "NonFiniteLossError", "check_finite_loss", "clip_and_check_gradients"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving, earlier checkpoints are intact."""


class NonFiniteGradientError(NonFiniteLossError):
    """The gradients became NaN or infinite although the loss was finite; training stopped before the optimizer
    step and without saving, earlier checkpoints are intact."""


def check_finite_loss(
    accelerator: Any,
    losses: dict[str, torch.Tensor],
    step: int,
    micro_step: int,
    where_to_resume: Callable[[], str],
) -> float:
    """The sum of `losses` averaged over the processes; raises [`NonFiniteLossError`] on every process if it is
    NaN or infinite on any.

    Args:
        accelerator: the run's `accelerate.Accelerator`.
        losses: this micro-batch's losses (optimizer name -> loss).
        step, micro_step: the optimizer step being computed and the micro-batch number (for the message).
        where_to_resume: the end of the message, which checkpoint is kept and how to go on from it.
    """
    acc = accelerator
    total = sum(loss.detach().float() for loss in losses.values())
    bad = (~torch.isfinite(total)).float()
    stats = torch.stack([torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0), bad])
    if acc.num_processes > 1:
        stats = acc.reduce(stats, reduction="sum")
    if stats[1].item() > 0:
        values = {k: float(v.detach()) for k, v in losses.items()}
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {step} (micro-batch {micro_step}, "
            f"losses on process {acc.process_index}: {values}); training stopped without saving. "
            f"{where_to_resume()}, e.g. with a lower learning_rate, max_grad_norm or mixed_precision "
            f"'no', and check the data for NaN values"
        )
    return float(stats[0].item()) / acc.num_processes


def clip_and_check_gradients(
    accelerator: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    max_grad_norm: float | None,
    mixed_precision: str,
    step: int,
    micro_step: int,
    where_to_resume: Callable[[], str],
) -> dict[str, float]:
    """Before an optimizer step: the global gradient norm of every optimizer's parameters, clipped to
    `max_grad_norm` when it is set. Raises [`NonFiniteGradientError`] on every process, before any optimizer
    steps, if a norm is NaN or infinite on any (except under fp16's gradient scaler, which skips such steps
    itself). Returns the norms (optimizer name -> norm before clipping).

    `step`, `micro_step` and `where_to_resume` are as in [`check_finite_loss`]; `mixed_precision` names the likely
    cause of bf16 failures on the CPU.
    """
    from accelerate.utils import DistributedType

    acc = accelerator
    scaler = getattr(acc, "scaler", None)
    # Accelerate measures and clips sharded gradients as a whole (FSDP, DeepSpeed; under DeepSpeed its own
    # step clips, to the config's gradient_clipping). With fp16 under DDP the gradients still carry the
    # loss scale, which the grad scaler divides out in each optimizer's step; they cannot be unscaled here
    # (its update() after the first optimizer's step would unscale the second one twice), so the bound and
    # the norm are scaled instead, which is the same clip.
    by_accelerate = scaler is None or acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    clip = acc.clip_grad_norm_ if by_accelerate else torch.nn.utils.clip_grad_norm_
    scale = 1.0 if by_accelerate else scaler.get_scale()
    # Without max_grad_norm the bound is infinite: the call only measures the norm.
    max_norm = max_grad_norm * scale if max_grad_norm is not None else math.inf
    values = {}
    for name, opt in optimizers.items():
        params = [p for group in opt.param_groups for p in group["params"]]
        norm = clip(params, max_norm)
        # DeepSpeed knows the norm only after its step, where it also skips non-finite gradients itself.
        if norm is not None:
            values[name] = float(norm) / scale
    bad = torch.tensor([float(not all(math.isfinite(v) for v in values.values()))], device=acc.device)
    if acc.num_processes > 1:
        bad = acc.reduce(bad, reduction="sum")
    # fp16's gradient scaler expects overflows: it skips that step itself and lowers the loss scale.
    if bad.item() > 0 and scaler is None:
        cause = ""
        if acc.device.type == "cpu" and mixed_precision == "bf16":
            cause = (
                "mixed_precision 'bf16' on the CPU is the likely cause: PyTorch's oneDNN bf16 Conv3d backward "
                "intermittently returns NaN weight gradients for small layers (the tiny alignment recipe hits "
                "it within a few steps); on the CPU use mixed_precision 'no'. "
            )
        raise NonFiniteGradientError(
            f"the gradients became NaN or infinite at step {step} (micro-batch "
            f"{micro_step}, gradient norms on process {acc.process_index}: {values}) although the loss was "
            f"finite; training stopped before the optimizer step, without saving. {cause}"
            f"{where_to_resume()}, e.g. with a lower learning_rate or mixed_precision 'no'"
        )
    return values
