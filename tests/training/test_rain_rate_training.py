"""Training on rain rate in mm/h: a file of sequences with a dB value transform, recorded with the file's grid
and clock in the exported pipeline, which then forecasts in mm/h."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prediff.data import write_sequences
from prediff.pipelines import PreDiffPipeline
from prediff.training import DenoiserTrainer, load_config
from prediff.training.datasets import build_datasets
from prediff.utils.units import to_unit
from tests.training.test_distributed import TINY

DB = {"kind": "db", "threshold": 0.1, "zerovalue": -15.0}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from prediff.models.autoencoder import autoencoder_from_preset

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae")
    autoencoder_from_preset("prediff-tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rain_file(tmp_path_factory):
    """12 sequences of 5 frames of 32x32 rain rate in mm/h (dry and wet pixels), as `prediff data radar` records
    them: units, grid and clock, no value range."""
    rng = np.random.default_rng(0)
    rates = np.exp(rng.normal(0.0, 1.2, (12, 5, 32, 32, 1))).astype(np.float32)
    rates[rng.random(rates.shape) < 0.5] = 0.0
    path = tmp_path_factory.mktemp("rain") / "rain.h5"
    metadata = {"units": "mm/h", "pixel_size_km": 2.0, "frame_interval_minutes": 10.0}
    write_sequences(path, rates, num_sequences=12, frame_shape=rates.shape[1:], dtype=np.float32,
                    metadata=metadata, progress=False)  # fmt: skip
    return path, rates


def config(tmp_path, rain_file, vae_dir, **overrides):
    values = {
        "output_dir": str(tmp_path / "denoiser"), "report_to": "none", "vae": str(vae_dir), "max_train_steps": 2,
        "checkpointing_steps": 100, "num_validation_batches": 1, "num_validation_samples": 0,
        "validation_inference_steps": 2, "data.dataset": "file", "data.path": str(rain_file[0]),
        "data.value_range": [-15.0, 25.0], "data.value_transform": DB, "data.augment": False,
        "data.cache_in_memory": False,
    }  # fmt: skip
    values.update(overrides)
    return load_config("denoiser", TINY / "denoiser.yaml", values)


def test_items_are_scaled_through_the_transform(tmp_path, rain_file, vae_dir):
    train, val, scaling = build_datasets(config(tmp_path, rain_file, vae_dir))
    assert scaling.value_transform == DB and scaling.value_range == (-15.0, 25.0)
    assert scaling.pixel_size_km == 2.0 and scaling.frame_interval_minutes == 10.0 and scaling.units == "mm/h"
    item = train[0]
    sequence = rain_file[1][item["sequence"], item["start"] : item["start"] + 5]
    np.testing.assert_allclose(item["frames"].numpy(), to_unit(sequence, (-15.0, 25.0), DB), rtol=1e-6)


def test_exported_pipeline_records_the_scaling_and_forecasts_rain_rate(tmp_path, rain_file, vae_dir):
    DenoiserTrainer(
        config(tmp_path, rain_file, vae_dir, max_intensity_growth=1.5, intensity_cap_radius_km=32.0)
    ).train()
    index = json.loads((tmp_path / "denoiser" / "model_index.json").read_text())
    assert index["value_transform"] == DB and index["value_range"] == [-15.0, 25.0]
    assert index["max_intensity_growth"] == 1.5 and index["intensity_cap_radius_km"] == 32.0
    assert index["pixel_size_km"] == 2.0 and index["frame_interval_minutes"] == 10.0 and index["units"] == "mm/h"
    pipe = PreDiffPipeline.from_pretrained(tmp_path / "denoiser")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(rain_file[1][:1, :3], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 1, 2, 32, 32, 1) and np.isfinite(frames).all() and (frames >= 0).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.value_transform": {"kind": "sqrt"}}, "value_transform kind must be one of"),
        ({"data.value_range": [5.0, 1.0]}, "data.value_range must be finite with low < high"),
        ({"data.dataset": "storms"}, "apply to data.dataset='file', not 'storms'"),
        ({"max_intensity_growth": 0.5}, "max_intensity_growth must be None or a finite number of at least 1"),
        ({"intensity_cap_radius_km": -1.0}, "intensity_cap_radius_km must be None or a positive number"),
        ({"intensity_cap_radius_km": 32.0}, "intensity_cap_radius_km must be null unless max_intensity_growth"),
    ],
)
def test_bad_scaling_is_refused_by_name(tmp_path, rain_file, vae_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, rain_file, vae_dir, **overrides).validate()


def test_values_outside_the_transformed_range_are_named(tmp_path, rain_file, vae_dir):
    train, _, _ = build_datasets(config(tmp_path, rain_file, vae_dir, **{"data.value_range": [-15.0, 0.0]}))
    with pytest.raises(ValueError, match="values \\(after the value transform\\) span"):
        for index in range(len(train)):
            train[index]


def test_fine_tuning_starts_from_the_given_weights(tmp_path, rain_file, vae_dir):
    from prediff.models.earthformer_unet import EarthformerUNetModel

    first = config(tmp_path / "a", rain_file, vae_dir)
    DenoiserTrainer(first).train()
    tuned = config(tmp_path / "b", rain_file, vae_dir, init_weights=str(tmp_path / "a" / "denoiser"))
    trainer = DenoiserTrainer(tuned)
    trainer.build()
    start = EarthformerUNetModel.from_pretrained(tmp_path / "a" / "denoiser" / "unet")
    for name, value in trainer.unwrap("denoiser").unet.state_dict().items():
        torch.testing.assert_close(value, start.state_dict()[name], rtol=0, atol=0, msg=name)
    assert all(p.requires_grad for p in trainer.unwrap("denoiser").unet.parameters())


def test_fine_tuning_from_a_shipped_pipeline_by_name(tmp_path):
    from prediff.pretrained import shipped_pipeline_path
    from prediff.training import VAETrainer

    values = {"output_dir": str(tmp_path / "vae"), "report_to": "none", "init_weights": "prediff-storms-tiny",
              "data.height": 64, "data.width": 64}  # fmt: skip
    trainer = VAETrainer(load_config("vae", TINY / "vae.yaml", values))
    trainer.build()
    shipped = load_file(shipped_pipeline_path("prediff-storms-tiny") / "vae" / "diffusion_pytorch_model.safetensors")
    for name, value in trainer.vae.state_dict().items():
        torch.testing.assert_close(value, shipped[name], rtol=0, atol=0, msg=name)


def test_init_weights_of_another_shape_or_trainer_are_refused(tmp_path, rain_file, vae_dir):
    other = tmp_path / "other"
    from prediff.models.earthformer_unet import EarthformerUNetModel

    EarthformerUNetModel(input_shape=(2, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1),
                         num_heads=2).save_pretrained(other)  # fmt: skip
    with pytest.raises(ValueError, match="holds a denoiser of input_shape \\(2, 8, 8, 4\\)"):
        DenoiserTrainer(config(tmp_path, rain_file, vae_dir, init_weights=str(other))).build()
    with pytest.raises(FileNotFoundError, match="init_weights 'nowhere' is neither a folder nor a shipped pipeline"):
        config(tmp_path, rain_file, vae_dir, init_weights="nowhere").validate()
