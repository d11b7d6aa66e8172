"""Loading a saved forecast pipeline by folder, shipped name or Hub repository id.

[`load_forecast_pipeline`] is what `prediff forecast` and `prediff evaluate` call: a folder (or a Hub snapshot) is
checked component by component before anything is loaded, each component's class saying which files it needs
(see [`carries_weights`]; a clear error names what is missing), the name of a pipeline shipped with the package
(`prediff-storms-tiny`) finds its folder, and anything else is looked up on the Hub (cached copies work
offline). A folder holding only a saved `EarthformerModel` is wrapped in an `EarthformerPipeline`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_prediff import PreDiffPipeline

__all__ = ["REQUIRED_COMPONENTS", "carries_weights", "load_forecast_pipeline"]

#: Components a saved pipeline needs, by pipeline class (optional ones may be recorded as null).
REQUIRED_COMPONENTS = {
    "PreDiffPipeline": ("vae", "unet", "scheduler"),
    "EarthformerPipeline": ("model",),
}


def carries_weights(component_cls: type) -> bool:
    """Whether a saved component of class `component_cls` has a weights file next to its config.

    The class is asked, not its folder: a model declares `has_weights = False` when its state dict is empty
    (`MotionExtrapolator`, whose folder holds only `config.json`); any other Diffusers `ModelMixin` has weights;
    a scheduler (or anything that is not a model) has none.
    """
    from diffusers.models.modeling_utils import ModelMixin

    return bool(getattr(component_cls, "has_weights", issubclass(component_cls, ModelMixin)))


def _check_pipeline_folder(folder: Path) -> str:
    """The pipeline class recorded in `folder/model_index.json`, after checking every component is there.

    Each component's class is resolved from its recorded `[library, class name]` (never importing the recorded
    module, nothing is loaded), and the class says which files its subfolder must hold: its config
    (`config.json`, `scheduler_config.json`) and, if it carries weights, a safetensors file.

    Raises:
        FileNotFoundError: no `model_index.json`, or a component's config or weights are missing.
        ValueError: the index is unreadable, records another class, or a component is not a known class.
    """
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_prediff import PreDiffPipeline
    from .pipeline_utils import _component_class

    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"pipeline folder {str(folder)!r} has no model_index.json: not a saved PreDiffPipeline or "
            "EarthformerPipeline (save one with pipeline.save_pretrained(folder))"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {index_path}: {error}") from None
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if class_name not in REQUIRED_COMPONENTS:
        raise ValueError(
            f"{index_path} records _class_name={class_name!r}; expected one of {sorted(REQUIRED_COMPONENTS)}"
        )
    pipeline_cls = {cls.__name__: cls for cls in (PreDiffPipeline, EarthformerPipeline)}[class_name]
    # Only the pipeline's components are files; options shaped like [str, str] (e.g. units) are not.
    components, _ = pipeline_cls._get_signature_keys(pipeline_cls)
    missing = []
    for name in REQUIRED_COMPONENTS[class_name]:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            missing.append(f"{name} (not recorded in model_index.json)")
    for name in sorted(components):
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            continue  # absent or null: an optional component left out (a required one is reported above)
        component_cls = _component_class(name, entry[0], entry[1], index_path)
        sub = folder / name
        config = sub / component_cls.config_name
        if not config.is_file():
            missing.append(f"{name}/{config.name}")
        elif carries_weights(component_cls) and not any(sub.glob("*.safetensors")):
            pickled = " (only pickle .bin files, which are not loaded)" if any(sub.glob("*.bin")) else ""
            missing.append(f"{name}/*.safetensors (weights of {entry[1]}){pickled}")
    if missing:
        raise FileNotFoundError(f"pipeline folder {str(folder)!r} is incomplete: missing {', '.join(missing)}")
    return class_name


def load_forecast_pipeline(
    pipeline: str | os.PathLike,
    device: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> PreDiffPipeline | EarthformerPipeline:
    """Load a saved [`PreDiffPipeline`] or [`EarthformerPipeline`] from a folder, a Hub repository id (cached
    copies work offline) or the name of a pipeline shipped with the package (`prediff-storms-tiny`).

    A folder holding only a saved [`EarthformerModel`] (its `config.json`) is wrapped in an
    `EarthformerPipeline` with `value_range` (default 0-255).

    Args:
        pipeline: folder, repository id or shipped name.
        device: move the pipeline there (e.g. "cpu", "cuda").
        value_range: physical range of a bare `EarthformerModel` (ignored for saved pipelines).

    Raises:
        FileNotFoundError: nothing found there, or a component is missing from the folder.
        ValueError: the folder holds something else.
    """
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_prediff import PreDiffPipeline

    name = os.fspath(pipeline)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        shipped = _shipped_folder(name)
        if shipped is not None:
            folder = shipped
    if folder.is_dir():
        if not (folder / "model_index.json").is_file() and (folder / "config.json").is_file():
            loaded: Any = _bare_earthformer(folder, value_range)
        else:
            class_name = _check_pipeline_folder(folder)
            cls = PreDiffPipeline if class_name == "PreDiffPipeline" else EarthformerPipeline
            loaded = cls.from_pretrained(folder)
    else:
        if folder.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
            raise FileNotFoundError(f"pipeline {name!r} is not a folder holding a saved pipeline")
        loaded = _from_hub(name, PreDiffPipeline, EarthformerPipeline)
    if device is not None:
        loaded = loaded.to(device)
    return loaded


def _shipped_folder(name: str) -> Path | None:
    try:
        from ..pretrained import SHIPPED_PIPELINES, shipped_pipeline_path
    except ImportError:
        return None
    return shipped_pipeline_path(name) if name in SHIPPED_PIPELINES else None


def _bare_earthformer(folder: Path, value_range: tuple[float, float] | None) -> EarthformerPipeline:
    from ..models.earthformer import EarthformerModel
    from .pipeline_earthformer import EarthformerPipeline

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {folder / 'config.json'}: {error}") from None
    if config.get("_class_name") != "EarthformerModel":
        raise ValueError(
            f"{folder} holds a {config.get('_class_name')!r} model; expected a saved pipeline "
            "(model_index.json) or an EarthformerModel"
        )
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"EarthformerModel folder {str(folder)!r} has no safetensors weights")
    model = EarthformerModel.from_pretrained(folder, use_safetensors=True).eval()
    return EarthformerPipeline(model, value_range=value_range or (0.0, 255.0))


def _from_hub(repo_id: str, *classes: type) -> Any:
    from huggingface_hub import snapshot_download

    try:
        # The whole snapshot (from_pretrained would fetch it anyway); offline, the cached one.
        folder = Path(snapshot_download(repo_id))
    except Exception as error:  # the hub raises many kinds (offline, unknown repo, invalid id)
        raise FileNotFoundError(
            f"pipeline {repo_id!r} is neither a local folder nor a Hub repository that can be reached or is "
            f"cached ({type(error).__name__}: {error})"
        ) from None
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"Hub repository {repo_id!r} has no model_index.json: not a prediff pipeline")
    # A cached snapshot may hold only part of the repository: the same check as a local folder's.
    class_name = _check_pipeline_folder(folder)
    cls = next(cls for cls in classes if cls.__name__ == class_name)
    pipeline = cls.from_pretrained(folder)
    pipeline.register_to_config(_name_or_path=repo_id)
    return pipeline
