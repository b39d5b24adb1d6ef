"""A StyleGAN2-style synthesis network: modulated convolutions and per-pixel noise.

After Karras et al. 2020 (StyleGAN2): a mapping MLP gives a style vector, every 3x3 conv is
modulated by it and demodulated, per-pixel Gaussian noise with a learned per-channel strength is
added after each conv, bilinear upsampling between scales, and RGB is summed over scales through
1x1 "toRGB" skips. Instead of a learned constant, the synthesis starts from an encoding of a
real crop (as GAN-inversion / image-to-image StyleGAN setups do), so the output keeps the
content of real photographs while carrying StyleGAN's fingerprint: noise-driven texture and
skip-summed upsampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.blocks import act, conv_encoder
from synthray.data.synthbench.registry import register_family

_STYLE_DIM = 64


class ModulatedConv2d(nn.Module):
    """Conv whose weights are scaled per input channel by a style, then (optionally) demodulated.

    Args:
        cin: input channels.
        cout: output channels.
        kernel: kernel side (odd).
        demodulate: normalise each output filter to unit norm (StyleGAN2); off for toRGB.
    """

    def __init__(self, cin: int, cout: int, kernel: int, demodulate: bool = True) -> None:
        super().__init__()
        # Plainly scaled weights, not StyleGAN's equalised learning rate: with N(0, 1) weights
        # Adam's fixed step is a tiny relative change, and the fit is only a few hundred steps.
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(_STYLE_DIM, cin)
        nn.init.ones_(self.affine.bias)  # style starts as identity modulation
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, cin, H, W)``, ``style``: ``(N, style_dim)`` -> ``(N, cout, H, W)``."""
        s = self.affine(style)  # (N, cin)
        # Scaling the input channels and then the output channels equals convolving with
        # per-sample modulated, demodulated weights (StyleGAN2's non-fused path), without the
        # grouped convolution that is several times slower on a CPU.
        out = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.weight.shape[-1] // 2)
        if self.demodulate:
            energy = self.weight.pow(2).sum(dim=(2, 3))  # (cout, cin)
            out = out * torch.rsqrt(s.pow(2) @ energy.t() + 1e-8)[:, :, None, None]
        return out + self.bias.view(1, -1, 1, 1)


class NoiseInjection(nn.Module):
    """Adds per-pixel N(0, 1) noise scaled by a learned per-channel strength."""

    def __init__(self, channels: int, init: float = 0.1) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.full((1, channels, 1, 1), init))

    def forward(self, x: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, with one noise image shared by all channels."""
        n, _, h, w = x.shape
        return x + self.strength * torch.randn((n, 1, h, w), generator=noise, dtype=x.dtype)


class _StyledLayer(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3)
        self.noise = NoiseInjection(cout)
        self.act = act()

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        return self.act(self.noise(self.conv(x, style), noise))


@register_family("modulated_conv")
class ModulatedNoiseGenerator(GeneratorFamily):
    """StyleGAN2-like skip generator started from a 1/8-resolution encoding of the crop."""

    architecture = (
        "StyleGAN2-like: encoder (/8) -> mapping MLP style; synthesis of modulated/demodulated "
        "3x3 convs with per-pixel noise injection, bilinear 2x upsampling, skip toRGB sum"
    )
    stride = 8

    def __init__(self) -> None:
        super().__init__()
        widths = (64, 48, 32, 16)  # at 1/8, 1/4, 1/2 and full resolution
        self.encoder = conv_encoder((16, 32, 48, 64), widths[0])
        self.mapping = nn.Sequential(nn.Linear(widths[0], _STYLE_DIM), act(), nn.Linear(_STYLE_DIM, _STYLE_DIM), act())
        self.base = _StyledLayer(widths[0], widths[0])
        self.to_rgb = nn.ModuleList([ModulatedConv2d(widths[0], 3, 1, demodulate=False)])
        self.blocks = nn.ModuleList()
        for cin, cout in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.ModuleList([_StyledLayer(cin, cout), _StyledLayer(cout, cout)]))
            self.to_rgb.append(ModulatedConv2d(cout, 3, 1, demodulate=False))

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        h = self.encoder(self.to_net(x))
        style = self.mapping(h.mean(dim=(2, 3)))
        h = self.base(h, style, noise)
        rgb = self.to_rgb[0](h, style)
        for (first, second), to_rgb in zip(self.blocks, self.to_rgb[1:]):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = second(first(h, style, noise), style, noise)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
            rgb = rgb + to_rgb(h, style)
        return self.from_net(rgb)
