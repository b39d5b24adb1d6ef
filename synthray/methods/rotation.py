"""004's self-supervised pretext task: predict an image's rotation (0/90/180/270 degrees).

004 (§3.5) trains the whole ResNet-50 to classify the rotation of unlabelled training
images (after Gidaris et al. 2018), then replaces the 4-way output by the detection head
and fine-tunes. Labels are never read here.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from synthray.methods.base import adam_steps

ROTATIONS = 4


def rotate_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates each image by a random multiple of 90 degrees.

    Args:
        images: (N, C, R, R) square images.
        generator: RNG for the rotations.
    Returns:
        ((N, C, R, R) rotated images, (N,) int64 quarter turns in [0, 4)).
    Raises:
        ValueError: for non-square images (a quarter turn would change their shape).
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square (N, C, R, R) images, got {tuple(images.shape)}")
    k = torch.randint(0, ROTATIONS, (images.shape[0],), generator=generator)
    out = torch.stack([torch.rot90(img, int(q), dims=(-2, -1)) for img, q in zip(images, k)])
    return out, k.to(images.device)


def rotation_pretrain(
    body: nn.Module, feature_dim: int, batches: Iterator[dict[str, Any]], steps: int, lr: float, log_every: int = 50
) -> list[float]:
    """Trains ``body`` (and a throw-away 4-way head) on rotation prediction.

    Args:
        body: images -> (N, feature_dim) features; trained in place.
        feature_dim: its output size.
        batches: dicts with "image" (N, 3, R, R) (labels are ignored).
        steps: optimizer steps.
        lr: Adam learning rate.
        log_every: steps between log lines (0 = none).
    Returns:
        the loss of every step.
    """
    device = next(body.parameters()).device
    head = nn.Linear(feature_dim, ROTATIONS).to(device)
    body.train()

    def loss_of(batch: dict[str, Any]) -> torch.Tensor:
        x, k = rotate_batch(batch["image"])
        return F.cross_entropy(head(body(x)), k)

    return adam_steps(
        list(body.parameters()) + list(head.parameters()), lr, batches, steps, loss_of, "rotation pretext", log_every
    )
