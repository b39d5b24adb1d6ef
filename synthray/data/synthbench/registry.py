"""The registry of generator families: ``@register_family("name")`` and ``list_families()``.

After timm's model registry: a family module decorates its class, the package ``__init__``
imports every family module, and tests iterate :func:`list_families` so every registered
family is built and checked.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from synthray.data.synthbench.base import GeneratorFamily

F = TypeVar("F", bound=type[GeneratorFamily])

_FAMILIES: dict[str, type[GeneratorFamily]] = {}


def register_family(name: str) -> Callable[[F], F]:
    """Class decorator that registers a :class:`GeneratorFamily` under ``name``.

    Args:
        name: the label the family's images get (a folder name: ``[a-z0-9_]``).
    Returns:
        the decorator; it sets ``cls.name`` and returns the class unchanged.
    Raises:
        ValueError: on a duplicate or malformed name, or a class that is not a family.
    """
    if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
        raise ValueError(f"family name must be lower-case [a-z0-9_], got {name!r}")

    def decorator(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, GeneratorFamily)):
            raise ValueError(f"{cls!r} is not a GeneratorFamily subclass")
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} is already registered by {_FAMILIES[name].__qualname__}")
        if not cls.architecture:
            raise ValueError(f"family {name!r} has no architecture description")
        cls.name = name
        _FAMILIES[name] = cls
        return cls

    return decorator


def list_families() -> list[str]:
    """Names of all registered families, sorted."""
    return sorted(_FAMILIES)


def get_family(name: str) -> type[GeneratorFamily]:
    """The family class registered under ``name``.

    Raises:
        KeyError: with the known names, if ``name`` is not registered.
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(
            f"unknown synthbench family {name!r}; known: {list_families()} and procedural ones, proc_0000 ... proc_9999"
        ) from None


def check_family(name: str) -> None:
    """Raises ``KeyError`` unless ``name`` is a registered or a procedural family."""
    from synthray.data.synthbench.families.procedural import procedural_index

    if procedural_index(name) is None:
        get_family(name)


def create_family(name: str) -> GeneratorFamily:
    """A freshly initialised network of family ``name``, registered or procedural
    (``proc_NNNN``); seed torch first for determinism."""
    from synthray.data.synthbench.families.procedural import create_procedural, procedural_index

    if procedural_index(name) is not None:
        return create_procedural(name)
    return get_family(name)()
