"""The constructor arguments of a trained network: its configuration's `model` section, optionally on top of a
published `preset`, merged with the shapes the data gives, with unknown arguments and contradictions refused."""

from __future__ import annotations

import inspect
from typing import Any

from .config_loading import unknown_key_error

__all__ = ["merge_model_kwargs"]


def merge_model_kwargs(
    cls: Any, kwargs: dict[str, Any], derived: dict[str, Any], data_description: str
) -> dict[str, Any]:
    """Merge the `model` section `kwargs` (optionally a `preset` among `cls.presets`) with the values `derived`
    from the data.

    Raises:
        ValueError: an unknown preset or constructor argument of `cls`, or a value that contradicts the data
            (`data_description` says what the data is).
    """
    kwargs = dict(kwargs)
    preset = kwargs.pop("preset", None)
    base: dict[str, Any] = {}
    if preset is not None:
        presets = getattr(cls, "presets", {})
        if preset not in presets:
            raise ValueError(f"unknown model.preset {preset!r} for {cls.__name__}; expected one of {sorted(presets)}")
        base = dict(presets[preset])
    params = inspect.signature(cls.__init__).parameters
    for key in kwargs:
        if key not in params or key == "self":
            known = ["preset", *(p for p in params if p not in ("self", "args", "kwargs"))]
            raise unknown_key_error("model.", key, known, owner=cls.__name__)
    merged = {**base, **kwargs}
    for key, value in derived.items():
        if key in merged and _as_tuple(merged[key]) != _as_tuple(value):
            raise ValueError(
                f"model.{key} = {_as_tuple(merged[key])} does not fit the data, which gives {key} = "
                f"{_as_tuple(value)} ({data_description})"
            )
        merged[key] = value
    return merged


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
