"""The shipped few-step student `prediff-storms-fast`: complete, small, loaded with its LCMScheduler and two steps
by default, sharing the teacher's frozen components, its recipes chained as the card says, and forecasting members
that differ."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from diffusers import LCMScheduler
from safetensors.torch import load_file

from prediff import SyntheticStormDataset
from prediff.pipelines.loading import load_forecast_pipeline
from prediff.pretrained import load_shipped_pipeline, shipped_intensity_stats, shipped_pipeline_path
from prediff.schedulers import default_inference_steps
from prediff.training import load_config

REPO = Path(__file__).resolve().parents[2]


def test_folder_is_small_and_shares_the_teachers_frozen_components():
    folder = shipped_pipeline_path("prediff-storms-fast")
    teacher = shipped_pipeline_path("prediff-storms-tiny")
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights <= 6 * 2**20, f"{weights / 2**20:.2f} MiB"
    assert all(p.suffix in {".json", ".safetensors", ".md"} for p in folder.rglob("*") if p.is_file())
    ours, theirs = (load_file(str(f / "vae" / "diffusion_pytorch_model.safetensors")) for f in (folder, teacher))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # The alignment network is the teacher's architecture, fine-tuned (alignment-steered.yaml).
    ours, theirs = (json.loads((f / "knowledge_model" / "config.json").read_text()) for f in (folder, teacher))
    assert {k: v for k, v in ours.items() if k != "_name_or_path"} == {
        k: v for k, v in theirs.items() if k != "_name_or_path"
    }
    assert json.loads((folder / "extrapolator" / "config.json").read_text())["_class_name"] == "MotionExtrapolator"
    assert shipped_intensity_stats("prediff-storms-fast") == shipped_intensity_stats("prediff-storms-tiny")
    card = (folder / "README.md").read_text()
    # The shipped student's two stages first, then the consistency student's and the smaller student's recipes (not
    # shipped): each distils the teacher, or the output of a recipe before it, on the teacher's training storms.
    recipes = re.findall(r"prediff train distill --config ([^\s`]+)", card)
    assert recipes[:2] == [
        "examples/configs/shipped/distill-crps.yaml",
        "examples/configs/shipped/distill-crps-2step.yaml",
    ]
    assert "examples/configs/shipped/distill.yaml" in recipes
    assert recipes.index("examples/configs/shipped/distill-small.yaml") + 1 == recipes.index(
        "examples/configs/shipped/distill-small-crps.yaml"
    )
    outputs = []
    for recipe in recipes:
        later_stage = "teacher: runs/" in (REPO / recipe).read_text()
        config = load_config("distill", REPO / recipe, {"teacher": str(folder)} if later_stage else {})
        if later_stage:
            assert yaml.safe_load((REPO / recipe).read_text())["teacher"] in outputs, recipe
        else:
            assert config.teacher == "prediff-storms-tiny"
        assert config.data.seed == 0
        outputs.append(config.output_dir)
    # The alignment network is fine-tuned from, and steers, the output of the second stage.
    (alignment,) = re.findall(r"prediff train alignment --config ([^\s`]+)", card)
    steered = yaml.safe_load((REPO / alignment).read_text())
    assert steered["init_weights"] == steered["steered_pipeline"] == steered["vae"] == outputs[1]
    assert steered["data"]["seed"] == 0 and steered["steered_steps"] == 2


def test_loads_with_its_few_step_scheduler_and_members_differ():
    pipe = load_shipped_pipeline("prediff-storms-fast")
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert 1 <= default_inference_steps(pipe.scheduler) <= 4
    assert pipe.default_num_inference_steps == 2  # recorded by the two-step recipe
    # `prediff forecast --pipeline prediff-storms-fast` loads the same pipeline.
    assert isinstance(load_forecast_pipeline("prediff-storms-fast").scheduler, LCMScheduler)
    pipe.set_progress_bar_config(disable=True)
    storm = SyntheticStormDataset(1, 8, 64, 64, seed=31337, progress=False).generate(0)
    context = storm[None, :4].astype(np.float32)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    frames = pipe(context, num_inference_steps=1, num_ensemble_members=2, generator=generators).frames
    assert frames.shape == (1, 2, 4, 64, 64, 1) and np.isfinite(frames).all()
    assert frames.min() >= 0 and frames.max() <= 255
    # A real ensemble: the members differ by more than a few VIL levels somewhere.
    assert np.abs(frames[0, 0] - frames[0, 1]).max() > 5
