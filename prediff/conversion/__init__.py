"""Loading the official Earthformer / PreDiff checkpoints."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .official import OFFICIAL_KINDS, build_official_model, load_official_checkpoint, read_state_dict

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".official": ["OFFICIAL_KINDS", "build_official_model", "load_official_checkpoint", "read_state_dict"],
    },
)

__all__ = ["OFFICIAL_KINDS", "build_official_model", "load_official_checkpoint", "read_state_dict"]
