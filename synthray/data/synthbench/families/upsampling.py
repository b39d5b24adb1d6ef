"""Four conv autoencoders that differ only in how the decoder upsamples.

The upsampling operator is the classic source of generator fingerprints (Odena et al. 2016,
"Deconvolution and checkerboard artifacts"; Zhang et al. 2019, "Detecting and simulating
artifacts in GAN fake images"): transposed convolutions leave checkerboards, nearest
neighbour leaves blocky 2x2 phases, bilinear smooths, pixel shuffle leaves sub-pixel phase
patterns. Same encoder, same widths, so the upsampling is what tells them apart.
"""

from __future__ import annotations

import torch
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.blocks import act, conv_encoder
from synthray.data.synthbench.registry import register_family

_WIDTHS = (16, 32, 64)  # full, 1/2 and 1/4 resolution
_LATENT = 32  # channels of the 1/4-resolution code


class _UpsamplingAutoencoder(GeneratorFamily):
    """Encoder to a 1/4-resolution code, decoder of two 2x upsampling stages."""

    stride = 4

    def __init__(self) -> None:
        super().__init__()
        full, half, quarter = _WIDTHS
        self.encoder = conv_encoder(_WIDTHS, _LATENT)
        self.decoder = nn.Sequential(
            nn.Conv2d(_LATENT, quarter, 3, padding=1),
            act(),
            self.upsample(quarter, half),
            self.upsample(half, full),
            nn.Conv2d(full, 3, 3, padding=1),
        )

    def upsample(self, cin: int, cout: int) -> nn.Module:
        """One 2x upsampling stage ``(N, cin, H, W) -> (N, cout, 2H, 2W)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        return self.from_net(self.decoder(self.encoder(self.to_net(x))))


@register_family("tconv")
class TransposedConvAutoencoder(_UpsamplingAutoencoder):
    """DCGAN-style decoder: 4x4 stride-2 transposed convolutions."""

    architecture = (
        "conv encoder (/4) -> decoder upsampling by ConvTranspose2d(k=4, s=2) (DCGAN-style, checkerboard artefacts)"
    )

    def upsample(self, cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), act())


@register_family("nearest_conv")
class NearestConvAutoencoder(_UpsamplingAutoencoder):
    """Nearest-neighbour resize followed by a 3x3 convolution."""

    architecture = "conv encoder (/4) -> decoder of nearest-neighbour 2x upsample + 3x3 conv"

    def upsample(self, cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), act())


@register_family("bilinear_conv")
class BilinearConvAutoencoder(_UpsamplingAutoencoder):
    """Bilinear resize followed by a 3x3 convolution."""

    architecture = "conv encoder (/4) -> decoder of bilinear 2x upsample + 3x3 conv"

    def upsample(self, cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(cin, cout, 3, padding=1),
            act(),
        )


@register_family("pixel_shuffle")
class PixelShuffleAutoencoder(_UpsamplingAutoencoder):
    """Sub-pixel convolution (Shi et al. 2016, ESPCN): conv to 4x channels, then shuffle."""

    architecture = "conv encoder (/4) -> decoder of 3x3 conv to 4C + PixelShuffle(2) (sub-pixel conv)"

    def upsample(self, cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2), act())
