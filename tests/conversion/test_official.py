"""Official checkpoints: every listed entry is used, every entry of ours filled, mismatches reported."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from prediff.conversion import build_official_model, load_official_checkpoint
from tests.conftest import official_listing, random_official_state_dict


def official_state_dict(section: str, kind: str) -> dict[str, torch.Tensor]:
    """Random values of the listed shapes; index buffers as the official code computes them."""
    state_dict = random_official_state_dict(section)
    buffers = {k for k, (_, entry_kind) in official_listing(section).items() if entry_kind == "buffer"}
    if buffers:
        reference = build_official_model(kind).state_dict()
        for key in buffers:
            state_dict[key] = reference[key.replace("query", "to_q")].clone()
    return state_dict


@pytest.mark.parametrize(
    "section,kind",
    [
        ("unet", "prediff-sevirlr-unet"),
        ("alignment", "prediff-sevirlr-alignment"),
        ("vae_released", "prediff-sevirlr-vae"),
    ],
)
def test_every_official_entry_is_loaded(section, kind):
    state_dict = official_state_dict(section, kind)
    model = load_official_checkpoint(state_dict, kind)
    loaded = model.state_dict()
    assert len(loaded) == len(state_dict)
    if kind == "prediff-sevirlr-vae":
        assert type(model).__name__ == "AutoencoderKL"
        torch.testing.assert_close(
            loaded["encoder.mid_block.attentions.0.to_q.weight"],
            state_dict["encoder.mid_block.attentions.0.query.weight"],
        )
        state_dict = {k.replace("query", "to_q").replace("key.", "to_k.").replace("value", "to_v")
                      .replace("proj_attn", "to_out.0"): v for k, v in state_dict.items()}  # fmt: skip
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


def test_earthformer_checkpoint_is_loaded():
    state_dict = official_state_dict("earthformer", "earthformer-sevir")
    model = load_official_checkpoint(state_dict, "earthformer-sevir")
    assert all(torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype)) for k, v in state_dict.items())


def test_mismatches_are_listed():
    state_dict = official_state_dict("alignment", "prediff-sevirlr-alignment")
    state_dict.pop("out.2.c_proj.bias")
    state_dict["out.3.extra"] = torch.zeros(1)
    state_dict["time_embed.layer.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as error:
        load_official_checkpoint(state_dict, "prediff-sevirlr-alignment")
    message = str(error.value)
    assert "out.3.extra" in message and "out.2.c_proj.bias" in message
    assert "time_embed.layer.0.weight: checkpoint (3, 3) vs model (512, 128)" in message
    state_dict = official_state_dict("alignment", "prediff-sevirlr-alignment")
    index_key = "down_self_blocks.0.0.attn_l.0.relative_position_index"
    state_dict[index_key] = state_dict[index_key].flip(0)
    with pytest.raises(ValueError, match="relative position index differs"):
        load_official_checkpoint(state_dict, "prediff-sevirlr-alignment")
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        load_official_checkpoint(state_dict, "prediff-sevir-unet")


def test_files_pt_lightning_and_safetensors(tmp_path):
    state_dict = official_state_dict("alignment", "prediff-sevirlr-alignment")
    torch.save(state_dict, tmp_path / "align.pt")
    torch.save({"state_dict": {f"torch_nn_module.{k}": v for k, v in state_dict.items()}, "epoch": 3},
               tmp_path / "align.ckpt")  # fmt: skip
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "align.safetensors")
    key = "out.2.c_proj.weight"
    for path, prefix in (("align.pt", ""), ("align.ckpt", "torch_nn_module."), ("align.safetensors", "")):
        model = load_official_checkpoint(tmp_path / path, "prediff-sevirlr-alignment", prefix=prefix)
        assert torch.equal(model.state_dict()[key], state_dict[key])
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_official_checkpoint(tmp_path / "missing.pt", "prediff-sevirlr-alignment")
    with pytest.raises(ValueError, match="no entry of the checkpoint starts with prefix"):
        load_official_checkpoint(tmp_path / "align.pt", "prediff-sevirlr-alignment", prefix="model.")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_pickles_are_refused_by_default(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload()}, f)
    with pytest.raises(ValueError, match="weights-only"):
        load_official_checkpoint(path, "prediff-sevirlr-alignment")
