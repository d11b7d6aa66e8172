"""Frame-wise VAE sequence helpers against a plain per-frame loop over Diffusers' AutoencoderKL."""

from __future__ import annotations

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, AutoencoderKLTemporalDecoder

from prediff.models.autoencoder import (
    AUTOENCODER_PRESETS,
    autoencoder_from_preset,
    decode_sequence,
    encode_sequence,
    latent_frame_shape,
    with_lighter_decoder,
)


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return autoencoder_from_preset("prediff-tiny")


def test_sevirlr_preset_parameters_and_latent_shape():
    vae = autoencoder_from_preset("prediff-sevirlr")
    assert isinstance(vae, AutoencoderKL)
    assert sum(p.numel() for p in vae.parameters()) == 84_499_393
    assert vae.config.scaling_factor == 1.0  # PreDiff does not rescale latents
    assert latent_frame_shape(vae, (128, 128, 1)) == (16, 16, 64)
    with torch.no_grad():
        z = encode_sequence(vae, torch.rand(1, 1, 128, 128, 1))
    assert z.shape == (1, 1, 16, 16, 64)


def test_encode_matches_per_frame_reference_and_chunking(tiny_vae):
    frames = torch.rand(2, 3, 32, 32, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latents = encode_sequence(tiny_vae, frames)
        chunked = encode_sequence(tiny_vae, frames, chunk_size=4)
        reference = torch.stack(
            [
                torch.stack(
                    [tiny_vae.encode(frames[b, t].permute(2, 0, 1)[None]).latent_dist.mean[0] for t in range(3)]
                )
                for b in range(2)
            ]
        ).permute(0, 1, 3, 4, 2)
    assert latents.shape == (2, 3, 8, 8, 4)
    torch.testing.assert_close(latents, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, latents, rtol=1e-5, atol=1e-5)


def test_posterior_sample_is_seeded_and_differs_from_mean(tiny_vae):
    frames = torch.rand(1, 4, 32, 32, 1)
    with torch.no_grad():
        mean = encode_sequence(tiny_vae, frames)
        a = encode_sequence(tiny_vae, frames, sample_posterior=True, generator=torch.Generator().manual_seed(3))
        b = encode_sequence(tiny_vae, frames, sample_posterior=True, generator=torch.Generator().manual_seed(3))
        c = encode_sequence(tiny_vae, frames, sample_posterior=True, generator=torch.Generator().manual_seed(4))
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        d = encode_sequence(tiny_vae, frames, sample_posterior=True, generator=gens, chunk_size=3)
        posterior = tiny_vae.encode(frames[0].permute(0, 3, 1, 2)).latent_dist
        e = posterior.mean + posterior.std * torch.randn(
            posterior.mean[:1].shape, generator=torch.Generator().manual_seed(2)
        )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, mean)
    # Frame 2 with its own generator is the posterior sample drawn from that generator alone.
    torch.testing.assert_close(d[0, 2], e[2].permute(1, 2, 0), rtol=1e-5, atol=1e-5)


def test_decode_matches_reference_chunked_and_differentiable(tiny_vae):
    latents = torch.randn(2, 3, 8, 8, 4, generator=torch.Generator().manual_seed(5), requires_grad=True)
    frames = decode_sequence(tiny_vae, latents)
    chunked = decode_sequence(tiny_vae, latents, chunk_size=5)
    reference = torch.stack(
        [tiny_vae.decode(latents[b].permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1) for b in range(2)]
    )
    assert frames.shape == (2, 3, 32, 32, 1)
    torch.testing.assert_close(frames, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, frames, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(chunked.mean(), latents)
    assert grad.shape == latents.shape and grad.abs().sum() > 0


def test_temporal_decoder_variant_decodes_whole_sequences():
    torch.manual_seed(0)
    vae = autoencoder_from_preset(
        "prediff-tiny",
        temporal_decoder=True,
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
    )
    assert isinstance(vae, AutoencoderKLTemporalDecoder)
    frames = torch.rand(3, 2, 16, 16, 1)
    with torch.no_grad():
        latents = encode_sequence(vae, frames)
        whole = decode_sequence(vae, latents)
        # chunk_size=3 rounds down to one 2-frame sequence per call: same result.
        chunked = decode_sequence(vae, latents, chunk_size=3)
        first = vae.decode(latents[0].permute(0, 3, 1, 2), num_frames=2).sample.permute(0, 2, 3, 1)
    assert latents.shape == (3, 2, 8, 8, 4) and whole.shape == (3, 2, 16, 16, 1)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole[0], first, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors(tiny_vae):
    with pytest.raises(ValueError, match="unknown autoencoder preset"):
        autoencoder_from_preset("nope")
    with pytest.raises(ValueError, match="multiples of 32"):
        autoencoder_from_preset("prediff-tiny", temporal_decoder=True)
    with pytest.raises(ValueError, match=r"shape \(B, T, H, W, C\)"):
        encode_sequence(tiny_vae, torch.rand(3, 32, 32, 1))
    with pytest.raises(ValueError, match="in_channels=1"):
        encode_sequence(tiny_vae, torch.rand(1, 2, 32, 32, 3))
    with pytest.raises(ValueError, match="multiple of the autoencoder's downsampling factor 4"):
        encode_sequence(tiny_vae, torch.rand(1, 2, 30, 32, 1))
    with pytest.raises(ValueError, match="chunk_size"):
        encode_sequence(tiny_vae, torch.rand(1, 2, 32, 32, 1), chunk_size=0)
    with pytest.raises(ValueError, match="B\\*T=2"):
        encode_sequence(tiny_vae, torch.rand(1, 2, 32, 32, 1), sample_posterior=True, generator=[None])
    with pytest.raises(ValueError, match="latent_channels=4"):
        decode_sequence(tiny_vae, torch.rand(1, 2, 8, 8, 3))
    assert set(AUTOENCODER_PRESETS) >= {"prediff-sevirlr", "prediff-tiny"}


def test_lighter_decoder_keeps_the_encoder_and_its_latents(tiny_vae, tmp_path):
    torch.manual_seed(1)
    light = with_lighter_decoder(tiny_vae, (4, 8, 8), layers_per_block=0)
    assert isinstance(light, AsymmetricAutoencoderKL)
    assert light.config.scaling_factor == tiny_vae.config.scaling_factor
    assert latent_frame_shape(light, (32, 32, 1)) == (8, 8, 4)
    frames = torch.rand(2, 3, 32, 32, 1)
    with torch.no_grad():
        torch.testing.assert_close(encode_sequence(light, frames), encode_sequence(tiny_vae, frames))
        decoded = decode_sequence(light, torch.randn(2, 3, 8, 8, 4))
    assert decoded.shape == (2, 3, 32, 32, 1) and torch.isfinite(decoded).all()

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(light.decoder) < count(tiny_vae.decoder) / 2
    # Only the decoder trains; its inpainting branch is never used by PreDiff.
    trainable = {name.split(".")[0] for name, p in light.named_parameters() if p.requires_grad}
    assert trainable == {"decoder", "post_quant_conv"}
    assert not any(p.requires_grad for p in light.decoder.condition_encoder.parameters())

    # Saved and loaded back as a plain Diffusers model: the same decoding.
    light.save_pretrained(tmp_path / "light")
    loaded = AsymmetricAutoencoderKL.from_pretrained(tmp_path / "light", use_safetensors=True)
    z = torch.randn(1, 2, 8, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(decode_sequence(loaded, z), decode_sequence(light, z))


def test_lighter_decoder_settings_are_checked(tiny_vae):
    with pytest.raises(ValueError, match="needs 3 levels"):
        with_lighter_decoder(tiny_vae, (8, 8))
    with pytest.raises(ValueError, match="multiple of norm_num_groups=4"):
        with_lighter_decoder(tiny_vae, (6, 8, 8))
    temporal = autoencoder_from_preset("prediff-tiny", temporal_decoder=True, block_out_channels=(32, 32, 32))
    with pytest.raises(ValueError, match="frame-wise AutoencoderKL"):
        with_lighter_decoder(temporal, (32, 32, 32))
