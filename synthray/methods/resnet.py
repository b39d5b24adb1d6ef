"""ResNet-50 baselines: 002's sigmoid classifier and 004's transfer-learning family.

- ``resnet50_sigmoid`` (002 §2.2.2): ResNet-50 with its last layer replaced by one sigmoid
  output, all layers trained with BCE and Adam.
- ``resnet50_transfer`` (004 (b)): the backbone frozen, only the new output layer trained.
  004 starts from ImageNet weights; nothing is downloaded here, so give ``weights_path``
  (a local timm state_dict) for that, or the frozen backbone stays at random init (a
  random-features baseline; a warning says so).
- ``resnet50_fractal`` (004 (c)): (b) plus the box-counting fractal dimension of every
  channel of an early feature map, appended to the pooled features (``fractal.py``).
- ``resnet50_fractal_combined`` (004 (d)): (c) trained with the combined loss
  (``combined_loss.py``). With the backbone frozen, as in 004, the feature-similarity
  term is constant for the optimizer; it shapes the features only with
  ``freeze_backbone: false``.
- ``resnet50_rotation`` (004 (e)): rotation-prediction pre-training of the whole network on
  the unlabelled training images, then fine-tuning with the detection head.

Backbones come only through ``timm.create_model(name, pretrained=False, num_classes=0)``;
tests and CPU runs set a small one (``backbone: resnet10t``).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import timm
import torch
from torch import nn

from synthray.methods.base import FitContext
from synthray.methods.classifier import ClassifierConfig, ImageClassifier
from synthray.methods.combined_loss import CombinedLoss
from synthray.methods.fractal import FractalDimension
from synthray.methods.registry import register_method
from synthray.methods.rotation import rotation_pretrain
from synthray.models.encoder import check_backbone_name
from synthray.models.weights import check_weights_path, load_backbone_weights
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)


class TimmBody(nn.Module):
    """A headless timm backbone, optionally with fractal dimensions of one feature map appended.

    Args:
        backbone: timm model name.
        weights_path: local backbone weights, or None (random init).
        fractal: append the fractal dimension of every channel of stage ``fractal_stage``.
        fractal_stage: index into the backbone's ``feature_info`` (1 = ResNet's layer1, stride 4).
    Raises:
        ValueError: an unknown backbone, a stage it does not have, or weights that do not fit.
    """

    def __init__(
        self, backbone: str, weights_path: str | None = None, fractal: bool = False, fractal_stage: int = 1
    ) -> None:
        super().__init__()
        check_backbone_name(backbone)
        if weights_path is not None:
            check_weights_path(weights_path)
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        if weights_path is not None:
            load_backbone_weights(self.backbone, weights_path)
        self.out_dim = int(self.backbone.num_features)
        self.fractal = FractalDimension() if fractal else None
        self.fractal_stage = fractal_stage
        if fractal:
            info = self.backbone.feature_info
            if not 0 <= fractal_stage < len(info):
                raise ValueError(f"{backbone} has feature stages 0..{len(info) - 1}, not {fractal_stage}")
            self.out_dim += int(info[fractal_stage]["num_chs"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) -> (N, out_dim) pooled features [+ per-channel fractal dimensions]."""
        if self.fractal is None:
            return self.backbone(x)
        final, maps = self.backbone.forward_intermediates(x, indices=[self.fractal_stage], intermediates_only=False)
        pooled = self.backbone.forward_head(final, pre_logits=True)
        return torch.cat([pooled, self.fractal(maps[0]).to(pooled.dtype)], dim=1)


@config_dataclass
class ResNetConfig(ClassifierConfig):
    """ResNet-family classifier settings."""

    backbone: str = "resnet50"
    """timm name; resnet10t for tests and CPU runs"""
    weights_path: str | None = None
    """local pretrained backbone weights (004's ImageNet start); None = random init"""
    freeze_backbone: bool = False
    """004 (b)-(d): train only the output layer"""
    fractal: bool = False
    """004 (c): append fractal dimensions of a feature map"""
    fractal_stage: int = 1
    """which feature stage (timm feature_info index) the dimensions are taken of"""
    combined_loss: bool = False
    """004 (d): CE + feature similarity + confidence penalty, learned weights"""
    rotation: bool = False
    """004 (e): rotation-prediction pre-training before fine-tuning"""
    rotation_steps: int = 200
    """pretext steps (when rotation is on)"""
    rotation_lr: float | None = None
    """pretext learning rate; None = lr"""


_TRANSFER = {"freeze_backbone": True}


@register_method("resnet50_rotation", "004 (e): rotation-prediction pre-training, then fine-tuning", rotation=True)
@register_method(
    "resnet50_fractal_combined",
    "004 (d): frozen backbone + fractal layer + combined loss",
    fractal=True,
    combined_loss=True,
    **_TRANSFER,
)
@register_method(
    "resnet50_fractal", "004 (c): frozen backbone + box-counting fractal-dimension layer", fractal=True, **_TRANSFER
)
@register_method("resnet50_transfer", "004 (b): frozen backbone, only the output layer trained", **_TRANSFER)
@register_method("resnet50_sigmoid", "002: ResNet-50 with one sigmoid output, all layers trained", lr=1e-3)
class ResNetMethod(ImageClassifier):
    """A timm ResNet (or any timm backbone) with a binary or multiclass head."""

    Config = ResNetConfig

    def __init__(self, cfg: ResNetConfig, name: str = "") -> None:
        super().__init__(cfg, name)
        self.combined = CombinedLoss() if cfg.combined_loss else None

    def build_body(self, ctx: FitContext) -> tuple[nn.Module, int]:
        if self.cfg.freeze_backbone and self.cfg.weights_path is None:
            log.warning(
                "%s: frozen backbone without weights_path: it keeps its random init "
                "(004 starts from ImageNet weights; give a local file to reproduce that)",
                self.name,
            )
        body = TimmBody(self.cfg.backbone, self.cfg.weights_path, self.cfg.fractal, self.cfg.fractal_stage)
        if self.cfg.freeze_backbone:
            body.backbone.requires_grad_(False)
        if self.combined is not None:
            self.combined.to(ctx.device)
        return body, body.out_dim

    def pretrain(self, ctx: FitContext) -> dict[str, Any]:
        if not self.cfg.rotation:
            return {}
        assert self.net is not None
        if self.cfg.freeze_backbone:
            raise ValueError(f"{self.name}: rotation pre-training trains the backbone; unset freeze_backbone")
        losses = rotation_pretrain(
            self.net.body,
            self.net.body.out_dim,
            ctx.epochs(self.cfg.batch_size),
            self.cfg.rotation_steps,
            self.cfg.rotation_lr or self.cfg.lr,
            self.cfg.log_every,
        )
        return {
            "rotation_loss_first": losses[0] if losses else None,
            "rotation_loss_last": losses[-1] if losses else None,
        }

    def trainable(self) -> Iterable[nn.Parameter]:
        assert self.net is not None
        return self.net.head.parameters() if self.cfg.freeze_backbone else self.net.parameters()

    def set_train_mode(self) -> None:
        assert self.net is not None
        self.net.train()
        if self.cfg.freeze_backbone:
            # A frozen backbone keeps its BatchNorm statistics too.
            self.net.body.eval()

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.combined.parameters()) if self.combined is not None else []

    def loss(
        self, logits: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.combined is None:
            return super().loss(logits, feats, labels)
        return self.combined(logits, feats, labels, self.is_ai_target(labels))
