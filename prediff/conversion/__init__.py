"""Loading the official Earthformer / PreDiff checkpoints."""

from .official import OFFICIAL_KINDS, build_official_model, load_official_checkpoint, read_state_dict

__all__ = ["OFFICIAL_KINDS", "build_official_model", "load_official_checkpoint", "read_state_dict"]
