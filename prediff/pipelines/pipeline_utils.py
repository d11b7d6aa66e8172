"""What the prediff pipelines share: physical-unit scaling, context checks, safe loading and model cards."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData, create_repo

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
        cls, pretrained_model_name_or_path: str | os.PathLike, allow_pickle: bool = False, **kwargs
    ):
        r"""Load a saved pipeline from a local folder or a Hub repository id (cached copies work offline).

        Weights load from safetensors only: pickle-based `.bin` files can execute code when loaded, so they
        are refused unless `allow_pickle=True` is given explicitly. Other arguments are those of
        [`~diffusers.DiffusionPipeline.from_pretrained`] (`revision`, `cache_dir`, `torch_dtype`, ...).
        """
        if not allow_pickle:
            if kwargs.get("use_safetensors") is False:
                raise ValueError(
                    "use_safetensors=False loads pickle files; pass allow_pickle=True to allow that"
                )
            kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def model_card(self) -> ModelCard:
        """The model card: inputs, units and scaling, shapes, components and training data."""
        data = ModelCardData(library_name="prediff", tags=list(self._card_tags), pipeline_tag="other")
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{self._card_text()}")

    def _card_text(self) -> str:
        raise NotImplementedError

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """Save every component (safetensors by default), `model_index.json` and a `README.md` model card.

        With `push_to_hub=True` the folder is uploaded afterwards (`repo_id`, `token`, `private`,
        `commit_message`, `create_pr` as in Diffusers).
        """
        hub_kwargs = {
            k: kwargs.pop(k)
            for k in ("repo_id", "token", "private", "commit_message", "create_pr")
            if k in kwargs
        }
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        card = str(self.model_card())
        path = os.path.join(save_directory, "README.md")
        fd, tmp = tempfile.mkstemp(dir=save_directory, prefix=".README.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(card)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
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
        return self._upload_folder(
            folder, repo_id, token=token, commit_message=commit_message, create_pr=create_pr
        )


def count_parameters(module: torch.nn.Module | None) -> str:
    return "-" if module is None else f"{sum(p.numel() for p in module.parameters()):,}"
