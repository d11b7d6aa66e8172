"""Property-based tests (Hypothesis) of what users hand the commands: random and damaged context files for
`prediff forecast --input` (.npy, HDF5, zarr, netCDF) and random YAML configurations for `prediff train vae
--config`.

The property, for every input: the command succeeds (exit status 0) or refuses with exit status 2 and exactly
one line on stderr, `prediff COMMAND: error: MESSAGE`, whose message is the library's own (no traceback, no
Python warning, no `TypeError: ...` that an unforeseen exception would print); and nothing is written in the
working folder outside the output (`--out`'s folder, `output_dir`), the input included.

Each test draws 10 examples, with a fixed seed, in CI; `PREDIFF_FUZZ_EXAMPLES=500` draws that many per test, at
random (`PREDIFF_FUZZ_SEED` fixes the seed of such a run; `PREDIFF_FUZZ_NO_SHRINK=1` reports the first failing
example as drawn instead of shrinking it, which can take minutes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, seed, settings
from hypothesis import strategies as st

from prediff.training.config_loading import load_config, parse_override_args
from tests.conftest import run_cli

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")
xr = pytest.importorskip("xarray")
pytest.importorskip("netCDF4")

_LONG_RUN = os.environ.get("PREDIFF_FUZZ_EXAMPLES")
settings.register_profile(
    "prediff-fuzz",
    max_examples=int(_LONG_RUN or 10),
    deadline=None,
    # Without a long run, the same examples every time: CI never fails on an example that a rerun would not draw.
    derandomize=_LONG_RUN is None,
    # No example database: it would be a folder in the working directory of the test run.
    database=None,
    phases=[Phase.explicit, Phase.generate] if os.environ.get("PREDIFF_FUZZ_NO_SHRINK") else list(Phase),
    # The module's fixtures (the tiny pipeline, capfd) are shared by the examples on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(parent=settings.get_profile("prediff-fuzz"))


def _with_seed(test):
    value = os.environ.get("PREDIFF_FUZZ_SEED")
    return seed(int(value))(test) if value else test


#: Types of exceptions whose message the command line prints without the type: the library's own refusals. Any
#: other type leads the line (`KeyError: 'x'`): an exception nobody meant the user to see.
_TYPE_PREFIX = re.compile(r"^(?:[A-Z]\w*(?:Error|Exception|Warning)|[A-Z]\w*\.\w+Error)\b")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: relative path -> (size, modification time in ns)."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            stat = path.lstat()
            files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


def _check_property(command: str, status: int, capfd, caught: list, root: Path, before: dict, allowed: Path) -> str:
    """Assert the property (see the module docstring) of one command run; returns its stderr."""
    out, err = capfd.readouterr()
    event(f"exit status {status}")
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert status in (0, 2), f"exit status {status}; stderr:\n{err}"
    assert "Traceback" not in err, err
    if status == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"prediff {command}: error: "), err
        message = lines[0].removeprefix(f"prediff {command}: error: ")
        assert not _TYPE_PREFIX.match(message), f"an unforeseen exception reached the user: {message}"
        assert not shown, f"warnings besides the error {message!r}: {shown}"
    after = _snapshot(root)
    allowed = allowed.resolve().relative_to(root.resolve())
    changed = [
        path
        for path, stat in after.items()
        if before.get(path) != stat and Path(path) != allowed and allowed not in Path(path).parents
    ]
    assert not changed, f"written outside {allowed}: {changed}"
    return err


@contextlib.contextmanager
def _workdir():
    """A fresh working folder, current for the run (relative paths of a configuration land in it)."""
    with tempfile.TemporaryDirectory(prefix="prediff-fuzz-") as name:
        root = Path(name).resolve()
        with contextlib.chdir(root):
            yield root


@contextlib.contextmanager
def _record_warnings():
    """Every warning of the run, shown or not (a user's terminal would show them on stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# ---------------------------------------------------------------------------------------------- context files

#: dtypes a context file may hold; the readers take integers and floats only.
NUMERIC_DTYPES = ["<f4", ">f4", "<f8", "<f2", "|u1", "|i1", "<i2", ">u2", "<i4", "<i8", "|b1"]
OTHER_DTYPES = ["<c8", "<U3", "<M8[s]", "|S2", "O"]
#: Special values planted in a context: outside the pipeline's value range [0, 255], not finite, huge.
SPECIALS = [np.nan, np.inf, -np.inf, -1.0, 256.0, 1e30, -1e30, 0.0, 255.0]


@st.composite
def context_arrays(draw, dtypes=NUMERIC_DTYPES + OTHER_DTYPES):
    """An array a user might give as a context: mostly shaped for the tiny pipeline (3 frames of 32x32x1, with
    or without sample and channel axes, sometimes larger frames or other lengths), sometimes any shape; values
    in range, with special values planted, in a numeric or another dtype."""
    if draw(st.integers(0, 3)):
        samples = draw(st.sampled_from([(), (1,), (2,)]))
        frames = draw(st.sampled_from([3, 3, 3, 2, 4]))
        size = draw(st.sampled_from([32, 32, 32, 24, 40]))
        channels = draw(st.sampled_from([(), (1,), (1,), (2,)]))
        shape = (*samples, frames, size, size, *channels)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=6)))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(0.0, 255.0, shape)
    for _ in range(draw(st.integers(0, 3))):
        if values.size:
            values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIALS))
    if dtype.kind == "O":
        array = np.empty(shape, dtype=object)
        array[...] = 1.5
        return array
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return values.astype(dtype)


#: How a written file is damaged: not at all (half the examples, so that sound files reach the forecast), cut
#: short, a byte changed, bytes appended, emptied.
damages = st.none() | st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.integers(1, 255)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.just(("empty",)),
)


def _damage(path: Path, damage: tuple | None) -> None:
    if damage is None or not path.is_file():
        return
    data = bytearray(path.read_bytes())
    if damage[0] == "truncate":
        data = data[: int(len(data) * damage[1])]
    elif damage[0] == "flip" and data:
        data[min(int(len(data) * damage[1]), len(data) - 1)] ^= damage[2]
    elif damage[0] == "append":
        data += damage[1]
    elif damage[0] == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


#: Names of variables, datasets and dimensions: the ones the readers look for and others.
names = st.one_of(
    st.sampled_from(["frames", "vil", "radar/vil", "x", "data", "forecast"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8),
)
DIM_NAMES = ["time", "t", "frame", "y", "x", "lat", "lon", "row", "col", "channel", "band", "member", "sample", "foo"]
#: What a sequence file may record about itself (`prediff data radar` writes such a JSON attribute).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
file_metadata = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "pixel_size_km": json_values,
            "frame_interval_minutes": json_values,
            "units": json_values,
            "value_range": json_values,
        },
    ).map(lambda d: json.dumps(d, allow_nan=True)),
    st.binary(max_size=16),
)


def _forecast(pipe_dir: Path, root: Path, source: Path, options: list, capfd) -> tuple[int, str]:
    """Run `prediff forecast` on `source` into root/out/fc.nc and check the property."""
    (root / "out").mkdir()
    before = _snapshot(root)
    capfd.readouterr()
    argv = ["forecast", "--pipeline", pipe_dir, "--input", source, "--out", root / "out" / "fc.nc"]
    argv += ["--members", "1", "--steps", "1", "--no-plots", "--no-pysteps", "--no-progress", *options]
    with _record_warnings() as caught:
        status = run_cli(argv)
    err = _check_property("forecast", status, capfd, caught, root, before, root / "out")
    if status == 0:
        with xr.open_dataset(root / "out" / "fc.nc") as written:
            assert np.isfinite(written["forecast"].values).any()
    return status, err


reader_options = st.lists(
    st.sampled_from([["--use-last-frames"], ["--clip"], ["--variable", "frames"], ["--interval-minutes", "10"]]),
    max_size=2,
).map(lambda groups: [option for group in groups for option in group])


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No progress bars on stderr (the trainers have no option for it) and no network."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PREDIFF_TRACEBACK", raising=False)


@_with_seed
@FUZZ
@given(array=context_arrays(), damage=damages, options=reader_options)
def test_npy_contexts(pipe_dir, capfd, array, damage, options):
    with _workdir() as root:
        source = root / "ctx.npy"
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=array.dtype.hasobject)
        source.write_bytes(buffer.getvalue())
        _damage(source, damage)
        _forecast(pipe_dir, root, source, options, capfd)


H5_DTYPES = NUMERIC_DTYPES + ["<c8", "|S2"]


@_with_seed
@FUZZ
@given(
    array=context_arrays(H5_DTYPES),
    key=names,
    others=st.lists(st.tuples(names, context_arrays(NUMERIC_DTYPES)), max_size=2),
    metadata=file_metadata,
    damage=damages,
    options=reader_options,
)
def test_hdf5_contexts(pipe_dir, capfd, array, key, others, metadata, damage, options):
    with _workdir() as root:
        source = root / "ctx.h5"
        with h5py.File(source, "w") as f:
            for name, data in [(key, array), *others]:
                if name.strip("/") and name not in f:
                    with contextlib.suppress(ValueError, TypeError):  # names h5py cannot make: left out
                        f.create_dataset(name, data=data)
            if metadata is not None:
                from prediff.data.io import METADATA_ATTR

                f.attrs[METADATA_ATTR] = np.void(metadata) if isinstance(metadata, bytes) and metadata else metadata
        _damage(source, damage)
        _forecast(pipe_dir, root, source, options, capfd)


ZARR_DTYPES = NUMERIC_DTYPES + ["<c8"]


@_with_seed
@FUZZ
@given(
    array=context_arrays(ZARR_DTYPES),
    layout=st.sampled_from(["array", "group", "xarray"]),
    zarr_format=st.sampled_from([2, 3]),
    key=names,
    dims=st.lists(st.sampled_from(DIM_NAMES), min_size=5, max_size=5, unique=True),
    metadata=file_metadata,
    damaged=st.tuples(st.integers(0, 50), damages),
    options=reader_options,
)
def test_zarr_contexts(pipe_dir, capfd, array, layout, zarr_format, key, dims, metadata, damaged, options):
    with _workdir() as root:
        source = root / "ctx.zarr"
        key = key.replace("/", "_").strip(".") or "frames"
        if layout == "xarray" and array.ndim > 5:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zarr's warnings about what it writes are not the reader's
                if layout == "xarray":
                    variable = xr.DataArray(array, dims=dims[: array.ndim])
                    variable.to_dataset(name=key).to_zarr(source, zarr_format=zarr_format, mode="w")
                elif layout == "group":
                    group = zarr.open_group(str(source), mode="w", zarr_format=zarr_format)
                    group.create_array(key, shape=array.shape, dtype=array.dtype)[...] = array
                    if metadata is not None and not isinstance(metadata, bytes):
                        from prediff.data.io import METADATA_ATTR

                        group.attrs[METADATA_ATTR] = metadata
                else:
                    plain = zarr.create_array(
                        str(source), shape=array.shape, dtype=array.dtype, zarr_format=zarr_format
                    )
                    plain[...] = array
        except (ValueError, TypeError, KeyError, NotImplementedError):
            return  # a name or dtype zarr refuses to write: nothing to read
        files = sorted(p for p in source.rglob("*") if p.is_file())
        index, damage = damaged
        if files:
            _damage(files[index % len(files)], damage)
        _forecast(pipe_dir, root, source, options, capfd)


@st.composite
def netcdf_datasets(draw):
    """An xarray Dataset as a netCDF file would hold it: a variable with named dimensions, maybe a time
    coordinate (datetimes at a drawn step, maybe irregular) and attributes."""
    array = draw(context_arrays(NUMERIC_DTYPES))
    if array.ndim > 5:
        array = array.reshape(array.shape[:4] + (int(np.prod(array.shape[4:])),))
    dims = draw(st.lists(st.sampled_from(DIM_NAMES), min_size=array.ndim, max_size=array.ndim, unique=True))
    coords = {}
    for axis, dim in enumerate(dims):
        if dim in ("time", "t", "frame") and draw(st.booleans()):
            steps = draw(st.lists(st.integers(-30, 30), min_size=array.shape[axis], max_size=array.shape[axis]))
            coords[dim] = np.datetime64("2024-05-01T12:00") + np.cumsum(steps).astype("timedelta64[m]")
        elif draw(st.booleans()):
            coords[dim] = np.arange(array.shape[axis], dtype=np.float64) * draw(st.sampled_from([1.0, -1.0, 0.0]))
    attrs = draw(st.dictionaries(st.sampled_from(["units", "long_name"]), st.text(max_size=6) | st.integers()))
    name = draw(names).replace("/", "_") or "frames"
    return xr.Dataset({name: xr.DataArray(array, dims=dims, coords=coords, attrs=attrs)})


@_with_seed
@FUZZ
@given(
    dataset=netcdf_datasets(),
    damage=damages,
    options=reader_options,
    dims=st.none() | st.lists(st.sampled_from(DIM_NAMES), min_size=3, max_size=5, unique=True),
)
def test_netcdf_contexts(pipe_dir, capfd, dataset, damage, options, dims):
    with _workdir() as root:
        source = root / "ctx.nc"
        try:
            dataset.to_netcdf(source, engine="netcdf4")
        except (ValueError, TypeError, RuntimeError):
            return  # a dataset netCDF cannot hold (a name it refuses): nothing to read
        _damage(source, damage)
        _forecast(pipe_dir, root, source, options + (["--dims", ",".join(dims)] if dims else []), capfd)


# --------------------------------------------------------------------------------------------- configurations

#: Options given with every random configuration, which replace what it says: whatever else it holds, a run
#: that starts trains one step of the tiny autoencoder on 4 small sequences (an empty file would otherwise train
#: the official one for an epoch of 512 sequences).
CHEAP_OPTIONS = [
    "--max_train_steps", "1", "--data.num_sequences", "4", "--data.height", "32", "--data.width", "32",
    "--model.preset", "prediff-tiny",
]  # fmt: skip
#: The configuration that random ones start from: it trains in seconds.
CHEAP = {
    "output_dir": "out",
    "data": {"dataset": "storms", "seq_len": 2},
    "model": {"preset": "prediff-tiny"},
    "train_batch_size": 1,
    "num_validation_batches": 1,
    "num_validation_samples": 1,
    "disc_num_layers": 1,
    "disc_channels": 4,
    "report_to": "none",
}

small_ints = st.integers(-2, 6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    small_ints,
    st.sampled_from([2**63, -(2**63) - 1, 10**30]),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["latest", "adam", "cosine", "no", "bf16", "storms", "file", "prediff-tiny", ".", "out"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)
#: Keys of the configuration that get random values: every size stays small, those of `CHEAP_OPTIONS` are set
#: anyway, `compile` (minutes of compilation) and `data.num_workers` (worker processes) are left out, and
#: `output_dir` stays in the working folder.
TOP_KEYS = [
    "seed", "init_weights", "train_batch_size", "num_train_epochs", "gradient_accumulation_steps",
    "learning_rate", "scale_lr", "lr_scheduler", "lr_warmup_steps", "lr_num_cycles", "lr_power", "optimizer",
    "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "mixed_precision",
    "gradient_checkpointing", "attention_backend", "checkpointing_steps", "checkpoints_total_limit",
    "resume_from_checkpoint", "overwrite", "use_ema", "ema_decay", "validation_steps", "num_validation_batches",
    "num_validation_samples", "report_to", "logging_dir", "push_to_hub", "hub_model_id", "kl_weight", "disc_start",
    "disc_weight", "disc_factor", "disc_num_layers", "disc_channels", "disc_learning_rate", "temporal_decoder",
    "no_such_key",
]  # fmt: skip
DATA_KEYS = [
    "dataset", "path", "context_length", "target_length", "seq_len", "stride", "seed", "key", "value_range",
    "value_transform", "val_fraction", "split_seed", "augment", "cache_in_memory", "no_such_key",
]  # fmt: skip
MODEL_KEYS = ["block_out_channels", "latent_channels", "layers_per_block", "in_channels", "no_such_key"]
output_dirs = st.sampled_from(["out", "out/run", "runs/ü b", "", ".", "config.yaml", "out/../out"])


@st.composite
def config_documents(draw):
    """The cheap configuration with a few keys replaced by random values (of any type, sizes small), maybe
    unknown keys or sections of the wrong kind, as a mapping."""
    document = json.loads(json.dumps(CHEAP))
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=3, unique=True)):
        document[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(DATA_KEYS), max_size=2, unique=True)):
        document["data"][key] = draw(values)
    for key in draw(st.lists(st.sampled_from(MODEL_KEYS), max_size=1, unique=True)):
        document["model"][key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        document[draw(st.sampled_from(["data", "model"]))] = draw(scalars)
    document["output_dir"] = draw(output_dirs)
    return document


def _yaml_text(document) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


#: What a configuration file may hold: the YAML of a document, cut short or with a few characters changed, a
#: document of another kind, YAML features (aliases, tags, several documents), bytes that are no UTF-8.
config_texts = st.one_of(
    config_documents().map(_yaml_text),
    config_documents()
    .map(_yaml_text)
    .flatmap(
        lambda text: st.tuples(st.integers(0, len(text)), st.text(max_size=3)).map(
            lambda cut: (text[: cut[0]] + cut[1] + text[cut[0] :]).encode()
        )
    ),
    config_documents().map(_yaml_text).flatmap(lambda text: st.integers(0, len(text)).map(lambda n: text[:n])),
    values.map(_yaml_text),
    st.sampled_from(
        [
            "a: &x [*x]\n",
            "!!python/object/apply:os.system ['true']\n",
            "--- {}\n--- {}\n",
            "output_dir: out\n\tseed: 1\n",
            "data: !!binary aGVsbG8=\n",
            "max_train_steps: 1e400\n",
            "learning_rate: .nan\n",
            "? [1, 2]\n: 3\n",
            "1: 2\n",
        ]
    ),
    st.binary(max_size=32),
)


@_with_seed
@FUZZ
@given(text=config_texts)
def test_random_configs(capfd, text):
    with _workdir() as root:
        source = root / "config.yaml"
        (source.write_bytes if isinstance(text, bytes) else source.write_text)(text)
        try:
            output_dir = load_config("vae", source, parse_override_args(CHEAP_OPTIONS)).output_dir
        except Exception:  # refused before anything is written: any folder will do
            output_dir = "outputs/run"
        before = _snapshot(root)
        capfd.readouterr()
        with _record_warnings() as caught:
            status = run_cli(["train", "vae", "--config", source, *CHEAP_OPTIONS])
        # Where a run may write: its output_dir, which may be outside nothing but the working folder.
        allowed = (root / output_dir).resolve()
        if allowed != root and root not in allowed.parents:
            allowed = root / "outputs" / "run"
        _check_property("train", status, capfd, caught, root, before, allowed)
        if status == 0:
            assert (allowed / "config.json").is_file() and (allowed / "diffusion_pytorch_model.safetensors").is_file()
