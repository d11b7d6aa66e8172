"""The README's examples run: every ```bash and ```python block of README.md and of each model card
(prediff/pretrained/*/README.md) is one test, as Diffusers' doc tests run their examples.

The blocks are read when the tests are collected, so a block added to a README is tested without touching this
file. Each test id is ``FILE:LINE:first-words`` (LINE: the opening fence). Blocks in other languages (yaml, text)
are not run.

Markers: an HTML comment on the line right above the fence (several may stand on consecutive lines). GitHub does
not render them; they stay visible in the Markdown source:

    <!-- test: skip (REASON) -->    not run, reported as skipped with REASON: the block needs a GPU, SEVIR data,
                                    official checkpoints, a cluster or the network, or is tested elsewhere
    <!-- test: setup ITEM ... -->   the test first provides what the example assumes the user has: each ITEM of
                                    SETUPS below (a file such as ``context.nc``, or a variable such as ``context``)
    <!-- test: name NAME -->        names the block, so that another block may continue from it
    <!-- test: after NAME -->       runs in a copy of the folder that block NAME left behind (``runs/tiny-vae``
                                    before ``prediff train denoiser --vae runs/tiny-vae``); NAME runs first, once per
                                    test run (pytest-xdist workers share it), whatever the test order; if it fails or
                                    is skipped, so is this block

How a block runs: in a fresh temporary folder that holds a copy of ``examples/`` and ``benchmarks/`` (the READMEs'
commands run from the repository root, so ``runs/...`` lands in the temporary folder), with this interpreter's
``prediff`` first on ``PATH``, ``OMP_NUM_THREADS=1``, offline, and a fresh ``HF_HOME``; bash blocks by
``bash -euo pipefail``, python blocks by this interpreter in a subprocess. A block fails when it exits non-zero.

Scaling: the READMEs show the commands a user runs, which train for minutes to hours. Before a block runs, the
rules of SCALING below rewrite its text (every training command gets two optimizer steps on 8 sequences, ensembles
get 2 members and 2 denoising steps, ...); the Markdown stays as the user reads it. A failure prints the text that
ran. The whole file takes about 2.5 minutes of CPU time (2 cores, OMP_NUM_THREADS=1), most of it in the training
commands and the benchmarks, each a fresh process that imports torch.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: The Markdown files whose examples run: the README and every shipped pipeline's model card.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "prediff" / "pretrained").glob("*/README.md"))]
#: What the READMEs' commands expect to find in the working folder (the repository root), copied into it.
REPO_FOLDERS = ("examples", "benchmarks")
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
VERBS = ("skip", "setup", "name", "after")
BLOCK_TIMEOUT_S = 300

#: Training steps and sequences of every scaled `prediff train` command: 8 sequences leave a training split of at
#: least 4 items for two processes of batch 2 with every recipe's validation fraction.
TRAIN_SCALING = "--max_train_steps 2 --train_batch_size 2 --data.num_sequences 8 --checkpointing_steps 2"


@dataclass(frozen=True)
class Rule:
    """A regular-expression substitution applied to the text of every block before it runs."""

    pattern: str
    replacement: str
    why: str


#: The substitutions that scale the examples down, in the order they apply (``re.sub`` on the whole block).
SCALING = [
    Rule(
        r"\b(prediff train (?:vae|alignment|denoiser|earthformer))\b",
        rf"\1 {TRAIN_SCALING}",
        "every training command: 2 optimizer steps on 8 sequences, batch 2, a checkpoint at step 2",
    ),
    Rule(
        r"(shipped/alignment-robust\.yaml)",
        r"\1 --max_train_steps 4",
        "the second alignment stage resumes the first one's last checkpoint (step 2), so it runs to step 4",
    ),
    Rule(r"checkpoint-1250\b", "checkpoint-2", "the shipped denoiser's checkpoint is the scaled run's last one"),
    Rule(r"SyntheticStormDataset\(2048,", "SyntheticStormDataset(8,", "intensity statistics of 8 sequences"),
    Rule(
        r"\baccelerate launch\b",
        "accelerate launch --main_process_port 0",
        "a free port: the default 29500 may be taken by a test running beside this one",
    ),
    Rule(r"\bPIPELINE_DIR\b", "prediff-storms-tiny", "the placeholder: the shipped pipeline, by name"),
    Rule(r"--members \d+", "--members 2", "2 ensemble members"),
    Rule(r"--steps \d+", "--steps 2", "2 denoising steps"),
    Rule(r"--num-sequences \d+", "--num-sequences 2", "2 sequences to evaluate"),
    Rule(r"num_ensemble_members=\d+", "num_ensemble_members=2", "2 ensemble members"),
    Rule(r"num_inference_steps=\d+", "num_inference_steps=2", "2 denoising steps"),
    Rule(
        r"(knowledge_controls=\[control\])\)",
        r"\1, num_inference_steps=2)",
        "2 denoising steps for the controlled forecast too (it has the default of 20)",
    ),
    Rule(
        r"(benchmarks/bench_denoiser\.py)",
        r"\1 --preset prediff-tiny --repeats 1 --backends sdpa --dtypes float32",
        "the tiny denoiser, one backend and dtype, one repeat",
    ),
    Rule(
        r"(benchmarks/bench_sampling\.py)",
        r"\1 --preset prediff-tiny --schedulers ddim:2 --dtypes float32 --members 2 --repeats 1",
        "the tiny pipeline, one 2-step scheduler, 2 members, one repeat",
    ),
    Rule(r"(benchmarks/bench_training\.py)", r"\1 --steps 2", "2 steps per recipe"),
    Rule(r"(benchmarks/bench_storms\.py)", r"\1 --num-sequences 4 --size 32 --workers 1", "4 small sequences"),
    Rule(
        r"(benchmarks/bench_skill\.py)",
        r"\1 --num-sequences 1 --members 2 --samplers sde-dpmsolver++:2 --sampler-sequences 1 --sampler-seeds 1",
        "one sequence, 2 members, one 2-step sampler",
    ),
    Rule(
        r"(benchmarks/bench_knowledge\.py)",
        r"\1 --contexts 1 --members 1 --samplers ddim:2 --n-sigmas 0 --methods analytic",
        "one context and member, one 2-step sampler, one target",
    ),
    Rule(
        r"(benchmarks/bench_memory\.py)", r"\1 --cases forecast --members 2 --steps 2", "one 2-member, 2-step forecast"
    ),
    Rule(
        r"(benchmarks/bench_speed\.py)",
        r"\1 --num-sequences 1 --official-sequences 0 --student-steps 1 --members 2",
        "one sequence, 2 members, the student with 1 step, no DDPM-1000",
    ),
    Rule(
        r"(benchmarks/bench_energy\.py)",
        r"\1 --contexts 1 --members 1 --samplers sde-dpmsolver++:2",
        "one context and member, one 2-step sampler",
    ),
]


def _storm_frames(num_sequences: int, length: int, size: int, seed: int) -> np.ndarray:
    """``(N, T, size, size, 1)`` synthetic storms in VIL levels 0-255 (float32)."""
    from prediff import SyntheticStormDataset

    storms = SyntheticStormDataset(num_sequences, length, size, size, seed=seed, progress=False)
    return np.stack([storms.generate(i) for i in range(num_sequences)]).astype(np.float32)  # generate(): 0-255


def _write_context_nc(folder: Path) -> None:
    """``context.nc``: 4 frames of 64x64 VIL (the shipped pipeline's context), dims (time, y, x), 10 min apart."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    vil = _storm_frames(1, 4, 64, seed=1)[0, ..., 0]
    times = np.datetime64("2024-07-01T12:00") + np.arange(4) * np.timedelta64(10, "m")
    coords = {"time": times, "y": np.arange(64) * 1000.0, "x": np.arange(64) * 1000.0}
    da = xr.DataArray(vil, dims=("time", "y", "x"), coords=coords, attrs={"units": "VIL level"}, name="vil")
    da.to_dataset().to_netcdf(folder / "context.nc")


def _write_my_radar(folder: Path) -> None:
    """``my_radar.npy``: 8 uint8 sequences of 6 frames of 32x32, (N, T, H, W, C), for the tiny recipes."""
    np.save(folder / "my_radar.npy", np.round(_storm_frames(8, 6, 32, seed=5)).astype(np.uint8))


#: What ``<!-- test: setup ITEM -->`` provides: a file written into the working folder, or Python source put
#: before a python block (a variable the example takes as given).
SETUPS = {
    "context.nc": _write_context_nc,
    "my_radar.npy": _write_my_radar,
    "context": (
        "from prediff import SyntheticStormDataset\n"
        "context = SyntheticStormDataset(1, 4, 64, 64, seed=1)[0]['frames'][None] * 255  # (1, 4, 64, 64, 1)\n"
    ),
    "rain": (
        "from prediff import SyntheticStormDataset\n"
        "# (1, 4, 64, 64, 1) rain rate in mm/h: a storm's levels 0-1 as 0-50 mm/h, dry below 0.1 mm/h\n"
        "rain = SyntheticStormDataset(1, 4, 64, 64, seed=1)[0]['frames'][None].numpy() * 50\n"
        "rain[rain < 0.1] = 0.0\n"
    ),
}


@dataclass
class Block:
    """One fenced code block of a Markdown file and its markers."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str  # "bash" or "python"
    source: str
    skip: str | None = None
    setup: list[str] = field(default_factory=list)
    name: str | None = None
    after: str | None = None
    problems: list[str] = field(default_factory=list)  # malformed markers: the test fails with them

    @property
    def id(self) -> str:
        lines = [s.strip() for s in self.source.splitlines()]
        first = next((s for s in lines if s and not s.startswith("#")), lines[0] if lines else "empty")
        words = [re.sub(r"[^\w.=+-]+", "-", word).strip("-") for word in first.split()]
        return f"{self.path.relative_to(REPO)}:{self.line}:{'_'.join([w for w in words if w][:3])}"


MARKER = re.compile(r"^\s*<!--\s*test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")


def parse_markers(lines: list[str], fence_index: int) -> tuple[list[str], list[str]]:
    """The marker texts on the lines right above ``lines[fence_index]`` (top to bottom), and the line numbers used."""
    markers, index = [], fence_index - 1
    while index >= 0 and MARKER.match(lines[index]):
        markers.insert(0, MARKER.match(lines[index]).group(1))
        index -= 1
    return markers, list(range(index + 1, fence_index))


def apply_marker(block: Block, text: str) -> None:
    verb, _, argument = text.partition(" ")
    argument = argument.strip()
    if verb == "skip":
        reason = re.fullmatch(r"\((.+)\)", argument)
        if reason is None:
            block.problems.append(f"marker 'test: {text}': write the reason in parentheses, 'skip (REASON)'")
        else:
            block.skip = reason.group(1)
    elif verb == "setup":
        unknown = [item for item in argument.split() if item not in SETUPS]
        if unknown or not argument:
            block.problems.append(f"marker 'test: {text}': setup items are {sorted(SETUPS)}, got {unknown}")
        for item in argument.split():
            if isinstance(SETUPS.get(item), str) and block.language != "python":
                block.problems.append(f"setup item {item!r} is Python source and applies to python blocks only")
        block.setup += argument.split()
    elif verb in ("name", "after") and re.fullmatch(r"[\w.-]+", argument):
        setattr(block, verb, argument)
    else:
        block.problems.append(f"marker 'test: {text}': unknown; the markers are {', '.join(VERBS)}")


def parse_document(path: Path) -> tuple[list[Block], list[str]]:
    """The bash and python blocks of one Markdown file, and the problems of markers that belong to no such block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, orphans, attached, index = [], [], set(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, language = opening.groups()
        end = next(
            (
                j
                for j in range(index + 1, len(lines))
                if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])
            ),
            None,
        )
        markers, marker_lines = parse_markers(lines, index)
        if language.lower() in LANGUAGES:
            attached.update(marker_lines)
            block = Block(path, index + 1, LANGUAGES[language.lower()], "\n".join(lines[index + 1 : end]) + "\n")
            for text in markers:
                apply_marker(block, text)
            if end is None:
                block.problems.append("the code block is never closed")
            blocks.append(block)
        index = len(lines) if end is None else end + 1
    for number, text in enumerate(lines):
        if MARKER.match(text) and number not in attached:
            orphans.append(f"{path.relative_to(REPO)}:{number + 1}: marker not right above a bash or python block")
    return blocks, orphans


def collect(documents: list[Path]) -> tuple[list[Block], list[str]]:
    """The blocks of all ``documents``, with what is wrong with their markers across files."""
    blocks, problems = [], []
    for path in documents:
        found, orphans = parse_document(path)
        blocks += found
        problems += orphans
    names = [b.name for b in blocks if b.name]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"block name {name!r} is used more than once")
    named = {b.name: b for b in blocks if b.name}
    for block in blocks:
        chain, current = [], block
        while current.after and not block.problems:
            chain.append(current.after)
            if current.after not in named:
                block.problems.append(f"'after {current.after}': no block is named {current.after!r}")
            elif chain.count(current.after) > 1:
                block.problems.append(f"'after' markers go round in a circle: {' -> '.join(chain)}")
            else:
                current = named[current.after]
    return blocks, problems


BLOCKS, PROBLEMS = collect(DOCUMENTS)
NAMED = {block.name: block for block in BLOCKS if block.name}


def scaled(block: Block) -> str:
    """The block's text as it runs: setup source first, then every SCALING rule applied."""
    text = "".join(SETUPS[item] for item in block.setup if isinstance(SETUPS[item], str)) + block.source
    for rule in SCALING:
        text = re.sub(rule.pattern, rule.replacement, text)
    return text


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "PREDIFF_"))}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
        PREDIFF_TRACEBACK="1",  # a failing command prints its traceback into the report
        PYTHONWARNINGS="ignore",
    )
    return env


class Runner:
    """Runs blocks. A named block runs once per test run, even across pytest-xdist workers: its folder and outcome
    are kept in a folder all workers share, under a lock, for the blocks that run ``after`` it."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        base = factory.getbasetemp()
        # pytest-xdist gives each worker its own basetemp inside one folder of the run: share that one.
        self.shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "readme-examples"
        self.shared.mkdir(exist_ok=True)

    def run(self, block: Block, as_prerequisite: bool = False) -> Path:
        """Run ``block`` (or reuse its earlier run) and return the folder it ran in; skips or fails the test."""
        if block.problems:
            pytest.fail(f"{block.id}: " + "; ".join(block.problems), pytrace=False)
        if block.skip:
            pytest.skip(f"{block.id} is skipped ({block.skip})" if as_prerequisite else block.skip)
        if not block.name:
            return self._run(block, self.factory.mktemp("example"))
        folder = self.shared / block.name
        with open(self.shared / f"{block.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker running this block: wait for its outcome
            outcome = folder / "outcome.txt"
            if not outcome.exists():
                folder.mkdir()
                try:
                    self._run(block, folder)
                    outcome.write_text("ok")
                except pytest.fail.Exception as failure:
                    outcome.write_text(str(failure))
                except BaseException:  # a skipped prerequisite, an interrupt: nothing to remember
                    shutil.rmtree(folder)
                    raise
            result = outcome.read_text()
        if result != "ok":
            pytest.fail(
                result if not as_prerequisite else f"{block.id}, which this block runs after, failed:\n{result}",
                pytrace=False,
            )
        return folder / "work"

    def _run(self, block: Block, folder: Path) -> Path:
        work = folder / "work"
        if block.after:
            shutil.copytree(self.run(NAMED[block.after], as_prerequisite=True), work, symlinks=True)
        else:
            work.mkdir()
            for name in REPO_FOLDERS:
                shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        for item in block.setup:
            if callable(SETUPS[item]):
                SETUPS[item](work)
        text = scaled(block)
        script = folder / f"example.{'py' if block.language == 'python' else 'sh'}"  # outside work: not sys.path[0]
        script.write_text(text)
        interpreter = [sys.executable] if block.language == "python" else ["bash", "-euo", "pipefail"]
        # A session of its own, so that a timeout ends every process the block started (accelerate's workers too).
        process = subprocess.Popen(
            [*interpreter, str(script)],
            cwd=work,
            env=_environment(folder / "hf-home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
            status = f"exited with status {process.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            status = f"was still running after {BLOCK_TIMEOUT_S} s and was killed"
        if process.returncode != 0:
            pytest.fail(
                f"{block.id} {status}\n--- ran (scaled) in {work}:\n{text}--- output (last 6000 characters):"
                f"\n{output[-6000:]}",
                pytrace=False,
            )
        return work


@pytest.fixture(scope="session")
def runner(tmp_path_factory) -> Runner:
    return Runner(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example(block, runner):
    runner.run(block)


def test_markers_and_scaling_rules_are_sound():
    """Every marker sits on a block, names are unique, and every scaling rule and setup item is still used."""
    assert not PROBLEMS, PROBLEMS
    assert {b.path for b in BLOCKS} == set(DOCUMENTS) and len(DOCUMENTS) >= 3  # the README and both model cards
    running = [b for b in BLOCKS if not b.skip]
    for rule in SCALING:
        assert any(re.search(rule.pattern, b.source) for b in running), f"no example uses the rule {rule.pattern!r}"
    for item in SETUPS:
        assert any(item in b.setup for b in running), f"no example uses the setup item {item!r}"
    # A training command that the rules missed would run for minutes: every one is scaled.
    for block in running:
        for line in scaled(block).splitlines():
            if re.search(r"\bprediff train \w+", line):
                assert TRAIN_SCALING in line, f"{block.id}: unscaled training command {line!r}"


def test_parser_reads_markers_and_reports_mistakes(tmp_path, monkeypatch):
    """The marker scheme itself: what it accepts, and the mistakes it reports instead of ignoring."""
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    document = tmp_path / "README.md"
    document.write_text(
        "# t\n\n<!-- test: skip (needs SEVIR data) -->\n```bash\nprediff train vae\n```\n\n"
        "<!-- test: name first -->\n<!-- test: setup context -->\n```python\nprint(context)\n```\n\n"
        "```yaml\na: 1\n```\n\n<!-- test: skip needs data -->\n```bash\nls\n```\n\n"
        "<!-- test: setup context -->\n```bash\nls\n```\n\n<!-- test: after first -->\n\n```bash\nls\n```\n"
    )
    blocks, orphans = parse_document(document)
    assert [b.language for b in blocks] == ["bash", "python", "bash", "bash", "bash"]  # yaml is not collected
    assert blocks[0].skip == "needs SEVIR data" and blocks[0].line == 4
    assert blocks[0].id == "README.md:4:prediff_train_vae"
    assert blocks[1].name == "first" and blocks[1].setup == ["context"] and not blocks[1].problems
    assert "context = " in scaled(blocks[1])
    assert "parentheses" in blocks[2].problems[0] and blocks[2].skip is None
    assert "python blocks only" in blocks[3].problems[0]
    # A marker separated from its block by a blank line belongs to nothing: reported, not silently dropped.
    assert blocks[4].after is None and orphans == ["README.md:28: marker not right above a bash or python block"]
    # Names: unique, known, and no circle of 'after' markers.
    document.write_text(
        "<!-- test: name a -->\n<!-- test: after b -->\n```bash\nls\n```\n"
        "<!-- test: name b -->\n<!-- test: after a -->\n```bash\nls\n```\n"
        "<!-- test: after c -->\n```bash\nls\n```\n<!-- test: name d -->\n```bash\nls\n```\n"
        "<!-- test: name d -->\n```python\npass\n```\n"
    )
    blocks, problems = collect([document])
    assert "circle" in blocks[0].problems[0] and "circle" in blocks[1].problems[0]
    assert blocks[2].problems == ["'after c': no block is named 'c'"]
    assert problems == ["block name 'd' is used more than once"]


def test_a_broken_example_fails_and_so_do_the_blocks_after_it(tmp_path_factory, tmp_path, monkeypatch):
    """A failing block fails its test with its exit status, the text that ran and its output; a block after it
    fails naming it, without running; a block after a skipped one is skipped."""
    runner = Runner(tmp_path_factory)
    runner.shared = tmp_path
    broken = Block(REPO / "README.md", 1, "python", "print('about to break')\nraise SystemExit(3)\n", name="broken")
    after = Block(REPO / "README.md", 5, "bash", "touch ran\n", after="broken")
    skipped = Block(REPO / "README.md", 9, "bash", "true\n", name="skipped", skip="needs SEVIR data")
    monkeypatch.setitem(NAMED, "broken", broken)
    monkeypatch.setitem(NAMED, "skipped", skipped)
    with pytest.raises(pytest.fail.Exception) as failure:
        runner.run(broken)
    assert "exited with status 3" in str(failure.value) and "about to break" in str(failure.value)
    assert "raise SystemExit(3)" in str(failure.value)  # the text that ran
    with pytest.raises(pytest.fail.Exception, match=re.escape(broken.id) + ", which this block runs after, failed"):
        runner.run(after)
    assert not list(tmp_path_factory.getbasetemp().rglob("ran"))
    with pytest.raises(pytest.skip.Exception, match="is skipped \\(needs SEVIR data\\)"):
        runner.run(Block(REPO / "README.md", 13, "bash", "true\n", after="skipped"))
    bash = Block(REPO / "README.md", 17, "bash", "false | cat\necho never\n")  # pipefail: a failing pipe fails
    with pytest.raises(pytest.fail.Exception, match="exited with status 1"):
        runner.run(bash)
