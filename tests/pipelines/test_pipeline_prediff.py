"""PreDiffPipeline on tiny components: shapes, units, seeds, save/load, schedulers, callbacks, control."""

from __future__ import annotations

import ast
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import (
    AsymmetricAutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from prediff.data import NBodyDataset
from prediff.knowledge import AnticipatedIntensityControl, EnergyConservationControl, FunctionControl
from prediff.metrics import EnergyConservationError
from prediff.models.autoencoder import autoencoder_from_preset, decode_sequence, with_lighter_decoder
from prediff.pipelines import PreDiffPipeline, PreDiffPipelineOutput
from prediff.schedulers import default_inference_steps, official_betas, prediff_scheduler

STEPS = 3


def generators(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


def tiny_pipeline(scheduler: str = "dpmsolver++", trained_like: bool = False) -> PreDiffPipeline:
    torch.manual_seed(0)
    pipe = PreDiffPipeline.from_preset("prediff-tiny", scheduler=scheduler)
    if trained_like:
        # The official init zeroes the output layer (eps = 0); random outputs make every weight matter.
        torch.nn.init.normal_(pipe.unet.final_proj.weight, std=0.5)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> PreDiffPipeline:
    return tiny_pipeline(trained_like=True)


@pytest.fixture(scope="module")
def context() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((2, 3, 32, 32, 1)) * 255).astype(np.float32)


def test_output_shapes_types_and_units(pipe, context):
    out = pipe(context, num_inference_steps=STEPS, num_ensemble_members=2, generator=generators(4))
    assert isinstance(out, PreDiffPipelineOutput)
    assert isinstance(out.frames, np.ndarray) and out.frames.shape == (2, 2, 2, 32, 32, 1)
    pt = pipe(
        torch.from_numpy(context),
        num_inference_steps=STEPS,
        num_ensemble_members=2,
        generator=generators(4),
        output_type="pt",
    ).frames
    latent = pipe(
        context,
        num_inference_steps=STEPS,
        num_ensemble_members=2,
        generator=generators(4),
        output_type="latent",
        return_dict=False,
    )[0]
    assert isinstance(pt, torch.Tensor) and latent.shape == (2, 2, 2, 8, 8, 4)
    np.testing.assert_allclose(pt.numpy(), out.frames, rtol=1e-5, atol=1e-4)
    # Frames are the decoded latents, mapped from [0, 1] back to physical units 0-255.
    with torch.no_grad():
        unit = decode_sequence(pipe.vae, latent.reshape(4, 2, 8, 8, 4)).reshape(out.frames.shape)
    np.testing.assert_allclose(out.frames, unit.numpy() * 255.0, rtol=1e-5, atol=1e-3)
    assert pipe.context_shape == (3, 32, 32, 1) and pipe.forecast_shape == (2, 32, 32, 1)


def test_context_is_scaled_by_value_range(pipe, context):
    with torch.no_grad():
        latents = pipe.encode_context(torch.from_numpy(context))
        direct = pipe.vae.encode(torch.from_numpy(context[0, 0] / 255.0).permute(2, 0, 1)[None]).latent_dist.mean
    torch.testing.assert_close(latents[0, 0], direct[0].permute(1, 2, 0), rtol=1e-5, atol=1e-5)


def test_seeds_reproduce_members_differ_and_members_are_independent(pipe, context):
    kwargs = dict(num_inference_steps=STEPS, num_ensemble_members=3, output_type="latent")
    a = pipe(context, generator=generators(6), **kwargs).frames
    b = pipe(context, generator=generators(6), **kwargs).frames
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, 0], a[:, 1]) and not torch.allclose(a[0, 0], a[1, 0])
    # Member (context 1, member 2) is seeded by generator 5 alone: as a one-member run with that seed.
    alone = pipe(context[1:], generator=generators(1, offset=5), num_inference_steps=STEPS, output_type="latent")
    torch.testing.assert_close(a[1, 2], alone.frames[0, 0], rtol=1e-4, atol=1e-4)
    # One generator for everything is reproducible too.
    c = pipe(context, generator=torch.Generator().manual_seed(9), **kwargs).frames
    d = pipe(context, generator=torch.Generator().manual_seed(9), **kwargs).frames
    assert torch.equal(c, d) and not torch.allclose(c[0, 0], c[0, 1])


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++"])
def test_save_load_reproduces_the_ensemble(scheduler, context, tmp_path, umask_027):
    pipe = tiny_pipeline(scheduler, trained_like=True)
    kwargs = dict(num_inference_steps=4, num_ensemble_members=2)
    before = pipe(context, generator=generators(4), **kwargs).frames
    pipe.save_pretrained(tmp_path)
    # Every file, the weights and the model card included, has the mode a plain open() gives under umask 027
    # (safetensors itself writes owner-only files).
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()} == {0o640}
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "knowledge_model" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin"))
    loaded = PreDiffPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    assert loaded.value_range == (0.0, 255.0)
    after = loaded(context, generator=generators(4), **kwargs).frames
    np.testing.assert_array_equal(after, before)
    assert np.isfinite(before).all()


def test_push_to_hub_uploads_the_saved_folder_through_the_public_hub_api(monkeypatch):
    """No network here: the Hub's two public calls are replaced by recorders, so the test sees what would be
    sent."""
    import prediff.pipelines.pipeline_utils as pipeline_utils

    sent = {}

    def record_upload(**kwargs):
        folder = kwargs["folder_path"]
        sent.update(kwargs, files={str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()})
        return "commit-url"

    monkeypatch.setattr(pipeline_utils, "create_repo", lambda repo_id, **_: SimpleNamespace(repo_id=f"me/{repo_id}"))
    monkeypatch.setattr(pipeline_utils, "upload_folder", record_upload)
    pipe = tiny_pipeline("dpmsolver++")
    assert pipe.push_to_hub("storms") == "commit-url"
    assert sent["repo_id"] == "me/storms" and sent["commit_message"] == "Upload PreDiffPipeline"
    assert {"model_index.json", "README.md", "unet/diffusion_pytorch_model.safetensors"} <= sent["files"]
    assert not any(name.endswith(".bin") for name in sent["files"])


def test_model_card_and_pickle_refusal(context, tmp_path):
    pipe = PreDiffPipeline.from_preset("prediff-tiny", knowledge_model=False)
    pipe.save_pretrained(tmp_path / "safe")
    card = (tmp_path / "safe" / "README.md").read_text()
    for fact in [
        "(B, 3, 32, 32, 1)",
        "(B, M, 2, 32, 32, 1)",
        "(x - 0) / (255 - 0)",
        "(8, 8, 4)",
        "Training data",
    ]:
        assert fact in card
    assert "library_name: prediff" in card
    # The usage example is a closed code block of valid Python, and nothing after it renders as code.
    example = card.split("```python\n", 1)[1]
    code, rest = example.split("\n```\n", 1)
    ast.parse(code)
    assert "```" not in rest
    assert json.loads((tmp_path / "safe" / "model_index.json").read_text())["knowledge_model"] == [None, None]
    sevir_card = PreDiffPipeline.from_preset("prediff-sevirlr").model_card()
    assert "SEVIR-LR" in str(sevir_card) and "84,499,393" in str(sevir_card) and "VIL" in str(sevir_card)

    pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert list((tmp_path / "pickled").rglob("*.bin"))
    with pytest.raises(EnvironmentError):
        PreDiffPipeline.from_pretrained(tmp_path / "pickled")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        PreDiffPipeline.from_pretrained(tmp_path / "pickled", use_safetensors=False)
    loaded = PreDiffPipeline.from_pretrained(tmp_path / "pickled", allow_pickle=True)
    assert loaded.knowledge_model is None


def test_allow_pickle_prefers_safetensors_and_falls_back_to_bin(tmp_path):
    pipe = PreDiffPipeline.from_preset("prediff-tiny", knowledge_model=False)
    pipe.save_pretrained(tmp_path / "safe")
    pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    expected = pipe.unet.state_dict()
    for kind in ("safe", "pickled"):
        loaded = PreDiffPipeline.from_pretrained(tmp_path / kind, allow_pickle=True)
        for key, value in loaded.unet.state_dict().items():
            assert torch.equal(value, expected[key]), (kind, key)
    # A folder holding both: the safetensors weights win over a .bin with other weights next to them.
    other = PreDiffPipeline.from_preset("prediff-tiny", knowledge_model=False)
    torch.nn.init.normal_(other.unet.final_proj.weight)
    other.save_pretrained(tmp_path / "other", safe_serialization=False)
    bin_name = "diffusion_pytorch_model.bin"
    (tmp_path / "safe" / "unet" / bin_name).write_bytes((tmp_path / "other" / "unet" / bin_name).read_bytes())
    both = PreDiffPipeline.from_pretrained(tmp_path / "safe", allow_pickle=True)
    assert torch.equal(both.unet.final_proj.weight, pipe.unet.final_proj.weight)
    assert not torch.equal(both.unet.final_proj.weight, other.unet.final_proj.weight)


def test_loads_by_repo_id_from_the_hub_cache_offline(context, tmp_path):
    pipe = tiny_pipeline("ddim", trained_like=True)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--prediff-org--prediff-tiny"
    pipe.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    np.save(tmp_path / "context.npy", context)
    expected = pipe(context, num_inference_steps=STEPS, num_ensemble_members=2, generator=generators(4)).frames

    script = (
        "import sys, numpy as np, torch\n"
        "from prediff.pipelines import PreDiffPipeline\n"
        "pipe = PreDiffPipeline.from_pretrained('prediff-org/prediff-tiny')\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "g = [torch.Generator().manual_seed(i) for i in range(4)]\n"
        "ctx = np.load(sys.argv[1] + '/context.npy')\n"
        f"out = pipe(ctx, num_inference_steps={STEPS}, num_ensemble_members=2, generator=g).frames\n"
        "np.save(sys.argv[1] + '/out.npy', out)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++", "unipc", "euler"])
def test_every_scheduler_drives_the_pipeline(scheduler, context):
    pipe = tiny_pipeline(scheduler, trained_like=True)
    out = pipe(context[:1], num_inference_steps=STEPS, num_ensemble_members=2, generator=generators(2)).frames
    assert out.shape == (1, 2, 2, 32, 32, 1) and np.isfinite(out).all()


def test_default_steps_follow_the_scheduler(pipe, context):
    expected = {"dpmsolver++": 20, "unipc": 20, "ddim": 50, "euler": 50, "ddpm": 50}
    default = PreDiffPipeline(pipe.vae, pipe.unet, prediff_scheduler("ddpm"))
    default.set_progress_bar_config(disable=True)
    for name, steps in expected.items():
        default.scheduler = prediff_scheduler(name)
        assert default_inference_steps(default.scheduler) == steps, name
    default(context[:1])
    assert default.num_timesteps == 50


def test_callback_reads_and_replaces_latents(pipe, context):
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, int(t), tuple(kwargs["latents"].shape), tuple(kwargs["context_latents"].shape)))
        if i == STEPS - 1:
            return {"latents": torch.full_like(kwargs["latents"], 0.25)}
        return {}

    out = pipe(
        context,
        num_inference_steps=STEPS,
        num_ensemble_members=2,
        generator=generators(4),
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "context_latents"],
    ).frames
    assert [s[0] for s in seen] == list(range(STEPS))
    assert seen[0][2] == (4, 2, 8, 8, 4) and seen[0][3] == (4, 3, 8, 8, 4)
    assert torch.equal(out, torch.full_like(out, 0.25))


def test_bad_inputs_give_clear_errors(pipe, context):
    call = dict(num_inference_steps=2)
    with pytest.raises(ValueError, match=r"context must have shape \(B, T_in, H, W, C\) = \(\?, 3, 32, 32, 1\)"):
        pipe(context[:, :2], **call)
    with pytest.raises(ValueError, match="context must have shape"):
        pipe(context[0], **call)
    bad = context.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="context contains NaN"):
        pipe(bad, **call)
    with pytest.raises(ValueError, match="context must be a numpy array or a torch tensor of shape"):
        pipe(context.tolist(), **call)
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe(context, output_type="pil", **call)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer, got 0"):
        pipe(context, num_inference_steps=0)
    with pytest.raises(ValueError, match="num_ensemble_members must be a positive integer"):
        pipe(context, num_ensemble_members=0, **call)
    with pytest.raises(ValueError, match="= 4, got 3"):
        pipe(context, num_ensemble_members=2, generator=generators(3), **call)
    with pytest.raises(ValueError, match="latents must be a torch.Tensor of shape"):
        pipe(context, latents=torch.zeros(3, 2, 8, 8, 4), **call)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs must be among"):
        pipe(context, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"], **call)
    with pytest.raises(ValueError, match="knowledge_controls must be KnowledgeControl"):
        pipe(context, knowledge_controls=[lambda x: x], **call)
    with pytest.raises(
        ValueError, match=r"must be a KnowledgeControl or a list of them, got function .*FunctionControl"
    ):
        pipe(context, knowledge_controls=lambda x: x.mean(dim=(1, 2, 3, 4)), **call)
    for generator in (3, [3, 4], torch.manual_seed):
        with pytest.raises(ValueError, match="generator must be a torch.Generator, a list of them or None"):
            pipe(context, generator=generator, **call)
    official = AnticipatedIntensityControl(target=10.0, method="analytic", form="official")
    with pytest.raises(ValueError, match="needs a DDPMScheduler; the pipeline has DPMSolverMultistepScheduler"):
        pipe(context, knowledge_controls=official, **call)
    no_model = PreDiffPipeline.from_preset("prediff-tiny", knowledge_model=False)
    with pytest.raises(ValueError, match="needs a KnowledgeAlignmentModel"):
        no_model(context, knowledge_controls=AnticipatedIntensityControl(target=10.0, method="learned"), **call)
    for scheduler, message in [
        (FlowMatchEulerDiscreteScheduler(), "cannot be driven by PreDiffPipeline"),
        (prediff_scheduler("ddim", prediction_type="v_prediction"), "prediction_type='v_prediction'"),
    ]:
        broken = PreDiffPipeline(pipe.vae, pipe.unet, scheduler)
        with pytest.raises(ValueError, match=message):
            broken(context, **call)
    with pytest.raises(ValueError, match="value_range must be finite with low < high"):
        PreDiffPipeline(pipe.vae, pipe.unet, pipe.scheduler, value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="has 4 channels but the vae has latent_channels=8"):
        other_vae = autoencoder_from_preset("prediff-tiny", latent_channels=8)
        PreDiffPipeline(other_vae, pipe.unet, pipe.scheduler)
    with pytest.raises(
        ValueError, match="vae must be one of AutoencoderKL, .*AsymmetricAutoencoderKL, got Earthformer"
    ):
        PreDiffPipeline(pipe.unet, pipe.unet, pipe.scheduler)


def test_non_callable_callback_is_refused_before_any_step(pipe, context):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match="callback_on_step_end must be callable.*got int"):
            pipe(context, num_inference_steps=2, callback_on_step_end=5)
    finally:
        hook.remove()
    assert calls == []


def test_scheduler_on_another_noise_schedule_is_refused(pipe, context):
    for scheduler, message in [
        (DDIMScheduler(), r"alphas_cumprod\[\d+\] = .*; its config has beta_schedule='linear' \(trained: 'scaled_"),
        (prediff_scheduler("ddim", beta_end=0.012), r"its config has beta_end=0.012 \(trained: 0.02\)"),
        # Zero terminal SNR changes the noise levels without any config entry of the schedule.
        (prediff_scheduler("ddim", rescale_betas_zero_snr=True), r"alphas_cumprod\[999\] = [^;]*; build it with"),
        (
            prediff_scheduler("dpmsolver++", num_train_timesteps=500),
            r"has 500 noise levels \(num_train_timesteps\), but the denoiser was trained on 1000",
        ),
    ]:
        other = PreDiffPipeline(pipe.vae, pipe.unet, scheduler)
        with pytest.raises(ValueError, match=message):
            other(context, num_inference_steps=2)


@pytest.mark.parametrize(
    "scheduler, setting",
    [
        (lambda config: DDIMScheduler.from_config(config, clip_sample=True), "clip_sample"),
        (lambda config: DDIMScheduler.from_config(config, thresholding=True), "thresholding"),
        (lambda config: DPMSolverMultistepScheduler.from_config(config, thresholding=True), "thresholding"),
    ],
)
def test_scheduler_that_clips_or_thresholds_latents_is_refused(pipe, context, scheduler, setting):
    other = PreDiffPipeline(pipe.vae, pipe.unet, scheduler(pipe.scheduler.config))
    with pytest.raises(
        ValueError, match=rf"\({setting}=True\).*from_config\(pipe.scheduler.config, {setting}=False\)"
    ):
        other(context, num_inference_steps=2)


def test_ddim_from_the_pipeline_config_does_not_clip(pipe, context):
    # Diffusers' idiom on a pipeline saved before the settings were recorded: loading records them.
    ddim = DDIMScheduler.from_config(PreDiffPipeline(pipe.vae, pipe.unet, pipe.scheduler).scheduler.config)
    assert ddim.config.clip_sample is False and ddim.config.timestep_spacing == "trailing"


def test_any_scheduler_on_the_training_betas_is_accepted(pipe, context):
    kwargs = dict(num_inference_steps=2, num_ensemble_members=1)
    reference = pipe(context, generator=generators(2), **kwargs).frames
    for scheduler in [
        DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
        EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config),
        DDIMScheduler(trained_betas=official_betas().numpy(), clip_sample=False, timestep_spacing="trailing"),
    ]:
        other = PreDiffPipeline(pipe.vae, pipe.unet, scheduler)
        other.set_progress_bar_config(disable=True)
        frames = other(context, generator=generators(2), **kwargs).frames
        assert frames.shape == reference.shape and np.isfinite(frames).all()
        if isinstance(scheduler, type(pipe.scheduler)):
            # The pipeline's own scheduler rebuilt from its config: the same forecast.
            np.testing.assert_array_equal(frames, reference)


def test_temporal_decoder_variant_runs(context):
    base = tiny_pipeline("ddim")
    vae = autoencoder_from_preset(
        "prediff-tiny", temporal_decoder=True, block_out_channels=(32, 32, 32), latent_channels=4
    )
    pipe = PreDiffPipeline(vae, base.unet, base.scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(context[:1], num_inference_steps=2, num_ensemble_members=2, generator=generators(2)).frames
    assert out.shape == (1, 2, 2, 32, 32, 1) and np.isfinite(out).all()


def test_lighter_decoder_pipeline_loads_back_quietly_and_forecasts_the_same(context, tmp_path):
    base = tiny_pipeline("ddim")
    pipe = PreDiffPipeline(with_lighter_decoder(base.vae, (4, 8, 8), layers_per_block=0), base.unet, base.scheduler)
    pipe.save_pretrained(tmp_path)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        loaded = PreDiffPipeline.from_pretrained(tmp_path)
    finally:
        diffusers_logger.removeHandler(handler)
    # Diffusers' own warning that this class's self-recorded config entries are not its arguments is not shown.
    assert not [m for m in messages if "AsymmetricAutoencoderKL" in m]
    assert isinstance(loaded.vae, AsymmetricAutoencoderKL)
    outputs = []
    for p in (pipe, loaded):
        p.set_progress_bar_config(disable=True)
        outputs.append(p(context[:1], num_inference_steps=2, num_ensemble_members=2, generator=generators(2)).frames)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


# ------------------------------------------------------------------------------------- knowledge control


def mean_intensity(frames: np.ndarray) -> np.ndarray:
    return frames.mean(axis=(2, 3, 4, 5))


@pytest.fixture(scope="module")
def untrained() -> PreDiffPipeline:
    return tiny_pipeline("ddim")


def test_scale_zero_never_changes_the_result(untrained, context):
    kwargs = dict(num_inference_steps=STEPS, num_ensemble_members=2)
    plain = untrained(context, generator=generators(4), **kwargs).frames
    zero = [
        AnticipatedIntensityControl(target=200.0, scale=0.0, method="analytic"),
        AnticipatedIntensityControl(target=200.0, scale=0.0),
        FunctionControl(lambda x: x.mean(dim=(1, 2, 3, 4)).abs(), scale=0.0),
    ]
    np.testing.assert_array_equal(
        untrained(context, generator=generators(4), knowledge_controls=zero, **kwargs).frames, plain
    )


def test_analytic_intensity_moves_halfway_to_per_context_targets(untrained, context):
    kwargs = dict(num_inference_steps=4, num_ensemble_members=2)
    base = mean_intensity(untrained(context, generator=generators(4), **kwargs).frames)  # (B, M)
    # Context 0 is pushed down, context 1 up: no coupling between samples.
    target = np.array([base[0].mean() - 20.0, base[1].mean() + 20.0])
    control = AnticipatedIntensityControl(target=target.tolist(), scale=1e4, method="analytic", form="score")
    steered = mean_intensity(
        untrained(context, generator=generators(4), knowledge_controls=[control], **kwargs).frames
    )
    progress = (steered - base) / (target[:, None] - base)
    assert (progress >= 0.5).all() and (progress <= 1.5).all(), progress


@pytest.mark.parametrize("scheduler, steps", [("ddim", 4), ("dpmsolver++", 4), ("ddpm", 8)])
def test_default_control_reaches_per_context_targets_with_any_sampler(context, scheduler, steps):
    # The default x0 form needs no tuned strength: the analytic control lands on targets 20 VIL below and above.
    pipe = tiny_pipeline(scheduler)
    kwargs = dict(num_inference_steps=steps, num_ensemble_members=2)
    base = mean_intensity(pipe(context, generator=generators(4), **kwargs).frames)
    target = np.array([base[0].mean() - 20.0, base[1].mean() + 20.0])
    control = AnticipatedIntensityControl(target=target.tolist(), method="analytic")
    steered = mean_intensity(pipe(context, generator=generators(4), knowledge_controls=[control], **kwargs).frames)
    assert np.abs(steered - target[:, None]).max() < 2.0, (base, steered, target)


def test_learned_intensity_control_moves_its_prediction(untrained, context):
    # The untrained alignment network still has a gradient: its own prediction must move toward the target.
    kwargs = dict(num_inference_steps=4, num_ensemble_members=2, output_type="latent")
    base = untrained(context, generator=generators(4), **kwargs).frames.flatten(0, 1)
    t0 = torch.tensor(0)
    with torch.no_grad():
        pred_base = untrained.knowledge_model(base, t0).sample.mean(dim=(1, 2)) * 255.0
    target = float(pred_base.mean()) + 30.0
    control = AnticipatedIntensityControl(target=target, scale=300.0, method="learned", form="score")
    steered = untrained(context, generator=generators(4), knowledge_controls=control, **kwargs).frames.flatten(0, 1)
    with torch.no_grad():
        pred = untrained.knowledge_model(steered, t0).sample.mean(dim=(1, 2)) * 255.0
    assert ((target - pred).abs() < (target - pred_base).abs()).all(), (pred_base, pred, target)


def test_function_control_moves_its_function_halfway(untrained, context):
    kwargs = dict(num_inference_steps=4, num_ensemble_members=2)
    base = untrained(context, generator=generators(4), **kwargs).frames
    quadrant = base[..., :16, :16, :].mean(axis=(2, 3, 4, 5))  # (B, M)
    # One target per row (rows ordered context, member): 15 units above that member's uncontrolled value.
    target = torch.from_numpy(quadrant.reshape(-1) + 15.0)

    def violation(forecast: torch.Tensor) -> torch.Tensor:
        return (forecast[..., :16, :16, :].mean(dim=(1, 2, 3, 4)) - target).abs()

    steered = untrained(
        context,
        generator=generators(4),
        knowledge_controls=FunctionControl(violation, scale=0.06, form="score"),
        **kwargs,
    ).frames
    progress = (steered[..., :16, :16, :].mean(axis=(2, 3, 4, 5)) - quadrant) / 15.0
    assert (progress >= 0.5).all() and (progress <= 1.5).all(), progress


def test_several_controls_combine_with_their_own_scales(untrained, context):
    kwargs = dict(num_inference_steps=STEPS, num_ensemble_members=1, output_type="latent")

    def fa(x):
        return (x.mean(dim=(1, 2, 3, 4)) - 50.0).abs()

    def fb(x):
        return (x[..., :16, :, :].mean(dim=(1, 2, 3, 4)) + 80.0).abs()

    combined = untrained(
        context,
        generator=generators(2),
        knowledge_controls=[
            FunctionControl(fa, scale=3e3, form="score"),
            FunctionControl(fb, scale=1e3, form="score"),
        ],
        **kwargs,
    ).frames
    single = untrained(
        context,
        generator=generators(2),
        knowledge_controls=FunctionControl(lambda x: 3 * fa(x) + fb(x), scale=1e3, form="score"),
        **kwargs,
    ).frames
    only_a = untrained(
        context, generator=generators(2), knowledge_controls=FunctionControl(fa, scale=3e3, form="score"), **kwargs
    )
    # Equal up to float rounding carried through the steps; dropping one control is a much larger change.
    scale = combined.abs().max()
    assert (combined - single).abs().max() / scale < 2e-3
    assert (combined - only_a.frames).abs().max() / scale > 2e-2


def test_official_and_score_forms_agree_in_sign(context):
    pipe = tiny_pipeline("ddpm")
    kwargs = dict(num_inference_steps=5, num_ensemble_members=2)
    base = pipe(context, generator=generators(4), output_type="latent", **kwargs).frames
    base_intensity = mean_intensity(pipe(context, generator=generators(4), **kwargs).frames)
    target = float(base_intensity.mean()) + 20.0
    shifts, moves = {}, {}
    for form, scale in [("score", 1e4), ("official", 1e3)]:
        control = AnticipatedIntensityControl(target=target, scale=scale, method="analytic", form=form)
        latents = pipe(context, generator=generators(4), knowledge_controls=control, output_type="latent", **kwargs)
        frames = pipe(context, generator=generators(4), knowledge_controls=control, **kwargs).frames
        shifts[form] = (latents.frames - base).flatten(1)
        moves[form] = mean_intensity(frames) - base_intensity
    cosine = torch.nn.functional.cosine_similarity(shifts["score"], shifts["official"], dim=1)
    assert (cosine > 0.5).all(), cosine
    assert (moves["score"] > 0).all() and (moves["official"] > 0).all(), moves


@pytest.fixture(scope="module")
def nbody_context() -> torch.Tensor:
    dataset = NBodyDataset(2, seq_len=3, frame_size=32)
    return torch.stack([dataset[i]["frames"] for i in range(2)])  # (2, 3, 32, 32, 1) digit intensity in [0, 1]


@pytest.mark.parametrize(("scheduler", "form", "scale"), [("ddim", "score", 50.0), ("ddpm", "official", 300.0)])
def test_energy_conservation_control_reduces_the_energy_error(scheduler, form, scale, nbody_context):
    torch.manual_seed(0)
    base = PreDiffPipeline.from_preset("prediff-tiny", scheduler=scheduler)
    energy_net = base.knowledge_model
    # At its default init the output barely depends on the latents; a trained network's output layer does not.
    torch.nn.init.normal_(energy_net.out[-1].c_proj.weight, std=0.3)
    pipe = PreDiffPipeline(base.vae, base.unet, base.scheduler, knowledge_model=energy_net, value_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)

    def energy(latents: torch.Tensor) -> torch.Tensor:
        """The control's energy of every frame of clean latents (N, 2, h, w, c): the network's estimate at t=0."""
        with torch.no_grad():
            return energy_net(latents, torch.tensor(0)).sample[..., 0]

    # The conserved energy is the last observed frame's, measured in the network's units on the encoded context.
    with torch.no_grad():
        initial = energy(pipe.encode_context(nbody_context)[:, -2:])[:, -1]  # (B,), one per context

    def violation(latents: torch.Tensor) -> np.ndarray:
        """prediff.metrics' energy_violation (the control's L2 violation, averaged over members) per context."""
        energies = energy(latents.flatten(0, 1)).reshape(*latents.shape[:3])  # (B, M, T_out)
        metric = EnergyConservationError()
        return np.array([metric(energies[b : b + 1], initial[b])["energy_violation"] for b in range(len(initial))])

    kwargs = dict(num_inference_steps=4, num_ensemble_members=2, output_type="latent")
    plain = violation(pipe(nbody_context, generator=generators(4), **kwargs).frames)
    control = EnergyConservationControl(initial_energy=initial.tolist(), scale=scale, form=form)
    steered = violation(pipe(nbody_context, generator=generators(4), knowledge_controls=control, **kwargs).frames)
    ratio = steered / plain
    assert (ratio < 0.9).all() and ratio.mean() < 0.7, ratio


def test_posterior_std_is_the_fixed_small_ddpm_std():
    pipe = tiny_pipeline("ddpm")
    pipe.scheduler.set_timesteps(1000)
    for t in (999, 500, 1):
        expected = pipe.scheduler._get_variance(t).sqrt()
        torch.testing.assert_close(pipe._posterior_std(torch.tensor(t)), expected, rtol=1e-5, atol=0)
    assert pipe._posterior_std(torch.tensor(0)).item() == pytest.approx(1e-10)
