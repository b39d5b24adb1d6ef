"""Encoders: a timm backbone + our projection head, behind a small registry.

The public names are re-exported lazily (PEP 562): ``synthray.config`` imports
``synthray.models.config``, and that must not pull in torch and timm for every command
that only reads a config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthray.models.config import EncoderConfig
    from synthray.models.encoder import ContrastiveEncoder, supcon_encoder
    from synthray.models.head import ProjectionHead
    from synthray.models.registry import build_encoder, list_encoders, register_encoder
    from synthray.models.weights import load_backbone_weights, read_state_dict

_EXPORTS = {
    "ContrastiveEncoder": "synthray.models.encoder",
    "EncoderConfig": "synthray.models.config",
    "ProjectionHead": "synthray.models.head",
    "build_encoder": "synthray.models.registry",
    "list_encoders": "synthray.models.registry",
    "load_backbone_weights": "synthray.models.weights",
    "read_state_dict": "synthray.models.weights",
    "register_encoder": "synthray.models.registry",
    "supcon_encoder": "synthray.models.encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
