"""Encoders: a timm backbone + our projection head, behind a small registry.

The public names are re-exported lazily (PEP 562): ``synthray.config`` imports
``synthray.models.config``, and that must not pull in torch and timm for every command
that only reads a config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthray.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
