"""The pipeline shipped inside the package: complete, small, packaged, and skilful on held-out storms."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from prediff import AnticipatedIntensityControl, PreDiffPipeline, SyntheticStormDataset
from prediff.baselines import persistence
from prediff.metrics import crps_ensemble, knowledge_control_error, mae, mse
from prediff.pretrained import (
    SHIPPED_PIPELINES,
    load_shipped_pipeline,
    shipped_intensity_stats,
    shipped_pipeline_path,
)
from prediff.schedulers import prediff_scheduler
from prediff.training import load_config

REPO = Path(__file__).resolve().parents[2]
#: Held-out storms: the shipped pipeline was trained on seed 0.
HELDOUT_SEED = 31337
NUM_SEQUENCES, MEMBERS, STEPS = 8, 4, 5


@pytest.fixture(scope="module")
def pipe() -> PreDiffPipeline:
    pipe = load_shipped_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def heldout(pipe) -> tuple[np.ndarray, np.ndarray]:
    T_in, H, W, _ = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    data = SyntheticStormDataset(NUM_SEQUENCES, T_in + T_out, H, W, seed=HELDOUT_SEED, progress=False)
    frames = torch.stack([data[i]["frames"] for i in range(len(data))]).numpy() * 255.0
    return frames[:, :T_in], frames[:, T_in:]


@pytest.fixture(scope="module")
def ensemble(pipe, heldout) -> np.ndarray:
    context, _ = heldout
    generator = torch.Generator().manual_seed(0)
    return pipe(context, num_inference_steps=STEPS, num_ensemble_members=MEMBERS, generator=generator).frames


def test_folder_is_complete_and_small():
    folder = shipped_pipeline_path()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "PreDiffPipeline"
    for component in ("vae", "unet", "knowledge_model", "extrapolator", "scheduler"):
        assert index[component][0] is not None, component
        assert (folder / component).is_dir(), component
    weights = sorted(folder.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"vae", "unet", "knowledge_model"}
    total = sum(p.stat().st_size for p in weights)
    assert total <= 10 * 2**20, f"shipped weights take {total / 2**20:.2f} MiB, more than 10 MiB"
    # Nothing but the pipeline: no pickles, checkpoints, logs or pictures.
    allowed = {".json", ".safetensors", ".md"}
    assert all(p.suffix in allowed for p in folder.rglob("*") if p.is_file())


def test_model_card_states_recipes_seed_and_scores():
    folder = shipped_pipeline_path()
    card = (folder / "README.md").read_text()
    commands = re.findall(r"prediff train (vae|alignment|denoiser) --config (\S+)", card)
    # The alignment network has two stages: the official recipe, then the one that makes it dependable for the
    # learned controls (it resumes the first).
    assert [kind for kind, _ in commands] == ["vae", "alignment", "alignment", "denoiser"]
    for kind, config_path in commands:
        path = REPO / config_path
        assert path.is_file(), config_path
        # The committed recipes are valid configurations that train on seed-0 synthetic storms at 64x64.
        # (the folders of the earlier stages are taken from the shipped pipeline, which holds them)
        overrides = {"vae": str(folder), "knowledge_model": str(folder)} if kind == "denoiser" else {}
        if kind == "alignment":
            overrides = {"vae": str(folder)}
        config = load_config(kind, path, overrides)
        assert config.data.dataset == "storms" and config.data.seed == 0
        assert (config.data.height, config.data.width) == (64, 64)
    for needle in ("seed 0", "0-255", "(B, 4, 64, 64, 1)", "persistence", "CRPS"):
        assert needle in card, needle


def test_metadata_and_shapes(pipe):
    assert pipe.context_shape == (4, 64, 64, 1) and pipe.forecast_shape == (4, 64, 64, 1)
    assert pipe.value_range == (0.0, 255.0)
    assert pipe.knowledge_model is not None
    assert "VIL" in pipe.config.units
    mu, sigma = shipped_intensity_stats()
    assert 5.0 < mu < 100.0 and 1.0 < sigma < 50.0
    assert shipped_intensity_stats().target(2.0) == pytest.approx(mu + 2 * sigma)


def test_shipped_earthformer_is_small_documented_and_skilful(heldout):
    folder = shipped_pipeline_path("earthformer-storms-tiny")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "EarthformerPipeline"
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights <= 10 * 2**20
    everything = sum(p.stat().st_size for name in SHIPPED_PIPELINES for p in shipped_pipeline_path(name).rglob("*"))
    assert everything <= 20 * 2**20, f"the shipped pipelines take {everything / 2**20:.1f} MiB"
    card = (folder / "README.md").read_text()
    (recipe,) = re.findall(r"prediff train earthformer --config (\S+)", card)
    config = load_config("earthformer", REPO / recipe, {})
    assert config.data.dataset == "storms" and config.data.seed == 0 and "MSE" in card
    with pytest.raises(ValueError, match="no scheduler"):
        load_shipped_pipeline("earthformer-storms-tiny", scheduler="ddim")
    earthformer = load_shipped_pipeline("earthformer-storms-tiny")
    earthformer.set_progress_bar_config(disable=True)
    context, target = heldout
    forecast = earthformer(context).frames
    assert forecast.shape == target.shape
    # Measured on 16 held-out sequences: MSE 622 against persistence's 1321.
    assert mse(forecast, target) < 0.7 * mse(persistence(context, target.shape[1]), target)


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="prediff-storms-tiny"):
        shipped_pipeline_path("prediff-storms-huge")
    assert SHIPPED_PIPELINES[:2] == ("prediff-storms-tiny", "earthformer-storms-tiny")
    assert "prediff-radar-tiny" in SHIPPED_PIPELINES


def test_package_data_covers_the_shipped_files():
    """What the wheel installs: every file of the shipped folder must match a package-data pattern."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {}).get("prediff", [])
    package = REPO / "prediff"
    covered = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    shipped = {p for name in SHIPPED_PIPELINES for p in shipped_pipeline_path(name).rglob("*") if p.is_file()}
    missing = sorted(str(p.relative_to(package)) for p in shipped - covered)
    assert not missing, f"[tool.setuptools.package-data] prediff = {patterns} leaves out {missing}"


def test_ensemble_beats_persistence(pipe, heldout, ensemble):
    context, target = heldout
    assert ensemble.shape == (NUM_SEQUENCES, MEMBERS, 4, 64, 64, 1)
    assert np.isfinite(ensemble).all()
    base = persistence(context, target.shape[1])
    mse_ours, mse_base = mse(ensemble.mean(axis=1), target), mse(base, target)
    crps_ours, mae_base = crps_ensemble(ensemble, target), mae(base, target)
    assert mse_ours < 0.9 * mse_base, (mse_ours, mse_base)
    assert crps_ours < 0.9 * mae_base, (crps_ours, mae_base)
    # A real ensemble: members differ.
    assert ensemble.std(axis=1).mean() > 1.0


def test_ensemble_beats_pysteps_extrapolation(pipe, heldout, ensemble):
    # The baseline a forecaster would pick: the ensemble must beat pysteps' Lagrangian extrapolation.
    pytest.importorskip("pysteps")
    from prediff.baselines import extrapolation

    context, target = heldout
    advected = extrapolation(context, target.shape[1])
    crps_ours, mae_extrapolation = crps_ensemble(ensemble, target), mae(advected, target)
    assert crps_ours < 0.9 * mae_extrapolation, (crps_ours, mae_extrapolation)
    assert mse(ensemble.mean(axis=1), target) < mse(advected, target)


def test_intensity_control_reduces_the_intensity_error(pipe, heldout, ensemble):
    # Half of the held-out contexts: each control step differentiates the alignment network, the costliest
    # forecast of this file.
    half = NUM_SEQUENCES // 2
    context, target, ensemble = heldout[0][:half], heldout[1][:half], ensemble[:half]
    observed = target.mean(axis=(1, 2, 3, 4))
    control = AnticipatedIntensityControl(target=observed.tolist(), method="learned")
    generator = torch.Generator().manual_seed(0)
    controlled = pipe(
        context,
        num_inference_steps=STEPS,
        num_ensemble_members=MEMBERS,
        generator=generator,
        knowledge_controls=[control],
    ).frames
    before = knowledge_control_error(ensemble, observed)
    after = knowledge_control_error(controlled, observed)
    assert after < 0.7 * before, (before, after)


def test_what_if_targets_order_the_forecasts(pipe, heldout):
    context, _ = heldout
    mu, sigma = shipped_intensity_stats()
    n_sigmas = (-1.0, 0.0, 2.0)  # mu - 2 sigma would be negative
    control = AnticipatedIntensityControl(target=[mu + n * sigma for n in n_sigmas])
    generator = torch.Generator().manual_seed(1)
    forecasts = pipe(
        np.repeat(context[:1], len(n_sigmas), axis=0),
        num_inference_steps=STEPS,
        num_ensemble_members=2,
        generator=generator,
        knowledge_controls=[control],
    ).frames
    means = forecasts.mean(axis=(1, 2, 3, 4, 5))
    assert means[0] < means[1] < means[2], means


@pytest.mark.parametrize(
    "cls, preset",
    [
        (DDPMScheduler, "ddpm"),
        (DDIMScheduler, "ddim"),
        # The shipped config records the SDE algorithm, which from_config keeps.
        (DPMSolverMultistepScheduler, "sde-dpmsolver++"),
        (UniPCMultistepScheduler, "unipc"),
        (EulerDiscreteScheduler, "euler"),
    ],
)
def test_diffusers_scheduler_switch_keeps_the_presets_skill(pipe, heldout, cls, preset):
    # pipe.scheduler = X.from_config(pipe.scheduler.config), the Diffusers idiom, against the preset itself.
    context, target = heldout[0][:2], heldout[1][:2]
    skill = {}
    for name, scheduler in (("idiom", cls.from_config(pipe.scheduler.config)), ("preset", prediff_scheduler(preset))):
        other = PreDiffPipeline(pipe.vae, pipe.unet, scheduler, extrapolator=pipe.extrapolator)
        other.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        ensemble = other(context, num_inference_steps=8, num_ensemble_members=2, generator=generator).frames
        skill[name] = crps_ensemble(ensemble, target)
    assert abs(skill["idiom"] - skill["preset"]) < 0.05 * skill["preset"], skill
