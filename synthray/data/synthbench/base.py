"""What every generator family is: a small torch network that turns a real crop into a fake.

A family maps a batch of real crops to generated images of the same size, through its own
architecture (the bottleneck makes the output *generated*, not copied: every high frequency
comes from the decoder, so the decoder's upsampling leaves its fingerprint, as in real
generators). Families are fitted briefly to reconstruct real crops (:mod:`.fitting`) so that
their outputs look like images, then :meth:`GeneratorFamily.generate` makes the fakes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


class GeneratorFamily(nn.Module):
    """Base class of the registered families.

    Subclasses set ``architecture`` (one line, stored in the summary) and implement
    :meth:`forward`. Images cross the boundary as ``(N, 3, H, W)`` float in ``[0, 1]``;
    inside, networks work in ``[-1, 1]`` (:meth:`to_net`, :meth:`from_net`).
    """

    #: Registered name, set by ``@register_family``.
    name: ClassVar[str] = ""
    #: One-line architecture description for the summary.
    architecture: ClassVar[str] = ""
    #: The image side must be a multiple of this (total downsampling of the network).
    stride: ClassVar[int] = 4
    #: Adam learning rate for the brief fit.
    learning_rate: ClassVar[float] = 2e-3

    @staticmethod
    def to_net(x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` -> ``[-1, 1]``."""
        return x * 2.0 - 1.0

    @staticmethod
    def from_net(y: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` -> ``[0, 1]`` (not clipped: the loss sees overshoot)."""
        return (y + 1.0) * 0.5

    def check_input(self, x: torch.Tensor) -> None:
        """Raises ``ValueError`` unless ``x`` is ``(N, 3, H, W)`` with H, W multiples of stride."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(f"{self.name}: image side must be a multiple of {self.stride}, got {tuple(x.shape[2:])}")

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        """Generates from real crops.

        Args:
            x: ``(N, 3, H, W)`` real crops in ``[0, 1]``.
            noise: source of the family's stochastic inputs (per-pixel noise, posterior
                samples); families without any ignore it.
        Returns:
            ``(N, 3, H, W)`` generated images, about ``[0, 1]``.
        """
        raise NotImplementedError

    def prepare(self, x: torch.Tensor, noise: torch.Generator, steps: int) -> None:
        """Data-dependent initialisation before fitting; most families need none.

        Args:
            x: ``(N, 3, H, W)`` a first batch of training crops in ``[0, 1]``.
            noise: random source for the initialisation.
            steps: the number of fitting steps that will follow.
        """
        del x, noise, steps  # nothing to initialise from data by default

    def fit_loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        """The training objective on a batch of real crops: :meth:`reconstruction_loss`."""
        return self.reconstruction_loss(self(x, noise), x)

    @staticmethod
    def reconstruction_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean absolute error in ``[0, 1]`` units between output ``y`` and target ``x``.

        (An extra L1 term on pixel differences was tried to make brief fits less blurry; it
        did not raise the outputs' high-frequency energy, so plain L1 it is.)
        """
        return F.l1_loss(y, x)

    @torch.no_grad()
    def generate(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        """Fakes for a batch of real crops (``(N, 3, H, W)`` in ``[0, 1]`` in and out)."""
        return self(x, noise)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
