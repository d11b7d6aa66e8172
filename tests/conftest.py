"""Shared test helpers: the official checkpoint listing (tests/fixtures), CLI runner and tiny pipeline fixtures."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker (and each process a test starts) takes its share of the cores: workers that
    each spin up as many OpenMP threads as there are cores oversubscribe them, and a tiny test can then take 100
    times as long as alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()

#: Parameter names and shapes of the official PreDiff / Earthformer checkpoints, as listed from their state dicts.
LISTING = Path(__file__).resolve().parent / "fixtures" / "official_state_dict_keys.txt"
SECTIONS = {"unet": "(a)", "earthformer": "(b)", "alignment": "(c)", "vae": "(d)", "vae_released": "(e)"}


def official_listing(section: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``key -> (shape, "param" | "buffer")`` of one section of the official listing."""
    entries, current = {}, None
    for line in LISTING.read_text().splitlines():
        if line.startswith("## "):
            current = line.split()[1]
            continue
        if current != SECTIONS[section] or not line.strip() or line.startswith("#"):
            continue
        key, shape, kind = line.split("\t")
        entries[key] = (tuple(ast.literal_eval(shape)), kind)
    return entries


def random_official_state_dict(section: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the listed shapes (index buffers as in the listing's models are filled by the caller)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, (shape, _) in official_listing(section).items()}


def relative_error(actual: torch.Tensor, expected: torch.Tensor, floor: float = 1e-12) -> float:
    """Largest absolute difference relative to the largest magnitude of ``expected`` (at least ``floor``)."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(floor)).item()


@pytest.fixture
def umask_027():
    """Run a test under umask 027, where plain open() / mkdir() make 0o640 files and 0o750 folders."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def run_cli(argv: list) -> int:
    """`prediff ARGV` through the real command-line parser; returns the exit status."""
    from prediff import cli

    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory) -> Path:
    """A saved untrained "prediff-tiny" pipeline folder (32x32 frames, 3 in, 2 out)."""
    from prediff.pipelines import PreDiffPipeline

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pipe") / "tiny"
    PreDiffPipeline.from_preset("prediff-tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(pipe_dir):
    """The pipeline of `pipe_dir`, loaded back, without progress bars."""
    from prediff.pipelines import PreDiffPipeline

    pipe = PreDiffPipeline.from_pretrained(pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_extrapolating_pipeline(scheduler: str = "sde-dpmsolver++"):
    """The tiny pipeline with a motion extrapolator (the diffusion models a residual, decoding adds it), seeded
    weights and the given sampler."""
    from prediff.models import EarthformerUNetModel, MotionExtrapolator
    from prediff.pipelines import PreDiffPipeline
    from prediff.schedulers import prediff_scheduler

    torch.manual_seed(0)
    base = PreDiffPipeline.from_preset("prediff-tiny")
    unet = EarthformerUNetModel(
        input_shape=(5, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1), num_heads=2
    )
    pipe = PreDiffPipeline(
        vae=base.vae,
        unet=unet.eval(),
        scheduler=prediff_scheduler(scheduler),
        knowledge_model=base.knowledge_model,
        extrapolator=MotionExtrapolator(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def extrapolating_pipe():
    """[`tiny_extrapolating_pipeline`] with the stochastic SDE-DPM-Solver++ sampler."""
    return tiny_extrapolating_pipeline()
