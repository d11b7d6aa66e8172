"""Frame-wise handling of ``(B, T, H, W, C)`` sequences with Diffusers' variational autoencoders.

PreDiff's autoencoder *is* Diffusers' [`~diffusers.AutoencoderKL`] applied to every frame independently (no
latent scaling factor). This module holds its published configuration and the helpers that move whole
sequences in and out of latent space, shared by the pipelines and the training loops:

- [`autoencoder_from_preset`] builds a configuration ("prediff-sevirlr": 84,499,393 parameters, a 128x128x1
  frame becomes a 16x16x64 latent; "prediff-tiny" for tests), either as a frame-wise `AutoencoderKL` or, with
  `temporal_decoder=True`, as Diffusers' [`~diffusers.AutoencoderKLTemporalDecoder`] whose decoder mixes
  frames.
- [`with_lighter_decoder`] keeps a trained autoencoder's encoder (so its latents) and gives it a new, narrower
  decoder, as Diffusers' [`~diffusers.AsymmetricAutoencoderKL`]: the decoder of a fast student pipeline.
- [`encode_sequence`] / [`decode_sequence`] map `(B, T, H, W, C)` to `(B, T, h, w, c)` and back, chunked over
  frames so that long sequences or large ensembles fit in memory. Both are differentiable (knowledge control
  backpropagates through the decoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, AutoencoderKLTemporalDecoder

__all__ = [
    "AUTOENCODER_CLASSES",
    "AUTOENCODER_PRESETS",
    "autoencoder_from_preset",
    "decode_sequence",
    "encode_sequence",
    "latent_frame_shape",
    "with_lighter_decoder",
]

#: The autoencoder classes PreDiff's pipelines and trainers take: frame-wise, with a temporal decoder, or with a
#: decoder narrower than the encoder.
AUTOENCODER_CLASSES = (AutoencoderKL, AutoencoderKLTemporalDecoder, AsymmetricAutoencoderKL)
Autoencoder = AutoencoderKL | AutoencoderKLTemporalDecoder | AsymmetricAutoencoderKL

#: Published autoencoder configurations: preset name -> `AutoencoderKL` keyword arguments.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # scripts/vae/sevirlr/cfg.yaml of the official code: 3 downsamplings (x8), 64 latent channels.
    "prediff-sevirlr": dict(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        act_fn="silu",
        latent_channels=64,
        norm_num_groups=32,
        sample_size=128,
    ),
    # A few ten thousand parameters, 2 downsamplings (x4): a 32x32 frame becomes an 8x8x4 latent. For
    # tests/demos.
    "prediff-tiny": dict(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ),
}

# Arguments of `AutoencoderKL` that `AutoencoderKLTemporalDecoder` does not take (its decoder fixes them).
_TEMPORAL_UNSUPPORTED = ("up_block_types", "act_fn", "norm_num_groups")


def autoencoder_from_preset(
    name: str, temporal_decoder: bool = False, **overrides: Any
) -> AutoencoderKL | AutoencoderKLTemporalDecoder:
    """Build the published autoencoder configuration ``name`` (randomly initialised).

    Args:
        name: a key of [`AUTOENCODER_PRESETS`].
        temporal_decoder: build Diffusers' `AutoencoderKLTemporalDecoder` (same frame-wise encoder, a decoder
            with temporal convolutions and attention) instead of the frame-wise `AutoencoderKL`. Its decoder
            normalises with 32 groups, so every width in `block_out_channels` must be a multiple of 32.
        overrides: replace entries of the preset.

    Returns:
        The autoencoder, in evaluation mode, no latent scaling (`scaling_factor=1.0`, as in PreDiff).
    """
    if name not in AUTOENCODER_PRESETS:
        raise ValueError(f"unknown autoencoder preset {name!r}; expected one of {sorted(AUTOENCODER_PRESETS)}")
    kwargs = {**AUTOENCODER_PRESETS[name], "scaling_factor": 1.0, **overrides}
    if temporal_decoder:
        kwargs = {k: v for k, v in kwargs.items() if k not in _TEMPORAL_UNSUPPORTED}
        bad = [c for c in kwargs["block_out_channels"] if c % 32 != 0]
        if bad:
            raise ValueError(
                "the temporal decoder needs block_out_channels that are multiples of 32, "
                f"got {tuple(kwargs['block_out_channels'])}"
            )
        model = AutoencoderKLTemporalDecoder(**kwargs)
    else:
        model = AutoencoderKL(**kwargs)
    return model.eval()


def with_lighter_decoder(
    vae: AutoencoderKL, block_out_channels: Sequence[int], layers_per_block: int = 1
) -> AsymmetricAutoencoderKL:
    """`vae`'s encoder with a new decoder of its own widths, as Diffusers' `AsymmetricAutoencoderKL`.

    The encoder, `quant_conv`, `post_quant_conv` and the scaling factor are copied from `vae`, so the latents are
    the same and a denoiser trained on them works unchanged; the decoder is randomly initialised, to be trained
    (`prediff train distill` with `student_decoder`). The encoder and the decoder's inpainting branch
    (`decoder.condition_encoder`, which PreDiff never uses) are frozen.

    Args:
        vae: a frame-wise `AutoencoderKL` with quantisation convolutions and mid-block attention.
        block_out_channels: the decoder's widths, one per level of `vae` (the same downsampling); each a multiple of
            `vae`'s `norm_num_groups`.
        layers_per_block: the decoder's ResNet layers per level, plus one (as in `AutoencoderKL`).
    """
    cfg = vae.config
    if (
        type(vae) is not AutoencoderKL
        or not cfg.get("use_quant_conv", True)
        or not cfg.get("use_post_quant_conv", True)
    ):
        raise ValueError(
            "a lighter decoder needs a frame-wise AutoencoderKL with quant_conv and post_quant_conv, "
            f"got {type(vae).__name__}"
        )
    if not cfg.get("mid_block_add_attention", True):
        raise ValueError("a lighter decoder needs an encoder with mid-block attention (mid_block_add_attention)")
    widths = tuple(int(w) for w in block_out_channels)
    if len(widths) != len(cfg.block_out_channels):
        raise ValueError(
            f"the decoder needs {len(cfg.block_out_channels)} levels, as the encoder downsamples "
            f"{2 ** (len(cfg.block_out_channels) - 1)}x; got block_out_channels {widths}"
        )
    if any(w % cfg.norm_num_groups for w in widths):
        raise ValueError(
            f"every decoder width must be a multiple of norm_num_groups={cfg.norm_num_groups}, got {widths}"
        )
    model = AsymmetricAutoencoderKL(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=tuple(cfg.down_block_types),
        down_block_out_channels=tuple(cfg.block_out_channels),
        layers_per_down_block=cfg.layers_per_block,
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        up_block_out_channels=widths,
        layers_per_up_block=layers_per_block,
        act_fn=cfg.act_fn,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=cfg.sample_size,
        scaling_factor=cfg.scaling_factor,
    )
    if vae.dtype != model.dtype:
        model = model.to(dtype=vae.dtype)
    for name in ("encoder", "quant_conv", "post_quant_conv"):
        getattr(model, name).load_state_dict(getattr(vae, name).state_dict())
    model.encoder.requires_grad_(False)
    model.quant_conv.requires_grad_(False)
    model.decoder.condition_encoder.requires_grad_(False)
    return model.eval()


def latent_frame_shape(vae: Autoencoder, frame_shape: tuple[int, int, int]):
    """``(h, w, c)`` of the latent of one ``(H, W, C)`` frame; ``H`` and ``W`` must divide by the
    downsampling."""
    H, W, C = frame_shape
    cfg = vae.config
    if C != cfg.in_channels:
        raise ValueError(f"frames have {C} channels but the autoencoder expects in_channels={cfg.in_channels}")
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if H % factor or W % factor:
        raise ValueError(f"frame size {H}x{W} must be a multiple of the autoencoder's downsampling factor {factor}")
    return H // factor, W // factor, cfg.latent_channels


def _check_5d(name: str, tensor: Any) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 5:
        raise ValueError(f"{name} must have shape (B, T, H, W, C), got shape {tuple(tensor.shape)}")


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def encode_sequence(
    vae: Autoencoder,
    frames: torch.Tensor,
    sample_posterior: bool = False,
    generator: torch.Generator | list[torch.Generator] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Encode every frame of a sequence.

    Args:
        vae: the autoencoder.
        frames: `(B, T, H, W, C)` in the autoencoder's input scale (PreDiff: [0, 1], physical / 255 for VIL).
        sample_posterior: draw from the posterior (PreDiff's *target* latents, for training) instead of taking
            its mean (the *context* latents).
        generator: random generator(s) for the posterior sample; a list needs one generator per frame (`B *
        T`). chunk_size: encode at most this many frames per call (None: all at once) to bound memory.

    Returns:
        Latents `(B, T, h, w, c)` in the autoencoder's dtype.
    """
    _check_5d("frames", frames)
    _check_chunk_size(chunk_size)
    B, T, H, W, C = frames.shape
    latent_frame_shape(vae, (H, W, C))
    flat = frames.reshape(B * T, H, W, C).permute(0, 3, 1, 2).to(vae.dtype)
    if isinstance(generator, list) and len(generator) != B * T:
        raise ValueError(f"a list of generators for encode_sequence needs B*T={B * T} entries, got {len(generator)}")
    step = chunk_size or B * T
    chunks = []
    for start in range(0, B * T, step):
        posterior = vae.encode(flat[start : start + step]).latent_dist
        if sample_posterior:
            gen = generator[start : start + step] if isinstance(generator, list) else generator
            chunks.append(posterior.sample(generator=gen))
        else:
            chunks.append(posterior.mode())
    latents = torch.cat(chunks)
    return latents.permute(0, 2, 3, 1).reshape(B, T, *latents.shape[2:], latents.shape[1])


def decode_sequence(
    vae: Autoencoder,
    latents: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Decode every frame of a latent sequence.

    Args:
        vae: the autoencoder. A frame-wise `AutoencoderKL` decodes any chunk of frames; the temporal decoder
            sees whole sequences, so its chunks are rounded to whole sequences.
        latents: `(B, T, h, w, c)`.
        chunk_size: decode at most this many frames per call (None: all at once) to bound memory.

    Returns:
        Frames `(B, T, H, W, C)` in the autoencoder's output scale (PreDiff: [0, 1]); not clamped.
    """
    _check_5d("latents", latents)
    _check_chunk_size(chunk_size)
    B, T, h, w, c = latents.shape
    if c != vae.config.latent_channels:
        raise ValueError(
            f"latents have {c} channels but the autoencoder has latent_channels={vae.config.latent_channels}"
        )
    flat = latents.reshape(B * T, h, w, c).permute(0, 3, 1, 2).to(vae.dtype)
    temporal = isinstance(vae, AutoencoderKLTemporalDecoder)
    step = chunk_size or B * T
    if temporal:
        step = max(step // T, 1) * T
    chunks = []
    for start in range(0, B * T, step):
        part = flat[start : start + step]
        if temporal:
            chunks.append(vae.decode(part, num_frames=T).sample)
        else:
            chunks.append(vae.decode(part).sample)
    frames = torch.cat(chunks)
    return frames.permute(0, 2, 3, 1).reshape(B, T, *frames.shape[2:], frames.shape[1])
