"""The contrastive encoder: a timm backbone, our projection head, unit-length output."""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from synthray.models.config import EncoderConfig
from synthray.models.head import ProjectionHead
from synthray.models.registry import register_encoder
from synthray.models.weights import check_weights_path, load_backbone_weights

log = logging.getLogger(__name__)

IN_CHANS = 3  # RGB scaled to [0, 1], as the thesis feeds EfficientNet-B0


def check_backbone_name(name: str) -> None:
    """ValueError for a name timm does not know, with similar names as a hint."""
    # timm.is_model accepts "arch" and "arch.pretrained_tag"; checked before anything is built
    # so a typo in a config costs nothing and names its fix.
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:10] if name else []
        hint = f"; similar: {close}" if close else ""
        raise ValueError(f"unknown timm backbone {name!r}{hint} (see timm.list_models())")


class ContrastiveEncoder(nn.Module):
    """Image -> L2-normalised embedding, for SupCon training and kNN attribution.

    The backbone is any timm model, created headless with
    ``timm.create_model(backbone, pretrained=False, num_classes=0)`` so its output is the
    pooled feature vector; weights come only from a local file. Our :class:`ProjectionHead`
    maps the features to the embedding (after Khosla et al. 2020), which is L2-normalised so
    dot products are cosine similarities, as SupCon and the kNN index assume.

    Args:
        backbone: a timm model name (e.g. "efficientnet_b0", "resnet10t").
        pretrained: True only documents that ``weights_path`` holds pretrained weights and
            requires one; nothing is ever downloaded.
        weights_path: a local .pt/.pth/.bin/.safetensors backbone state_dict, or None.
        weights_strict: whether missing/unexpected keys in that file are an error.
        embedding_dim: size D of the embedding (head output).
        head_hidden_dim: hidden width of the head; None = the backbone's feature size.
        head_layers: head depth; 0 = no head, the embedding is the normalised backbone
            feature (D = the backbone's feature size, ``embedding_dim`` is not used).
        drop_rate: dropout on the pooled features, passed to timm; None = timm's default.
    Raises:
        ValueError: on an unknown backbone (before anything is built), ``pretrained`` without
            ``weights_path``, bad sizes, or a weights file that does not fit.
        FileNotFoundError: if ``weights_path`` does not exist.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        *,
        pretrained: bool = False,
        weights_path: str | None = None,
        weights_strict: bool = True,
        embedding_dim: int = 128,
        head_hidden_dim: int | None = None,
        head_layers: int = 2,
        drop_rate: float | None = 0.0,
    ) -> None:
        super().__init__()
        check_backbone_name(backbone)
        if pretrained and weights_path is None:
            raise ValueError(
                "pretrained=True needs a local weights_path: weights are never downloaded from a hub"
            )
        if weights_path is not None:
            check_weights_path(weights_path)
        if embedding_dim <= 0 or head_layers < 0:
            raise ValueError(
                f"need embedding_dim > 0 and head_layers >= 0, got {embedding_dim}, {head_layers}"
            )
        timm_kwargs: dict[str, Any] = {"drop_rate": drop_rate}
        timm_kwargs = {k: v for k, v in timm_kwargs.items() if v is not None}  # None = timm's default
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, **timm_kwargs)
        if weights_path is not None:
            load_backbone_weights(self.backbone, weights_path, strict=weights_strict)
        self.feature_dim: int = int(self.backbone.num_features)
        self.head = ProjectionHead(self.feature_dim, embedding_dim, head_hidden_dim, head_layers)
        self.embedding_dim: int = self.head.out_dim

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> ContrastiveEncoder:
        """Builds the encoder from its config (``cfg.name`` is the registry's concern)."""
        return cls(
            cfg.backbone,
            pretrained=cfg.pretrained,
            weights_path=cfg.weights_path,
            weights_strict=cfg.weights_strict,
            embedding_dim=cfg.embedding_dim,
            head_hidden_dim=cfg.head_hidden_dim,
            head_layers=cfg.head_layers,
            drop_rate=cfg.drop_rate,
        )

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != IN_CHANS or x.shape[0] == 0 or min(x.shape[2:]) == 0:
            raise ValueError(f"expected images of shape (N>0, {IN_CHANS}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected float images scaled to [0, 1], got dtype {x.dtype}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features before the head.

        Args:
            x: (N, 3, H, W) float images; any memory format (channels_last included).
        Returns:
            (N, F) pooled backbone features, F = ``self.feature_dim``; not normalised.
        Raises:
            ValueError: on a bad shape or a non-float dtype.
        """
        self._check_input(x)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds images.

        Args:
            x: (N, 3, H, W) float images.
        Returns:
            (N, D) unit-length embeddings, D = ``self.embedding_dim``; at least float32, also
            under autocast, so the loss and the index see full-precision unit vectors.
        Raises:
            ValueError: on a bad shape or a non-float dtype.
        """
        z = self.head(self.features(x))
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        return F.normalize(z, dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inference embeddings: ``forward`` in eval mode without autograd.

        The module's train/eval mode is restored afterwards, so this is safe to call
        from inside a training loop (e.g. for a validation kNN).

        Args:
            x: (N, 3, H, W) float images.
        Returns:
            (N, D) unit-length embeddings, detached.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self(x)
        finally:
            self.train(was_training)


@register_encoder("supcon")
def supcon_encoder(cfg: EncoderConfig) -> ContrastiveEncoder:
    """The thesis encoder: timm backbone + MLP projection head, unit-length output."""
    return ContrastiveEncoder.from_config(cfg)
