"""The detector-method registry: every method the comparison can run, by name.

A method is a class with a typed ``Config`` dataclass (see :class:`~synthray.methods.base.Method`).
One class may be registered under several names with different default settings (the
papers' variants: "cnn_perturb" is "small_cnn" with perturbation on), so
``register_method`` takes the variant's defaults as keywords and decorators stack. Tests
iterate :func:`list_methods`, so every registered method trains and evaluates in the
suite.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from synthray.errors import ConfigError
from synthray.config import from_dict
from synthray.registry import Registry

_BUILTIN_MODULES = (
    "synthray.methods.cnn",
    "synthray.methods.resnet",
    "synthray.methods.embedding",
)


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """A registered method: its class and the defaults its name stands for."""

    cls: type  # a Method subclass with a ``Config`` dataclass
    defaults: Mapping[str, Any]  # Config fields this name sets (over the class's defaults)
    summary: str  # one line: which paper and what, for listings and reports


_REGISTRY: Registry[MethodEntry] = Registry("method", _BUILTIN_MODULES)


def register_method(name: str, summary: str = "", **defaults: Any) -> Callable[[type], type]:
    """Registers a Method class under ``name`` with config ``defaults`` (a decorator; stacks).

    Args:
        name: the name configs and the CLI select it by.
        summary: one line for listings; the class docstring's first line when empty.
        **defaults: Config fields this variant sets.
    Raises:
        ValueError: a taken name; TypeError: a default that is not a Config field.
    """

    def deco(cls: type) -> type:
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(defaults) - fields)
        if unknown:
            raise ConfigError(f"method {name!r}: {unknown} are not fields of {cls.Config.__name__}")
        doc = summary or (cls.__doc__ or "").strip().splitlines()[0]
        _REGISTRY.register(name)(MethodEntry(cls, dict(defaults), doc))
        return cls

    return deco


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return _REGISTRY.names()


def method_entry(name: str) -> MethodEntry:
    """The entry registered under ``name`` (ValueError listing the known names if none)."""
    return _REGISTRY.get(name)


def method_config(
    name: str, params: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> Any:
    """The typed config of method ``name``.

    Precedence, lowest first: the Config's defaults, the name's registered defaults,
    ``overrides`` (settings shared by every method of a comparison, applied only to methods
    whose Config has that field, e.g. a small ``backbone`` for CPU runs), ``params``
    (this method's own settings; every key must be a field).

    Raises:
        ValueError: unknown method; TypeError: a ``params`` key that is not a field.
    """
    entry = method_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.cls.Config)}
    shared = {k: v for k, v in (overrides or {}).items() if k in fields}
    return from_dict(entry.cls.Config, {**entry.defaults, **shared, **dict(params or {})})


def build_method(name: str, params: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """A fresh, untrained method instance (see :func:`method_config` for the settings)."""
    entry = method_entry(name)
    return entry.cls(method_config(name, params, overrides), name=name)
