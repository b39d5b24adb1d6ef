"""A small name -> factory registry for losses (after timm's ``models/_registry.py``).

A factory takes a :class:`LossConfig` and returns an ``nn.Module`` called as
``loss(features, labels) -> scalar``. Tests iterate :func:`list_losses`, so every
registered loss is held to the common contract.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from synthray.losses.config import LossConfig
from synthray.registry import Registry

LossFactory = Callable[[LossConfig], nn.Module]
_REGISTRY: Registry[LossFactory] = Registry("loss", ("synthray.losses.supcon", "synthray.losses.euclidean"))


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Registers ``factory(cfg: LossConfig) -> nn.Module`` under ``name`` (decorator).

    Raises:
        ValueError: if ``name`` is already registered.
    """
    return _REGISTRY.register(name)


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return _REGISTRY.names()


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
    return _REGISTRY.get(cfg.name)(cfg)
