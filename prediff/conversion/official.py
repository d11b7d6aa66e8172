"""Loading the released Earthformer / PreDiff checkpoints into prediff's models.

Our networks use the official module names, so the UNet, alignment and Earthformer weights map one to one; the
released VAE predates Diffusers' attention renaming (``query/key/value/proj_attn`` ->
``to_q/to_k/to_v/to_out.0``). Every official entry must be used and every entry of ours filled: anything else is
reported, entry by entry, instead of being loaded half-way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch

OFFICIAL_KINDS = ("prediff-sevirlr-unet", "prediff-sevirlr-alignment", "prediff-sevirlr-vae", "earthformer-sevir")

_VAE_ATTENTION_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_VAE_ATTENTION_KEY = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)(\.(?:weight|bias))$")


def build_official_model(kind: str) -> torch.nn.Module:
    """The published configuration of ``kind``, randomly initialised (see :data:`OFFICIAL_KINDS`)."""
    if kind not in OFFICIAL_KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {OFFICIAL_KINDS}")
    if kind == "prediff-sevirlr-unet":
        from ..models.earthformer_unet import EarthformerUNetModel

        return EarthformerUNetModel.from_preset("prediff-sevirlr")
    if kind == "prediff-sevirlr-alignment":
        from ..models.alignment import KnowledgeAlignmentModel

        return KnowledgeAlignmentModel.from_preset("prediff-sevirlr-avg-intensity")
    if kind == "prediff-sevirlr-vae":
        from ..models.autoencoder import autoencoder_from_preset

        return autoencoder_from_preset("prediff-sevirlr")
    from ..models.earthformer import EarthformerModel

    return EarthformerModel.from_preset("earthformer-sevir")


def _rename_vae_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        match = _VAE_ATTENTION_KEY.match(key)
        if match:
            key = f"{match.group(1)}{_VAE_ATTENTION_RENAMES[match.group(2)]}{match.group(3)}"
        renamed[key] = value
    return renamed


_CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "prediff-sevirlr-vae": _rename_vae_keys,
}


def read_state_dict(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.ckpt``/``.bin`` file read with ``weights_only=True``.

    A Lightning checkpoint (a dict with ``"state_dict"``) gives its ``state_dict``. ``allow_pickle=True`` reads
    arbitrary pickles and can execute code: only for files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        raise ValueError(
            f"could not read {path} as a weights-only PyTorch checkpoint ({error}); if you trust the file, pass "
            "allow_pickle=True"
        ) from error
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(loaded)


def load_official_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    kind: str,
    prefix: str = "",
    allow_pickle: bool = False,
) -> torch.nn.Module:
    """Build the published model ``kind`` and load an official checkpoint into it.

    Args:
        path_or_state_dict: a ``.pt``/``.ckpt``/``.safetensors`` file or a state dict already in memory.
        kind: one of ``"prediff-sevirlr-unet"``, ``"prediff-sevirlr-alignment"``, ``"prediff-sevirlr-vae"``
            (returned as Diffusers' ``AutoencoderKL``), ``"earthformer-sevir"``.
        prefix: only entries starting with it are used, without it (e.g. ``"torch_nn_module."`` for a full
            PreDiff Lightning checkpoint).
        allow_pickle: read pickled (non weights-only) files; this can execute code.

    Returns:
        The model in eval mode with every weight loaded.

    Raises:
        ValueError: listing the official entries not used, our entries not filled, and shape mismatches.
    """
    if kind not in OFFICIAL_KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {OFFICIAL_KINDS}")
    if isinstance(path_or_state_dict, Mapping):
        state_dict = dict(path_or_state_dict)
    else:
        state_dict = read_state_dict(path_or_state_dict, allow_pickle=allow_pickle)
    if prefix:
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not state_dict:
            raise ValueError(f"no entry of the checkpoint starts with prefix {prefix!r}")
    state_dict = _CONVERTERS.get(kind, dict)(state_dict)
    model = build_official_model(kind)
    expected = model.state_dict()
    unused = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state_dict) & set(expected)
        if state_dict[k].shape != expected[k].shape
    )
    # The index buffers follow from the cuboid configuration; a checkpoint whose indices differ was made with
    # another configuration, and its relative-position tables would be read in the wrong order.
    mismatched += sorted(
        f"{k}: relative position index differs from this configuration's"
        for k in set(state_dict) & set(expected)
        if k.endswith("relative_position_index")
        and state_dict[k].shape == expected[k].shape
        and not torch.equal(state_dict[k].to(expected[k].dtype), expected[k])
    )
    if unused or missing or mismatched:
        problems = []
        sections = (
            ("unused checkpoint entries", unused),
            ("entries of the model not in the checkpoint", missing),
            ("mismatches", mismatched),
        )
        for title, entries in sections:
            if entries:
                problems.append(
                    f"{len(entries)} {title}: " + ", ".join(entries[:20]) + (" ..." if len(entries) > 20 else "")
                )
        raise ValueError(f"checkpoint does not match {kind}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
