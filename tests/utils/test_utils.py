"""The generic helpers of prediff.utils: physical scaling, argument and array checks, atomic output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prediff.knowledge.defaults import DEFAULT_CONTROL_METHOD, control_method
from prediff.utils.checks import check_array, check_index, check_int, check_seed, check_value_range
from prediff.utils.files import atomic_output, move_aside
from prediff.utils.units import to_physical, to_unit


def test_scaling_keeps_type_and_precision_and_round_trips():
    value_range = (np.float64(-20.0), np.float64(40.0))  # numpy bounds must not promote a float32 array
    unit = np.linspace(0.0, 1.0, 7, dtype=np.float32)
    physical = to_physical(unit, value_range)
    assert physical.dtype == np.float32
    np.testing.assert_array_equal(physical, unit * np.float32(60.0) + np.float32(-20.0))
    np.testing.assert_allclose(to_unit(physical, value_range), unit, atol=1e-7)
    tensor = torch.from_numpy(unit)
    assert torch.equal(to_physical(tensor, (0.0, 255.0)), tensor * 255.0)
    assert to_unit(127.5, (0.0, 255.0)) == 0.5


def test_integer_checks_share_their_messages():
    assert check_int("steps", np.int64(3)) == 3
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        check_int("steps", 0)
    with pytest.raises(ValueError, match="steps must be a positive integer, got True"):
        check_int("steps", True)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        check_seed(-1)
    with pytest.raises(ValueError, match="frames must be an integer >= 2, got 1.0"):
        check_int("frames", 1.0, minimum=2)
    assert check_index(-1, 4, "sequences") == 3
    with pytest.raises(IndexError, match="index 4 out of range for 4 sequences"):
        check_index(4, 4, "sequences")
    with pytest.raises(ValueError, match=r"value_range must be finite with low < high, got \(1, 1\)"):
        check_value_range((1, 1))
    with pytest.raises(ValueError, match="value_range must be a pair"):
        check_value_range("0-255")


def test_check_array_converts_and_names_the_argument():
    frames = np.zeros((1, 2, 4, 4, 1), dtype=np.uint8)
    tensor = check_array("context", frames, 5, to="tensor")
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
    assert isinstance(check_array("pred", torch.ones(2, 3, dtype=torch.bfloat16), to="numpy"), np.ndarray)
    with pytest.raises(ValueError, match=r"context must have shape \(B, T\) = \(\?, 3\), got shape \(1, 2\)"):
        check_array("context", np.zeros((1, 2)), 2, "shape (B, T)", sizes=(None, 3))
    with pytest.raises(ValueError, match="pred must have 5 dimensions, got shape"):
        check_array("pred", np.zeros((1, 2)), 5)
    with pytest.raises(ValueError, match="pred must hold real numbers, got dtype bool"):
        check_array("pred", np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="pred contains NaN or infinite values"):
        check_array("pred", torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="pred must be a numpy array or a torch tensor, got list"):
        check_array("pred", [1.0])
    assert check_array("picture", np.array([np.nan, True]), real=False, finite=False).shape == (2,)


def test_an_unchosen_control_method_is_the_default():
    assert control_method(None) == DEFAULT_CONTROL_METHOD == "analytic"
    assert control_method("learned") == "learned"


def test_atomic_output_replaces_a_folder_and_can_refuse_a_missing_parent(tmp_path):
    target = tmp_path / "store.zarr"
    for version in ("old", "new"):
        with atomic_output(target, overwrite=True, directory=True) as tmp:
            (tmp / "chunk").write_text(version)
    assert (target / "chunk").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]  # nothing aside or temporary is left
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_output(target):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_output(tmp_path / "missing" / "picture.png", make_parents=False):
            pass
    assert not (tmp_path / "missing").exists()


def test_move_aside_moves_only_what_exists(tmp_path):
    (tmp_path / "a").write_text("a")
    aside = move_aside([tmp_path / "a", tmp_path / "b"], tmp_path, ".x.")
    assert aside.name.startswith(".x.") and aside.name.endswith(".old")
    assert [p.name for p in aside.iterdir()] == ["a"] and not (tmp_path / "a").exists()
