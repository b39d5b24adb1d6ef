"""A small name -> factory registry for encoders (after timm's ``models/_registry.py``).

A factory takes an :class:`EncoderConfig` and returns an ``nn.Module`` whose
``forward(x: (N, 3, H, W)) -> (N, D)`` yields L2-normalised embeddings. Tests iterate
:func:`list_encoders`, so every registered encoder is tested.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from synthray.models.config import EncoderConfig
from synthray.registry import Registry

EncoderFactory = Callable[[EncoderConfig], nn.Module]
# The built-ins register on first lookup, so `from synthray.models.registry import
# build_encoder` works without the package __init__.
_REGISTRY: Registry[EncoderFactory] = Registry("encoder", ("synthray.models.encoder",))


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Registers ``factory(cfg: EncoderConfig) -> nn.Module`` under ``name`` (decorator).

    Raises:
        ValueError: if ``name`` is already registered.
    """
    return _REGISTRY.register(name)


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    return _REGISTRY.names()


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
    return _REGISTRY.get(cfg.name)(cfg)
