"""Contrastive losses (SupCon, Euclidean margin) behind a small registry.

The public names are re-exported lazily (PEP 562): ``synthray.config`` imports
``synthray.losses.config``, and that must not pull in torch for every command that only
reads a config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthray.lazy import lazy_exports

if TYPE_CHECKING:
    from synthray.losses.base import EmbeddingLoss, flatten_views, zero_loss
    from synthray.losses.config import LossConfig
    from synthray.losses.euclidean import EuclideanContrastiveLoss, euclidean_loss
    from synthray.losses.registry import build_loss, list_losses, register_loss
    from synthray.losses.supcon import SupConLoss, supcon_loss

_EXPORTS = {
    "EmbeddingLoss": "synthray.losses.base",
    "EuclideanContrastiveLoss": "synthray.losses.euclidean",
    "LossConfig": "synthray.losses.config",
    "SupConLoss": "synthray.losses.supcon",
    "build_loss": "synthray.losses.registry",
    "euclidean_loss": "synthray.losses.euclidean",
    "flatten_views": "synthray.losses.base",
    "list_losses": "synthray.losses.registry",
    "register_loss": "synthray.losses.registry",
    "supcon_loss": "synthray.losses.supcon",
    "zero_loss": "synthray.losses.base",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
