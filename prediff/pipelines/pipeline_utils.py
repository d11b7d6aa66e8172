"""What the prediff pipelines share: physical-unit scaling, context checks, safe loading and model cards."""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from huggingface_hub import ModelCard, ModelCardData, create_repo, snapshot_download

from ..data.utils import atomic_output, give_plain_permissions

__all__ = ["ForecastPipelineMixin", "check_value_range", "count_parameters", "to_context_tensor"]


def check_value_range(value_range: Any) -> tuple[float, float]:
    """`(lo, hi)` with finite `lo < hi`, else `ValueError`."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be two numbers (lo, hi), got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def to_context_tensor(context: Any, expected: tuple[int | None, ...], name: str = "context") -> torch.Tensor:
    """Check a `(B, T_in, H, W, C)` array or tensor (None in `expected` = any size) and return it as a
    tensor."""
    if isinstance(context, np.ndarray):
        if not (np.issubdtype(context.dtype, np.floating) or np.issubdtype(context.dtype, np.integer)):
            raise ValueError(f"{name} must hold numbers, got dtype {context.dtype}")
        context = torch.from_numpy(np.ascontiguousarray(context))
    if not isinstance(context, torch.Tensor):
        raise ValueError(
            f"{name} must be a numpy array or torch.Tensor of shape (B, T_in, H, W, C), got {type(context)}"
        )
    shape = tuple(context.shape)
    want = "(" + ", ".join("?" if v is None else str(v) for v in expected) + ")"
    if context.ndim != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        raise ValueError(f"{name} must have shape (B, T_in, H, W, C) = {want}, got {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {shape}")
    if context.dtype == torch.bool or context.is_complex():
        raise ValueError(f"{name} must be real numbers, got dtype {context.dtype}")
    if not context.is_floating_point():
        context = context.float()
    if not torch.isfinite(context).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return context


class ForecastPipelineMixin:
    """Loading restricted to safetensors unless asked otherwise, and a model card written with every save."""

    _card_tags: tuple[str, ...] = ("prediff", "weather-forecasting", "nowcasting")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        allow_pickle: bool = False,
        torch_dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        variant: str | None = None,
        **kwargs: Any,
    ):
        r"""Load a saved pipeline from a local folder or a Hub repository id (cached copies work offline,
        e.g. with `HF_HUB_OFFLINE=1`).

        Weights load from safetensors only: pickle-based `.bin` files can execute code when loaded, so they
        are refused unless `allow_pickle=True` is given explicitly; even then safetensors are preferred and a
        component falls back to `.bin` only where it has no safetensors file. No code from the repository is
        ever run: every component must be a class of prediff or Diffusers. Keyword arguments named like a
        component (`unet=...`) replace that component; others are passed to the pipeline's constructor.
        """
        if not allow_pickle and kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False loads pickle files; pass allow_pickle=True to allow that")
        kwargs.pop("use_safetensors", None)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    str(pretrained_model_name_or_path),
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=bool(local_files_only),
                )
            )
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"no model_index.json in {folder}: not a saved pipeline")
        index = json.loads(index_path.read_text())
        if index.get("_class_name") not in (None, cls.__name__):
            raise ValueError(f"{folder} holds a {index['_class_name']}, not a {cls.__name__}")
        init = {}
        for name, value in index.items():
            if name.startswith("_"):
                continue
            if name in kwargs:
                init[name] = kwargs.pop(name)
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str | None) for v in value):
                init[name] = _load_component(folder, name, value, allow_pickle, torch_dtype, variant)
            else:
                init[name] = value
        init.update(kwargs)
        pipeline = cls(**init)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline

    def model_card(self) -> ModelCard:
        """The model card: inputs, units and scaling, shapes, components and training data."""
        data = ModelCardData(library_name="prediff", tags=list(self._card_tags), pipeline_tag="other")
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{self._card_text()}")

    def _card_text(self) -> str:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Save every component (safetensors by default), `model_index.json` and a `README.md` model card.

        With `push_to_hub=True` the folder is uploaded afterwards (`repo_id`, `token`, `private`,
        `commit_message`, `create_pr` as in Diffusers).
        """
        hub_kwargs = {
            k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message", "create_pr") if k in kwargs
        }
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        give_plain_permissions(save_directory)
        card = str(self.model_card())
        path = os.path.join(save_directory, "README.md")
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(card, encoding="utf-8")
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            self._push_folder(save_directory, repo_id, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> str:
        """Upload the pipeline (safetensors weights, configs and this pipeline's model card) to the Hub."""
        with tempfile.TemporaryDirectory() as tmpdir:
            self.save_pretrained(tmpdir, safe_serialization=safe_serialization, variant=variant)
            return self._push_folder(
                tmpdir,
                repo_id,
                commit_message=commit_message,
                private=private,
                token=token,
                create_pr=create_pr,
            )

    def _push_folder(
        self,
        folder: str | os.PathLike,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        return self._upload_folder(folder, repo_id, token=token, commit_message=commit_message, create_pr=create_pr)


def count_parameters(module: torch.nn.Module | None) -> str:
    return "-" if module is None else f"{sum(p.numel() for p in module.parameters()):,}"


# Components are looked up only in these packages, so loading never imports code named by a repository.
_COMPONENT_LIBRARIES = ("prediff", "diffusers")


def _load_component(
    folder: Path,
    name: str,
    entry: list,
    allow_pickle: bool,
    torch_dtype: torch.dtype | None,
    variant: str | None,
) -> Any:
    """Load the component `name` recorded as `[library, class_name]` in `model_index.json`."""
    library, class_name = entry
    if library is None or class_name is None:
        return None
    if library.split(".")[0] not in _COMPONENT_LIBRARIES:
        raise ValueError(
            f"component {name!r} is a {library}.{class_name}; only classes of {_COMPONENT_LIBRARIES} can be loaded"
        )
    module = importlib.import_module(library)
    component_cls = getattr(module, class_name, None)
    if component_cls is None:
        component_cls = getattr(importlib.import_module(library.split(".")[0]), class_name, None)
    if not isinstance(component_cls, type) or not issubclass(component_cls, ModelMixin | SchedulerMixin):
        raise ValueError(f"component {name!r}: {library}.{class_name} is not a Diffusers model or scheduler")
    if issubclass(component_cls, SchedulerMixin):
        return component_cls.from_pretrained(folder, subfolder=name)
    # Diffusers reads use_safetensors=False as ".bin only"; None is its "safetensors, else .bin" fallback.
    model = component_cls.from_pretrained(
        folder,
        subfolder=name,
        use_safetensors=None if allow_pickle else True,
        torch_dtype=torch_dtype,
        variant=variant,
    )
    return model.eval()
