"""The template every embedding loss fills in (after pytorch-metric-learning's ``BaseMetricLossFunction``).

``EmbeddingLoss.forward`` checks shapes, flattens multi-view input, turns autocast off and
computes in at least float32, optionally L2-normalises, then calls the subclass's
``compute``. A batch with nothing to learn from (no positive pair) gives a zero loss that
is still part of the graph: backward runs, gradients are zero, and under DDP every rank
takes part in the all-reduce instead of one rank skipping it and the others hanging.
``compute`` gets there by masking (no host-device sync); where the shape alone says there
is nothing to compare (one row, no pair) it returns None and the template answers with
:func:`zero_loss`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def flatten_views(
    features: torch.Tensor, labels: torch.Tensor | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks and flattens a batch of embeddings and their labels.

    Multi-view input is flattened view-major, as Khosla et al. 2020 do: rows
    ``[v * N + i]`` hold view ``v`` of sample ``i``, and every view keeps its sample's label.

    Args:
        features: (N, D) or (N, V, D) floating embeddings.
        labels: (N,) class labels; None = every sample its own class (then only the views
            of one sample are positives of each other, SimCLR-style).
    Returns:
        (N*V, D) features and (N*V,) labels on the features' device.
    Raises:
        ValueError: on a bad rank, an empty dimension, a non-float dtype or a label count
            that does not match N.
    """
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features must be a tensor, got {type(features).__name__}")
    if features.ndim not in (2, 3) or 0 in features.shape:
        raise ValueError(f"features must be (N, D) or (N, V, D) with no empty dim, got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    n = features.shape[0]
    if labels is None:
        labels = torch.arange(n, device=features.device)
    labels = torch.as_tensor(labels, device=features.device)
    if labels.shape != (n,):
        raise ValueError(
            f"labels must have shape ({n},) to match features {tuple(features.shape)}, got {tuple(labels.shape)}"
        )
    if features.ndim == 3:
        views = features.shape[1]
        features = features.transpose(0, 1).reshape(views * n, features.shape[2])
        labels = labels.repeat(views)
    return features, labels


def zero_loss(features: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to ``features`` (backward works, gradients are zero).

    Args:
        features: the loss input.
    Returns:
        () zero of dtype at least float32.
    """
    # Upcast before summing: a half-precision sum of a large batch could overflow to inf,
    # and inf * 0 is nan.
    return features.to(torch.promote_types(features.dtype, torch.float32)).sum() * 0.0


class EmbeddingLoss(nn.Module):
    """Base class: ``loss(features, labels) -> scalar`` with the checks done once.

    Args:
        normalize: L2-normalise the (float32) features before ``compute``.
    """

    def __init__(self, *, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def compute(self, z: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
        """The loss on flattened, full-precision embeddings.

        Args:
            z: (M, D) float32 or float64 embeddings (unit length if ``normalize``).
            labels: (M,) labels.
        Returns:
            () loss, or None when the shape alone leaves nothing to compare.
        """
        raise NotImplementedError

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Computes the loss.

        Args:
            features: (N, D) or (N, V, D) embeddings, any float dtype (fp16/bf16 are upcast).
            labels: (N,) class labels; None = each sample its own class.
            **kwargs: loss-specific options (see the subclass); others are a TypeError.
        Returns:
            () scalar loss in float32 (float64 for float64 input).
        Raises:
            ValueError: on mismatched shapes.
        """
        z, y = flatten_views(features, labels)
        # Autocast would run the similarity matmul in half precision; a softmax over
        # logits of up to 1/temperature = 100 needs float32 to stay accurate.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(torch.promote_types(z.dtype, torch.float32))
            if self.normalize:
                z = F.normalize(z, dim=1)
            loss = self.compute(z, y, **kwargs)
        return zero_loss(features) if loss is None else loss
