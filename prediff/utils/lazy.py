"""Lazy package attributes (PEP 562): a package's public names are imported from their submodules on first use.

Importing torch, Diffusers and Accelerate takes seconds; a package ``__init__`` that imported its submodules
eagerly would make ``import prediff``, and so ``prediff --help``, pay for them before any of them is needed.
Instead each ``__init__`` names, for every public name, the submodule that defines it, and binds the
``__getattr__`` and ``__dir__`` built here; its real imports stand under ``if TYPE_CHECKING:`` for type
checkers and editors.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` that import each public name from its
    submodule when it is first used.

    Args:
        package: the ``__name__`` of the package being initialised (it must be in ``sys.modules``).
        exports: relative submodule name (``".storms"``) -> the public names it defines.

    Returns:
        ``(__getattr__, __dir__)``, to bind at the package's top level. ``__getattr__`` imports the submodule
        of a name, keeps the value as a plain attribute (later lookups do not come back) and returns it; for a
        name that is a submodule of the package it imports that submodule, as an eager ``__init__`` that
        imported it made it an attribute; any other name raises ``AttributeError``. ``__dir__`` lists the
        public names whether imported yet or not.

    A public name that is also the name of the submodule defining it (the function ``train_vae`` of
    ``train_vae.py``) keeps naming that value once the submodule is imported, as with an eager
    ``from .train_vae import train_vae``: the import system binds every newly imported submodule as an
    attribute of its package, which would otherwise replace the function with the module.
    """
    module = sys.modules[package]
    owners = {name: submodule for submodule, names in exports.items() for name in names}
    shadowed = frozenset(name for name, submodule in owners.items() if submodule == f".{name}")
    if shadowed:
        module.__class__ = _package_keeping(shadowed)

    def __getattr__(name: str) -> Any:
        if name in owners:
            value = getattr(importlib.import_module(owners[name], package), name)
        else:
            value = _import_submodule(package, name) if name.isidentifier() and not name.startswith("__") else None
            if value is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | owners.keys())

    return __getattr__, __dir__


def _import_submodule(package: str, name: str) -> types.ModuleType | None:
    """The submodule ``package.name``, imported; None where there is no such submodule (a missing dependency of
    one that exists still raises)."""
    full_name = f"{package}.{name}"
    try:
        return importlib.import_module(full_name)
    except ModuleNotFoundError as error:
        if error.name != full_name:
            raise
        return None


def _package_keeping(names: frozenset[str]) -> type[types.ModuleType]:
    """A module class for a package that, where the import system binds its submodule ``name`` (one of
    ``names``) as the attribute ``name``, binds the value called ``name`` that the submodule defines instead."""

    class LazyPackage(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
                value = getattr(value, name)
            super().__setattr__(name, value)

    return LazyPackage
