"""The small CIFAKE CNN (002, 003) and 003's preprocessing conditions.

002 (§2.2.1): two blocks of Conv(32 filters, 3x3, pad 1) -> ReLU -> MaxPool(2) (32 -> 16 -> 8
px), flatten, Dense(64), sigmoid output, BCE, Adam. 003 (§4.2) rebuilds the same CNN of
Bird & Lotfi with 3x3 stride-1 pooling and dense layers 64, 64 before the output, and trains
it under four conditions (§5.1): unmodified, perturbed (``perturb.py``), reconstructed by a
convolutional autoencoder (``autoencoder.py``), and both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from synthray.methods.autoencoder import ConvAutoencoder, train_autoencoder
from synthray.methods.base import FitContext
from synthray.methods.classifier import ClassifierConfig, ImageClassifier
from synthray.methods.perturb import Perturb, PerturbConfig
from synthray.methods.registry import register_method
from synthray.typed_config import config_dataclass


class SmallCNN(nn.Module):
    """``blocks`` x (Conv 3x3 -> ReLU -> MaxPool), flatten, dense ReLU layers: (N, 3, R, R) -> (N, dense[-1]).

    Args:
        resolution: input side R (the flatten size depends on it, as in the papers).
        filters: conv filters per block (32 in 002/003).
        blocks: conv blocks (2).
        pool_kernel: max-pool window (002: 2; 003: 3).
        pool_stride: max-pool stride (002: 2 halves the map; 003: 1 keeps it).
        dense: hidden dense widths after the flatten (002: (64,); 003: (64, 64)).
    Raises:
        ValueError: on non-positive sizes or a map pooled away to nothing.
    """

    def __init__(
        self,
        resolution: int,
        filters: int = 32,
        blocks: int = 2,
        pool_kernel: int = 2,
        pool_stride: int = 2,
        dense: tuple[int, ...] = (64,),
    ) -> None:
        super().__init__()
        if min(resolution, filters, blocks, pool_kernel, pool_stride) < 1 or not dense or min(dense) < 1:
            raise ValueError("SmallCNN sizes must be positive and dense must name at least one layer")
        layers: list[nn.Module] = []
        chans = 3
        # Stride-1 pooling is padded to keep the size (003); stride-2 pooling halves it (002).
        pad = (pool_kernel - 1) // 2 if pool_stride == 1 else 0
        side = resolution
        for _ in range(blocks):
            layers += [
                nn.Conv2d(chans, filters, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool_kernel, stride=pool_stride, padding=pad),
            ]
            chans = filters
            side = (side + 2 * pad - pool_kernel) // pool_stride + 1
        if side < 1:
            raise ValueError(f"{blocks} pooling blocks leave nothing of a {resolution} px input")
        width = filters * side * side
        layers.append(nn.Flatten())
        for d in dense:
            layers += [nn.Linear(width, d), nn.ReLU(inplace=True)]
            width = d
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@config_dataclass
class CNNConfig(ClassifierConfig):
    """The small CNN and 003's preprocessing conditions."""

    lr: float = 1e-3
    """Adam's default; 002 and 003 do not give theirs"""
    filters: int = 32
    """conv filters per block"""
    blocks: int = 2
    """conv-ReLU-maxpool blocks"""
    pool_kernel: int = 2
    """002: 2; 003: 3"""
    pool_stride: int = 2
    """002: 2; 003: 1"""
    dense: tuple[int, ...] = (64,)
    """hidden dense widths (002: 64; 003: 64, 64)"""
    perturb: bool = False
    """003: blur + resized crop + colour jitter on training images"""
    perturbation: PerturbConfig = dataclasses.field(default_factory=PerturbConfig)
    autoencoder: bool = False
    """003: classify autoencoder reconstructions (train and test)"""
    ae_latent_dim: int = 2048
    """003's bottleneck"""
    ae_steps: int = 300
    """autoencoder training steps (on the seen classes' training images)"""
    ae_lr: float = 1e-3


_CNN_003 = {"pool_kernel": 3, "pool_stride": 1, "dense": (64, 64)}


@register_method(
    "cnn_perturb_autoencoder",
    "003: the CNN on perturbed, then autoencoder-reconstructed images",
    perturb=True,
    autoencoder=True,
    **_CNN_003,
)
@register_method(
    "cnn_autoencoder", "003: the CNN on convolutional-autoencoder reconstructions", autoencoder=True, **_CNN_003
)
@register_method(
    "cnn_perturb", "003: the CNN with blur/crop/colour-jitter perturbation (p=0.8)", perturb=True, **_CNN_003
)
@register_method(
    "cnn_003", "003: the CIFAKE CNN as rebuilt by 003 (stride-1 pooling, dense 64-64), unmodified images", **_CNN_003
)
@register_method("small_cnn", "002: two conv(32)-ReLU-maxpool blocks, dense 64, sigmoid head")
class SmallCNNMethod(ImageClassifier):
    """The small CIFAKE CNN, optionally with 003's perturbation and autoencoder preprocessing."""

    Config = CNNConfig

    def __init__(self, cfg: CNNConfig, name: str = "") -> None:
        super().__init__(cfg, name)
        self.perturber: Perturb | None = None
        self.autoencoder: ConvAutoencoder | None = None

    def build_body(self, ctx: FitContext) -> tuple[nn.Module, int]:
        if (self.cfg.perturb or self.cfg.autoencoder) and ctx.preprocess.normalize is not None:
            raise ValueError(
                f"{self.name}: perturbation and the autoencoder work on [0, 1] pixels; "
                f"set preprocess.normalize to null (got {ctx.preprocess.normalize!r})"
            )
        body = SmallCNN(
            ctx.resolution,
            self.cfg.filters,
            self.cfg.blocks,
            self.cfg.pool_kernel,
            self.cfg.pool_stride,
            tuple(self.cfg.dense),
        )
        if self.cfg.perturb:
            self.perturber = Perturb(self.cfg.perturbation, ctx.resolution)
        return body, body.out_dim

    def pretrain(self, ctx: FitContext) -> dict[str, Any]:
        if not self.cfg.autoencoder:
            return {}
        ae = ConvAutoencoder(ctx.resolution, self.cfg.ae_latent_dim).to(ctx.device)
        losses = train_autoencoder(
            ae, ctx.epochs(self.cfg.batch_size), self.cfg.ae_steps, self.cfg.ae_lr, self.cfg.log_every
        )
        # Frozen from here on; gradients still reach the input (saliency through the reconstruction).
        ae.requires_grad_(False)
        self.autoencoder = ae
        return {"ae_mse_first": losses[0] if losses else None, "ae_mse_last": losses[-1] if losses else None}

    def train_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.perturber(x) if self.perturber is not None else x

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder(x) if self.autoencoder is not None else x

    def modules(self) -> list[nn.Module]:
        return super().modules() + ([self.autoencoder] if self.autoencoder is not None else [])
