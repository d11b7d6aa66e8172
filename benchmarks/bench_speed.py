"""Speed against skill: the few-step student (`prediff-storms-fast`) against its teacher and pysteps, in one run.

Every forecaster sees the same held-out synthetic storms (data seed `--data-seed`; the shipped recipes train on
seed 0), with `--members` members and noise seeded per (sequence, member), and is timed side by side on the same
machine. Printed in Markdown:

1. **All sequences** (`--num-sequences`): the teacher with its default sampler (SDE-DPM-Solver++ 20), the student
   with each of `--student-steps`, other students (`--extra-student LABEL=PIPELINE`, e.g. an earlier student) at
   their own default step counts, pysteps STEPS and extrapolation: seconds per `--members`-member sequence, CRPS,
   spread/skill and CSI at 74 and 133 (VIL levels), and each ratio to the teacher.
2. **Official subset** (the first `--official-sequences`): the same PreDiff rows and the teacher's official
   DDPM-1000 loop, which costs 50 times the default sampler.

Either table is left out with a count of 0.

The CRPS-against-time picture (`--png`) draws every row of the first table, STEPS and extrapolation as points.
Example (about 25 minutes on a 2-core CPU with the defaults):

    python benchmarks/bench_speed.py
    python benchmarks/bench_speed.py --num-sequences 8 --official-sequences 0 --student-steps 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_common import Forecaster, baseline_forecasters, prediff_forecaster
from bench_skill import score

from prediff.data import SyntheticStormDataset
from prediff.pipelines.loading import load_forecast_pipeline

#: Columns: (label, score name, higher is better).
COLUMNS = (("CRPS", "crps"), ("spread/skill", "spread_skill_ratio"), ("CSI74", "csi_74"), ("CSI133", "csi_133"))
TEACHER_DEFAULT = "sde-dpmsolver++:20"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="prediff-storms-fast", help="the student: a shipped name or a folder")
    parser.add_argument("--teacher", default="prediff-storms-tiny", help="the teacher: a shipped name or a folder")
    parser.add_argument("--num-sequences", type=int, default=64, help="held-out sequences of the first table")
    parser.add_argument("--official-sequences", type=int, default=2, help="sequences of the DDPM-1000 table")
    parser.add_argument("--data-seed", type=int, default=2026, help="seed of the held-out storms")
    parser.add_argument("--members", type=int, default=8, help="ensemble members (PreDiff and STEPS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise")
    parser.add_argument("--student-steps", nargs="+", type=int, default=[1, 2, 4], help="student step counts")
    parser.add_argument(
        "--extra-student",
        action="append",
        default=[],
        metavar="LABEL=PIPELINE",
        help="another student (a shipped name or a folder), scored at its default step count as LABEL (repeatable)",
    )
    parser.add_argument(
        "--teacher-samplers",
        nargs="*",
        default=[],
        help="more preset:steps entries for the teacher (e.g. sde-dpmsolver++:4), beside its default",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sequences forecast together")
    parser.add_argument("--png", default="crps_vs_time.png", help="the CRPS-against-time picture ('' for none)")
    return parser.parse_args()


def teacher_label(entry: str) -> str:
    name, _, steps = entry.partition(":")
    return f"teacher ({name} {steps})"


def prediff_rows(args: argparse.Namespace, student, teacher, others: dict) -> dict[str, Forecaster]:
    """The teacher's default sampler (first), its `--teacher-samplers`, the student at each step count (with
    its own scheduler) and every other student (label: pipeline) at its own default step count."""
    rows = {}
    for entry in [TEACHER_DEFAULT, *args.teacher_samplers]:
        name, _, steps = entry.partition(":")
        rows[teacher_label(entry)] = prediff_forecaster(teacher, name, int(steps), args.members, args.seed)
    for steps in args.student_steps:
        rows[f"student (lcm {steps})"] = prediff_forecaster(student, None, steps, args.members, args.seed)
    for label, pipe in others.items():
        steps = pipe.default_num_inference_steps
        sampler = type(pipe.scheduler).__name__.removesuffix("Scheduler").lower()
        rows[f"{label} ({sampler} {steps})"] = prediff_forecaster(pipe, None, steps, args.members, args.seed)
    return rows


def other_students(args: argparse.Namespace) -> dict:
    """Every `--extra-student LABEL=PIPELINE`, loaded: label -> pipeline."""
    others = {}
    for entry in args.extra_student:
        label, sep, path = entry.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--extra-student takes LABEL=PIPELINE, got {entry!r}")
        try:
            others[label] = load_forecast_pipeline(path)
        except FileNotFoundError as error:
            raise SystemExit(f"--extra-student {label}: {error}") from None
    return others


def table(results: dict, seconds: dict[str, float], count: int, reference: str) -> str:
    """Markdown: seconds per sequence and the scores, with the ratio to `reference` in brackets."""
    header = "| forecast | s / sequence | " + " | ".join(label for label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    base = results[reference].scores
    for name, result in results.items():
        cells = []
        for _, key in COLUMNS:
            value = result.scores.get(key, float("nan"))
            if value != value:
                cells.append("-")
                continue
            ratio = value / base[key] if base.get(key) else float("nan")
            cells.append(f"{value:.3g} ({ratio:.3f})" if name != reference else f"{value:.3g}")
        lines.append(f"| {name} | {seconds[name] / count:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def picture(results: dict, seconds: dict[str, float], count: int, path: str, title: str) -> Path:
    """CRPS against seconds per sequence (log axis): the PreDiff rows as a curve per model, baselines as points."""
    from prediff.visualization._utils import new_figure, save_figure

    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    groups = {"student": [], "teacher": [], "other": []}
    for name, result in results.items():
        kind = name.split(" ")[0] if name.split(" ")[0] in groups else "other"
        groups[kind].append((seconds[name] / count, result.scores["crps"], name))
    # Student labels above-right of their points, teacher labels below-left: the two curves meet at 4 steps.
    for kind, marker, offset, align in (("teacher", "s", (-4, -12), "right"), ("student", "o", (4, 4), "left")):
        points = sorted(groups[kind])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=kind)
            for x, y, name in points:
                label = name.split("(")[-1].rstrip(")")
                ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, ha=align, fontsize=8)
    for x, y, name in groups["other"]:
        ax.plot([x], [y], marker="D", linestyle="none", label=name)
    ax.set_xscale("log")
    ax.margins(y=0.08)
    ax.set_xlabel("seconds per sequence (log scale)")
    ax.set_ylabel("CRPS (VIL levels, lower is better)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    student = load_forecast_pipeline(args.student)
    teacher = load_forecast_pipeline(args.teacher)
    others = other_students(args)
    for pipe in (student, teacher, *others.values()):
        pipe.set_progress_bar_config(disable=True)
    T_in, H, W, _ = teacher.context_shape
    T_out = teacher.forecast_shape[0]
    total = max(args.num_sequences, args.official_sequences)
    dataset = SyntheticStormDataset(total, T_in + T_out, H, W, seed=args.data_seed)
    print(
        f"held-out storms: data seed {args.data_seed}, {args.num_sequences} sequences of {T_in} + {T_out} frames of "
        f"{H}x{W}; {args.members} members, noise seed {args.seed}; {torch.get_num_threads()} torch threads"
    )

    if args.num_sequences:
        forecasters = prediff_rows(args, student, teacher, others)
        baselines = baseline_forecasters(T_out, args.members, args.seed, min(H, W))
        forecasters.update({name: fn for name, fn in baselines.items() if name != "persistence"})
        results, seconds = score(forecasters, dataset, teacher, args.num_sequences, args.batch_size)
        print(f"\n## {args.num_sequences} sequences x {args.members} members (ratio to the teacher's default)\n")
        print(table(results, seconds, args.num_sequences, teacher_label(TEACHER_DEFAULT)))
        if args.png:
            title = f"{args.num_sequences} held-out storms x {args.members} members"
            print(f"\nwrote {picture(results, seconds, args.num_sequences, args.png, title)}")

    if args.official_sequences:
        official: dict[str, Forecaster] = {
            "teacher (ddpm 1000)": prediff_forecaster(teacher, "ddpm", 1000, args.members, args.seed)
        }
        official.update(prediff_rows(args, student, teacher, others))
        results, seconds = score(official, dataset, teacher, args.official_sequences, args.batch_size)
        print(
            f"\n## The first {args.official_sequences} sequences x {args.members} members (ratio to the official "
            "DDPM-1000)\n"
        )
        print(table(results, seconds, args.official_sequences, "teacher (ddpm 1000)"))


if __name__ == "__main__":
    main()
