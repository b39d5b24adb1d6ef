"""A small name -> factory registry for encoders (after timm's ``models/_registry.py``).

A factory takes an :class:`EncoderConfig` and returns an ``nn.Module`` whose
``forward(x: (N, 3, H, W)) -> (N, D)`` yields L2-normalised embeddings. Tests iterate
:func:`list_encoders`, so every registered encoder is tested.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from synthray.models.config import EncoderConfig

EncoderFactory = Callable[[EncoderConfig], nn.Module]
_REGISTRY: dict[str, EncoderFactory] = {}

# Modules whose import registers the built-in encoders. Imported on first lookup so that
# `from synthray.models.registry import build_encoder` works without the package __init__.
_BUILTIN_MODULES = ("synthray.models.encoder",)


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Registers ``factory(cfg: EncoderConfig) -> nn.Module`` under ``name``.

    Args:
        name: the value of ``EncoderConfig.name`` that selects this factory.
    Returns:
        a decorator that registers the factory and returns it unchanged.
    Raises:
        ValueError: if ``name`` is already registered (two modules fighting over a name
            would otherwise make the winner depend on import order).
    """

    def deco(factory: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """Builds the encoder that ``cfg.name`` selects.

    Args:
        cfg: the encoder config.
    Returns:
        the encoder module (in training mode, on the CPU, float32).
    Raises:
        ValueError: on an unknown ``cfg.name`` (the message lists the known ones), or
            whatever the factory raises for a bad config.
    """
    _load_builtins()
    if cfg.name not in _REGISTRY:
        raise ValueError(f"unknown encoder {cfg.name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[cfg.name](cfg)
