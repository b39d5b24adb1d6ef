"""The projection head that maps backbone features into the contrastive space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """An MLP ``Linear -> ReLU -> ... -> Linear`` of configurable depth.

    The head follows the SupCon recipe (after Khosla et al. 2020, who keep a small MLP on top
    of the encoder and train the loss on its output). 000 reports a 9-point drop in accuracy
    when the head is removed, so ``num_layers=0`` (identity) exists for that ablation.

    Args:
        in_dim: size F of the backbone features.
        out_dim: size D of the projected embedding; ignored when ``num_layers == 0``.
        hidden_dim: width of the hidden layers; None = ``in_dim``.
        num_layers: number of Linear layers; 0 = identity, 1 = a single Linear.
    Raises:
        ValueError: on a negative depth or a non-positive size.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        if min(in_dim, out_dim, hidden_dim) <= 0:
            raise ValueError(f"sizes must be positive, got in={in_dim} out={out_dim} hidden={hidden_dim}")
        self.in_dim = in_dim
        self.num_layers = num_layers
        # With no layer there is nothing to project: the embedding is the backbone feature.
        self.out_dim = out_dim if num_layers > 0 else in_dim
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True)]
            width = hidden_dim
        if num_layers > 0:
            layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projects features.

        Args:
            x: (N, in_dim) backbone features.
        Returns:
            (N, out_dim) projections, not normalised.
        """
        return self.mlp(x)
