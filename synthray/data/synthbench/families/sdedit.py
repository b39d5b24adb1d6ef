"""A small U-Net denoiser applied SDEdit-style: noise a real crop, then denoise it.

SDEdit (Meng et al. 2022) edits an image by adding Gaussian noise up to an intermediate level
and running the diffusion model's reverse process from there; the result keeps the layout and
colours of the input while every pixel is re-synthesised by the denoiser. Here the denoiser is a
two-level U-Net (Ronneberger et al. 2015) conditioned on the noise level, with the EDM
preconditioning of Karras et al. 2022, fitted as an x0 predictor at random noise levels and
sampled with a short schedule (re-noising between steps, as ancestral samplers do).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.blocks import ResBlock
from synthray.data.synthbench.registry import register_family

_EMBED = 16  # sinusoidal noise-level embedding size


def _sigma_embedding(sigma: torch.Tensor) -> torch.Tensor:
    """``(N,)`` noise levels -> ``(N, _EMBED)`` sinusoidal features of log sigma."""
    half = _EMBED // 2
    freqs = torch.exp(torch.arange(half, dtype=sigma.dtype) * (-math.log(100.0) / half))
    arg = torch.log(sigma)[:, None] * freqs[None] * 10.0
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class _CondConv(nn.Module):
    """GroupNorm-SiLU-conv with a per-channel bias from the noise-level embedding."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cond = nn.Linear(_EMBED, cin)
        self.body = nn.Sequential(nn.GroupNorm(8, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.body(x + self.cond(emb)[:, :, None, None])


class _CondBlock(nn.Module):
    """ResBlock with a per-channel bias from the noise-level embedding (as DDPM U-Nets)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = ResBlock(cin, cout)
        self.cond = nn.Linear(_EMBED, cin)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.block(x + self.cond(emb)[:, :, None, None])


@register_family("sdedit_unet")
class SDEditUNet(GeneratorFamily):
    """Two-level noise-conditioned U-Net with skip connections, sampled SDEdit-style."""

    architecture = (
        "SDEdit with a 2-level noise-conditioned U-Net denoiser (GroupNorm convs, ResBlock middle, "
        "strided-conv down, nearest up, skip concatenation, EDM preconditioning); input noised "
        "to sigma=0.3, denoised in 2 steps (re-noised to 0.1)"
    )
    stride = 4
    #: Noise levels (of [-1, 1] images) of the sampling schedule.
    schedule = (0.3, 0.1)
    #: Training noise levels are log-uniform in this range.
    train_sigma = (0.04, 0.5)
    #: Standard deviation of the data, for the EDM scalings.
    sigma_data = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.enc0 = _CondConv(16, 16)
        self.down1 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.enc1 = _CondConv(32, 32)
        self.down2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.mid = _CondBlock(64, 64)
        # Channel reduction before the nearest upsample: 4x cheaper than after it.
        self.up2 = nn.Conv2d(64, 32, 3, padding=1)
        self.dec1 = _CondConv(64, 32)
        self.up1 = nn.Conv2d(32, 16, 3, padding=1)
        self.dec0 = _CondConv(32, 16)
        self.head = nn.Sequential(nn.GroupNorm(8, 16), nn.SiLU(), nn.Conv2d(16, 3, 3, padding=1))

    def denoise(self, x_noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Predicts the clean image, with EDM preconditioning.

        The skip/output scalings make the untrained network start near "return the input",
        so a brief fit goes into removing noise rather than into learning the identity.

        Args:
            x_noisy: ``(N, 3, H, W)`` noisy images in the ``[-1, 1]`` scale.
            sigma: ``(N,)`` their noise levels.
        Returns:
            ``(N, 3, H, W)`` the x0 estimate, ``[-1, 1]`` scale.
        """
        s = sigma[:, None, None, None]
        norm = torch.sqrt(s * s + self.sigma_data**2)
        emb = _sigma_embedding(sigma)
        h0 = self.enc0(self.stem(x_noisy / norm), emb)
        h1 = self.enc1(self.down1(h0), emb)
        h = self.mid(self.down2(h1), emb)
        h = F.interpolate(self.up2(h), scale_factor=2, mode="nearest")
        h = self.dec1(torch.cat([h, h1], dim=1), emb)
        h = F.interpolate(self.up1(h), scale_factor=2, mode="nearest")
        h = self.dec0(torch.cat([h, h0], dim=1), emb)
        c_skip = self.sigma_data**2 / norm**2
        c_out = s * self.sigma_data / norm
        return c_skip * x_noisy + c_out * self.head(h)

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        x0 = self.to_net(x)
        for sigma in self.schedule:
            level = torch.full((x.shape[0],), sigma, dtype=x.dtype)
            eps = torch.randn(x0.shape, generator=noise, dtype=x.dtype)
            x0 = self.denoise(x0 + sigma * eps, level)
        return self.from_net(x0)

    def fit_loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        self.check_input(x)
        clean = self.to_net(x)
        lo, hi = (math.log(s) for s in self.train_sigma)
        u = torch.rand((x.shape[0],), generator=noise, dtype=x.dtype)
        sigma = torch.exp(lo + (hi - lo) * u)
        eps = torch.randn(clean.shape, generator=noise, dtype=x.dtype)
        pred = self.denoise(clean + sigma[:, None, None, None] * eps, sigma)
        return self.reconstruction_loss(self.from_net(pred), x)
