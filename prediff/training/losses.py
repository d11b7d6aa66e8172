"""Training losses of PreDiff's components, as in the official code.

- Autoencoder ([`vae_generator_loss`], [`hinge_discriminator_loss`], [`PatchGANDiscriminator`]): L1
  reconstruction + `kl_weight` * KL to N(0, I) (both summed over elements and averaged over frames) + an
  adversarial PatchGAN term whose weight adapts to the ratio of gradient norms at the decoder's last layer,
  switched on from `disc_start` (LDM's `LPIPSWithDiscriminator` with perceptual weight 0).
- Denoiser ([`DiffusionLoss`]): MSE between predicted and true noise, averaged per sample, optionally
  weighted by a learned log-variance per timestep: `mean_b(mse_b / exp(logvar[t_b]) + logvar[t_b])`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = [
    "DiffusionLoss",
    "PatchGANDiscriminator",
    "adaptive_adversarial_weight",
    "gaussian_kl",
    "hinge_discriminator_loss",
    "vae_generator_loss",
]


class PatchGANDiscriminator(ModelMixin, ConfigMixin):
    r"""PatchGAN discriminator (pix2pix `NLayerDiscriminator`): scores overlapping patches of a frame.

    Parameters:
        in_channels (`int`, defaults to 1): frame channels.
        base_channels (`int`, defaults to 64): width of the first layer, doubled per layer up to 8x.
        num_layers (`int`, defaults to 3): strided layers.

    Input `(N, C, H, W)`; output logits `(N, 1, H', W')`, one per patch. Weights are drawn from N(0, 0.02)
    (batch-norm scales from N(1, 0.02)), as in the official code.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(base_channels * prev, base_channels * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(base_channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(base_channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.main(frames)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the first axis, shape `(N,)`.

    `logvar` is clamped to [-30, 20] as in Diffusers' `DiagonalGaussianDistribution`.
    """
    logvar = logvar.clamp(-30.0, 20.0)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1)


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """`0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))`."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_adversarial_weight(
    rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float
) -> torch.Tensor:
    """`disc_weight * |d rec / d W| / (|d adv / d W| + 1e-4)`, clamped to [0, 1e4], detached; `W` the
    decoder's last layer. Balances the adversarial gradient against the reconstruction gradient (Esser et
    al.)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach() * disc_weight


def vae_generator_loss(
    frames: torch.Tensor,
    reconstruction: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float,
    logits_fake: torch.Tensor | None = None,
    last_layer: torch.Tensor | None = None,
    disc_weight: float = 0.5,
    disc_factor: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The autoencoder's loss.

    Args:
        frames, reconstruction: `(N, C, H, W)` in [0, 1].
        mean, logvar: posterior moments `(N, c, h, w)`.
        kl_weight: weight of the KL term.
        logits_fake: discriminator logits of the reconstruction (needed when `disc_factor > 0`).
        last_layer: the decoder's last weight, for the adaptive weight (needed when `disc_factor > 0`).
        disc_weight, disc_factor: adversarial weighting; `disc_factor = 0` (before `disc_start`) turns it off.

    Returns:
        `(loss, logs)`: the scalar loss and its detached parts (`rec`, `kl`, `adv`, `adv_weight`).
    """
    n = frames.shape[0]
    # Sum over elements, mean over frames (the official nll with its fixed log-variance of 0).
    rec = (frames - reconstruction).abs().sum() / n
    kl = gaussian_kl(mean.float(), logvar.float()).sum() / n
    loss = rec + kl_weight * kl
    logs = {"rec": rec.detach(), "kl": kl.detach()}
    if disc_factor > 0:
        if logits_fake is None or last_layer is None:
            raise ValueError("disc_factor > 0 needs logits_fake and last_layer")
        adv = -logits_fake.mean()
        if torch.is_grad_enabled():
            weight = adaptive_adversarial_weight(rec, adv, last_layer, disc_weight)
        else:
            weight = torch.zeros((), device=frames.device)
        loss = loss + weight * disc_factor * adv
        logs.update(adv=adv.detach(), adv_weight=weight)
    return loss, logs


class DiffusionLoss(nn.Module):
    """Epsilon MSE per sample with an optional learned log-variance per timestep (not used at sampling).

    Args:
        num_train_timesteps: size of the log-variance table.
        learn_logvar: learn it (else the loss is the plain mean of the per-sample MSE).
        logvar_init: its initial value.
    """

    def __init__(self, num_train_timesteps: int = 1000, learn_logvar: bool = True, logvar_init: float = 0.0):
        super().__init__()
        self.learn_logvar = learn_logvar
        if learn_logvar:
            self.logvar = nn.Parameter(torch.full((num_train_timesteps,), float(logvar_init)))

    def forward(
        self, noise_pred: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(loss, mse)`: the training loss and the plain per-batch epsilon MSE (for logging)."""
        per_sample = (noise_pred.float() - noise.float()).pow(2).flatten(1).mean(1)
        mse = per_sample.mean()
        if not self.learn_logvar:
            return mse, mse.detach()
        logvar = self.logvar[timesteps]
        return (per_sample / logvar.exp() + logvar).mean(), mse.detach()
