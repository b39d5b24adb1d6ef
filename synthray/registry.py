"""One small name -> object registry, shared by encoders, losses, layouts and augmentations
(after timm's ``models/_registry.py``): modules register with a decorator, users select by
the name in their config, tests iterate the names so every registered piece is tested."""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> registered objects of one kind.

    Args:
        kind: what is registered ("loss", "encoder", ...), for messages.
        builtin_modules: modules whose import registers the built-ins; imported on first lookup
            (so importing the registry itself stays cheap).
    """

    def __init__(self, kind: str, builtin_modules: Iterable[str] = ()) -> None:
        self.kind = kind
        self._builtin_modules = tuple(builtin_modules)
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering its argument under ``name`` and returning it unchanged.

        Raises:
            ValueError: if ``name`` is taken (two modules fighting over a name would make the
                winner depend on import order).
        """

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load_builtins(self) -> None:
        for module in self._builtin_modules:
            importlib.import_module(module)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_builtins()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The object registered under ``name``.

        Raises:
            ValueError: for an unknown name; the message lists the known ones.
        """
        self._load_builtins()
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self._items)}")
        return self._items[name]
