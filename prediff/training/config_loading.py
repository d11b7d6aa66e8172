"""Reading training configurations: YAML files with ``--key value`` overrides, checked before any training starts.

The schema, a dataclass per component, is in [`~prediff.training.config`]; this module turns text into it.
Overrides address keys by name, nested ones with a dot: `--max_train_steps 4`, `--data.num_sequences 8`,
`--model.base_units 32`. Values are read as YAML (`4`, `1e-4`, `true`, `[1, 1]`, `null`).

Unknown keys, wrong types and impossible values raise `ValueError` naming the key, the expected and the
received value (an unknown key also names the closest known one); a missing data path raises
`FileNotFoundError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from .config import CONFIG_CLASSES, TrainingConfig

__all__ = [
    "MAX_YAML_VALUES",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "parse_override_args",
    "parse_value",
    "save_config",
    "unknown_key_error",
]


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            'reading training configurations needs PyYAML; install it with: pip install "prediff[train]"'
        ) from error
    return yaml


#: The most values (scalars, lists and mappings) a YAML text may stand for once its aliases (`*name`) are
#: expanded: a few hundred bytes of nested aliases (a "billion laughs") stand for billions, which every copy of
#: the configuration (one per checkpoint) would write out in full.
MAX_YAML_VALUES = 10_000


def _loader(source: str) -> Any:
    """The YAML loader of configurations; `source` names the text in errors (a file, an option)."""
    yaml = _yaml()

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants a dot and an exponent sign) and refuses
        aliases that expand the text beyond `MAX_YAML_VALUES` values or refer to themselves."""

        def compose_document(self) -> Any:
            self.alias_events: list[tuple[Any, Any]] = []
            node = super().compose_document()
            _check_alias_expansion(node, self.alias_events, source)
            return node

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event() if self.check_event(yaml.AliasEvent) else None
            node = super().compose_node(parent, index)
            if event is not None:
                self.alias_events.append((event, node))
            return node

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def _check_alias_expansion(root: Any, alias_events: list[tuple[Any, Any]], source: str) -> None:
    """Raise `ValueError` when the YAML node graph `root` expands to more than `MAX_YAML_VALUES` values or
    holds an alias inside the node it names, naming `source` and the line of the alias."""
    if not alias_events:
        return
    yaml = _yaml()
    sizes: dict[int, int] = {}  # expanded values per node; -1 while the node is being counted

    def expanded(node: Any) -> int:
        if sizes.get(id(node)) == -1:
            event = next(event for event, target in alias_events if target is node)
            raise ValueError(
                f"{source}, line {event.start_mark.line + 1}: the YAML alias *{event.anchor} refers to a value "
                "that contains it (an endless value)"
            )
        if id(node) not in sizes:
            sizes[id(node)] = -1
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = 1 + sum(expanded(child) for child in children)
        return sizes[id(node)]

    total = expanded(root)
    if total > MAX_YAML_VALUES:
        event, node = max(alias_events, key=lambda pair: sizes[id(pair[1])])
        raise ValueError(
            f"{source}: YAML aliases expand it to {total:,} values, more than the {MAX_YAML_VALUES:,} a "
            f"configuration may hold (the alias *{event.anchor} on line {event.start_mark.line + 1} alone stands "
            f"for {sizes[id(node)]:,}); write the values out instead of nesting aliases"
        )


def _yaml_problem(error: Exception) -> str:
    """A YAML parser error in one line: what is wrong and where (`line L, column C`), without the text of the
    `<unicode string>` that PyYAML names as its source."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    context = getattr(error, "context", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{context + ', ' if context else ''}{problem}{where}"


def parse_value(text: str, source: str = "an override value") -> Any:
    """Read one override value as YAML (`4` -> 4, `1e-4` -> 0.0001, `true`, `[1, 1]`, `null`, plain text);
    `source` names it in errors."""
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_loader(source))
    except yaml.YAMLError:
        return text


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (int, float, bool, str, Optional, list, dict, DataConfig)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{name} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{name} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, prefix=f"{name}.")
    raise TypeError(f"unsupported configuration field type {annotation!r} for {name}")


def unknown_key_error(prefix: str, key: str, known: list[str], owner: str | None = None) -> ValueError:
    """The error for configuration key `prefix + key` (e.g. "data." + "num_sequence"), naming the closest of
    the `known` keys of that section (and the class `owner` that defines them, if any)."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    where = f" for {owner}" if owner else ""
    return ValueError(
        f"unknown configuration key {prefix + key!r}{where}{hint} (known keys: {', '.join(sorted(known))})"
    )


def _build(cls: type, values: Any, prefix: str = "") -> Any:
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'the configuration'} must be a mapping, got {values!r}")
    hints = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise unknown_key_error(prefix, str(key), known)
        kwargs[key] = _coerce(f"{prefix}{key}", value, hints[key])
    return cls(**kwargs)


def config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """The configuration as plain YAML-able data."""
    return dataclasses.asdict(config)


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`data.num_sequences`) of a nested mapping; returns a new mapping."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ValueError(f"cannot set {dotted!r}: {part!r} is not a section")
            else:
                child = dict(child)
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def parse_override_args(args: list[str]) -> dict[str, Any]:
    """`["--max_train_steps", "4", "--data.seed=3"]` -> `{"max_train_steps": 4, "data.seed": 3}`.

    A flag followed by another flag (or nothing) means `true`.
    """
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"expected a --key value override, got {arg!r} (in {' '.join(args)!r})")
        key = arg[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            text = args[i + 1]
            i += 2
        else:
            text = "true"
            i += 1
        overrides[key.replace("-", "_") if not key.startswith("model.") else key] = parse_value(text, f"--{key}")
    return overrides


def load_config(
    kind: str,
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainingConfig:
    """Read a YAML configuration for `kind` ("vae", "denoiser", "alignment", "earthformer"), apply overrides,
    check it.

    Args:
        kind: which training command.
        path: the YAML file (None: the defaults of the configuration class, i.e. the official recipe on
            synthetic storms).
        overrides: dotted keys -> values, e.g. from [`parse_override_args`].

    Returns:
        The validated configuration dataclass.
    """
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"kind must be one of {sorted(CONFIG_CLASSES)}, got {kind!r}")
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {str(path)!r} does not exist")
        yaml = _yaml()
        source = f"configuration file {str(path)!r}"
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader(source))
        except UnicodeDecodeError as error:
            raise ValueError(f"{source} is not UTF-8 text: {error}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{source} is not valid YAML: {_yaml_problem(error)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"configuration file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        values = loaded or {}
    values = apply_overrides(values, overrides or {})
    config = _build(CONFIG_CLASSES[kind], values)
    config.validate()
    return config


def save_config(config: TrainingConfig, path: str | os.PathLike) -> None:
    """Write the configuration as YAML, atomically (with the permissions of a plain `open`)."""
    from ..utils.files import atomic_output

    text = _yaml().safe_dump(config_to_dict(config), sort_keys=False)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
