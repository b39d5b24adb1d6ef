"""A small name -> factory registry for losses (after timm's ``models/_registry.py``).

A factory takes a :class:`LossConfig` and returns an ``nn.Module`` called as
``loss(features, labels) -> scalar``. Tests iterate :func:`list_losses`, so every
registered loss is held to the common contract.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from synthray.losses.config import LossConfig

LossFactory = Callable[[LossConfig], nn.Module]
_REGISTRY: dict[str, LossFactory] = {}

# Modules whose import registers the built-in losses; imported on first lookup.
_BUILTIN_MODULES = ("synthray.losses.supcon", "synthray.losses.euclidean")


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Registers ``factory(cfg: LossConfig) -> nn.Module`` under ``name``.

    Args:
        name: the value of ``LossConfig.name`` that selects this factory.
    Returns:
        a decorator that registers the factory and returns it unchanged.
    Raises:
        ValueError: if ``name`` is already registered.
    """

    def deco(factory: LossFactory) -> LossFactory:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def build_loss(cfg: LossConfig) -> nn.Module:
    """Builds the loss that ``cfg.name`` selects.

    Args:
        cfg: the loss config.
    Returns:
        the loss module.
    Raises:
        ValueError: on an unknown ``cfg.name`` (the message lists the known ones) or a bad
            hyperparameter.
    """
    _load_builtins()
    if cfg.name not in _REGISTRY:
        raise ValueError(f"unknown loss {cfg.name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[cfg.name](cfg)
