"""Layers several families share: a strided conv encoder and a GroupNorm residual block."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def act() -> nn.Module:
    """The GAN-style activation used by the plain conv families."""
    return nn.LeakyReLU(0.2)


def conv_encoder(widths: Sequence[int], out_channels: int) -> nn.Sequential:
    """A plain strided-conv encoder: ``len(widths) - 1`` halvings of the image side.

    Args:
        widths: channels at each scale, full resolution first.
        out_channels: channels of the returned feature map.
    Returns:
        a module mapping ``(N, 3, H, W)`` to ``(N, out_channels, H / 2**k, W / 2**k)``.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), act()]
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), act()]
    layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block, as in latent-diffusion autoencoders and U-Nets.

    Args:
        cin: input channels.
        cout: output channels (a 1x1 conv matches the skip when they differ).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(8, cin), cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(min(8, cout), cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, cin, H, W)`` -> ``(N, cout, H, W)``."""
        return self.skip(x) + self.body(x)
