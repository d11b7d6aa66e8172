"""The shipped rain-rate pipeline `prediff-radar-tiny`: complete, small, documented with valid recipes and its
sources, and forecasting mm/h ensembles whose members differ and never exceed its recorded intensity cap."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml

from prediff.pretrained import load_shipped_pipeline, shipped_intensity_stats, shipped_pipeline_path
from prediff.training import load_config

REPO = Path(__file__).resolve().parents[2]
NAME = "prediff-radar-tiny"


def test_folder_is_small_and_records_units_grid_clock_and_cap():
    folder = shipped_pipeline_path(NAME)
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights <= 10 * 2**20, f"{weights / 2**20:.2f} MiB"
    assert all(p.suffix in {".json", ".safetensors", ".md"} for p in folder.rglob("*") if p.is_file())
    index = json.loads((folder / "model_index.json").read_text())
    assert index["units"] == "mm/h" and index["value_transform"]["kind"] == "db"
    assert index["pixel_size_km"] == 2.0 and index["frame_interval_minutes"] == 10.0
    assert index["max_intensity_growth"] == 1.0 and index["intensity_cap_radius_km"] == 32.0
    mu, sigma = shipped_intensity_stats(NAME)
    assert 0 < mu < 5 and 0 < sigma < 5  # mean rain rates in mm/h


def test_model_card_cites_its_sources_and_names_valid_recipes():
    card = (shipped_pipeline_path(NAME) / "README.md").read_text()
    for source in ("FMI", "KNMI", "CC BY 4.0", "Pulkkinen"):
        assert source in card, source
    assert "MeteoSwiss is the held-out test set" in card
    recipes = re.findall(r"prediff train (vae|denoiser) --config (\S+)", card)
    # The shipped recipe, then the pretraining on calibrated synthetic storms that was tried (not shipped).
    assert [kind for kind, _ in recipes] == ["vae", "denoiser", "denoiser", "denoiser"], recipes
    # The recipes read sequence files made from the archive (not in CI): check them as written, then as configs
    # with the data files and the autoencoder replaced by stand-ins.
    vae, denoiser, pretraining = (yaml.safe_load((REPO / path).read_text()) for _, path in recipes[:3])
    assert vae["init_weights"] == denoiser["init_weights"] == "prediff-storms-tiny"
    assert denoiser["vae"] == vae["output_dir"] and vae["data"]["path"] == denoiser["data"]["path"]
    assert denoiser["max_intensity_growth"] == 1.0 and denoiser["intensity_cap_radius_km"] == 32.0  # as shipped
    stand_in = {"data.path": str(shipped_pipeline_path(NAME) / "model_index.json")}
    load_config("vae", REPO / recipes[0][1], stand_in)
    load_config("denoiser", REPO / recipes[1][1], {**stand_in, "vae": str(shipped_pipeline_path(NAME))})
    # The pretraining reads the calibrated storms like the real sequences and hands its output to the shipped
    # denoiser recipe.
    assert pretraining["init_weights"] == "prediff-storms-tiny" and pretraining["vae"] == vae["output_dir"]
    assert pretraining["data"] == {**denoiser["data"], "path": pretraining["data"]["path"]}
    assert "generate storms --calibration" in card and pretraining["data"]["path"] in card
    assert recipes[3][1] == recipes[1][1] and f"--init_weights {pretraining['output_dir']}" in card
    load_config("denoiser", REPO / recipes[2][1], {**stand_in, "vae": str(shipped_pipeline_path(NAME))})
    # The distillation the card reports (its student is not shipped) reads the teacher's training sequences.
    (distill_recipe,) = set(re.findall(r"prediff train distill --config ([^\s`]+)", card))
    assert load_config("distill", REPO / distill_recipe, stand_in).teacher == NAME
    distill_data = yaml.safe_load((REPO / distill_recipe).read_text())["data"]
    assert distill_data == {key: denoiser["data"][key] for key in distill_data}
    # So do the two stages of the one-step CRPS student (not shipped either): dB, then mm/h, stage 2 going on from
    # stage 1's output.
    names = ("distill-radar-crps.yaml", "distill-radar-crps-mmh.yaml")
    assert all(f"examples/configs/shipped/{name}" in card.replace("\n", " ") for name in names)
    stage1, stage2 = (yaml.safe_load((REPO / "examples" / "configs" / "shipped" / name).read_text()) for name in names)
    assert stage1["teacher"] == NAME and stage2["teacher"] == stage1["output_dir"]
    assert stage1["objective"] == stage2["objective"] == "crps" and stage1["crps_steps"] == stage2["crps_steps"] == 1
    assert (stage1["crps_space"], stage2["crps_space"]) == ("unit", "physical")
    assert stage1["data"] == stage2["data"] == {key: denoiser["data"][key] for key in stage1["data"]}


def test_forecasts_rain_rate_under_the_cap_and_members_differ():
    pipe = load_shipped_pipeline(NAME)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    # Light rain with one 8 mm/h core, in mm/h.
    y, x = np.mgrid[0:64, 0:64]
    core = 8.0 * np.exp(-((y - 30) ** 2 + (x - 26) ** 2) / 60.0)
    frames = [np.roll(core, shift, axis=1) + rng.uniform(0.0, 0.5, (64, 64)) for shift in range(4)]
    context = np.stack(frames)[None, :, :, :, None].astype(np.float32)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    forecast = pipe(context, num_inference_steps=4, num_ensemble_members=2, generator=generators).frames
    assert forecast.shape == (1, 2, 4, 64, 64, 1) and np.isfinite(forecast).all()
    assert forecast.min() >= 0 and forecast.max() <= context[0, -1].max() * pipe.max_intensity_growth + 1e-4
    assert np.abs(forecast[0, 0] - forecast[0, 1]).max() > 0.1
