"""Train PreDiff on SEVIR-LR with Accelerate: the autoencoder, the alignment network, then the denoiser.

Each stage reads its official recipe from `examples/configs/sevirlr/{vae,alignment,denoiser}.yaml`, points
it at your SEVIR-LR root (`CATALOG.csv` + `data/`; `prediff data downsample-sevir` makes one from SEVIR) and
writes its result into `--output-dir/<stage>`; the later stages use the earlier results, and the denoiser's
result is a complete `PreDiffPipeline` folder (autoencoder, denoiser, alignment network, scheduler).

One GPU:

    accelerate launch examples/train_sevirlr.py --sevir-lr-root data/sevir_lr --output-dir runs/sevirlr

Several GPUs on one machine (the official runs used 4; the recipes' batch sizes are per process):

    accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 \\
        examples/train_sevirlr.py --sevir-lr-root data/sevir_lr --output-dir runs/sevirlr

Several machines: run on each node, with its rank

    accelerate launch --multi_gpu --num_machines 2 --machine_rank 0 --main_process_ip 10.0.0.1 \\
        --main_process_port 29500 --num_processes 16 examples/train_sevirlr.py --sevir-lr-root ...

One stage at a time (`--stages denoiser`), any recipe key overridden (`--set max_train_steps=1000
--set train_batch_size=4`), an interrupted run continued (`--set resume_from_checkpoint=latest`).
The same stages run through the command line: `accelerate launch -m prediff train vae --config ...`.
`--tiny` swaps in tiny networks and a few steps, to check a data tree and the setup in seconds on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prediff.training import TRAINERS, load_config, parse_override_args

STAGES = ("vae", "alignment", "denoiser")
RECIPES = Path(__file__).resolve().parent / "configs" / "sevirlr"

#: `--tiny`: the tiny networks of the test suite, two optimizer steps per stage, no workers.
TINY = {
    "vae": {"model": {"preset": "prediff-tiny"}, "disc_start": 1, "disc_num_layers": 1, "disc_channels": 8},
    "alignment": {
        "model": {"base_units": 16, "depth": [1, 1], "num_heads": 2, "pool_heads_channels": 8},
    },
    "denoiser": {
        "model": {"base_units": 16, "depth": [1, 1], "num_heads": 2},
        "validation_inference_steps": 2,
        "num_ensemble_members": 1,
        "num_validation_samples": 1,
        "mixed_precision": "no",
    },
}
TINY_COMMON = {
    "max_train_steps": 2,
    "train_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "lr_warmup_steps": 0,
    "checkpointing_steps": 2,
    "num_validation_batches": 1,
    "report_to": "none",
    "data.num_workers": 0,
    "data.val_fraction": 0.5,
    "allow_tf32": False,
}


def stage_overrides(stage: str, root: str, output_dir: Path, tiny: bool, extra: dict[str, Any]) -> dict[str, Any]:
    """The overrides that point a stage's recipe at the data and at the earlier stages' results."""
    overrides: dict[str, Any] = {"data.path": root, "output_dir": str(output_dir / stage)}
    if stage in ("alignment", "denoiser"):
        overrides["vae"] = str(output_dir / "vae")
    if stage == "denoiser":
        alignment = output_dir / "alignment"
        overrides["knowledge_model"] = str(alignment) if (alignment / "config.json").is_file() else None
    if tiny:
        overrides.update(TINY_COMMON)
        overrides.update(TINY[stage])
    overrides.update(extra)
    return overrides


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sevir-lr-root", required=True, help="SEVIR-LR folder with CATALOG.csv and data/")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/sevirlr"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--tiny", action="store_true", help="tiny networks, 2 steps per stage")
    args = parser.parse_args(argv)
    extra = parse_override_args([f"--{item}" for item in args.set])

    result = args.output_dir
    for stage in STAGES:
        if stage not in args.stages:
            continue
        overrides = stage_overrides(stage, args.sevir_lr_root, args.output_dir, args.tiny, extra)
        config = load_config(stage, RECIPES / f"{stage}.yaml", overrides)
        result = Path(TRAINERS[stage](config).train())
        print(f"{stage}: the trained result is in {result}")
    return result


if __name__ == "__main__":
    main()
