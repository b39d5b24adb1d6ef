"""Latent autoencoders: the decode step of latent-diffusion and VQ generators.

Latent diffusion (Rombach et al. 2022) produces every image by decoding a latent through a
KL-regularised autoencoder, and VQ-based generators (VQ-VAE, VQGAN, VQ-Diffusion) decode a grid
of codebook entries; the decoder's fingerprint is in every image they make. These two families
reconstruct real crops through such decoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.blocks import ResBlock, conv_encoder
from synthray.data.synthbench.registry import register_family


@register_family("kl_vae")
class KLAutoencoder(GeneratorFamily):
    """LDM-style KL autoencoder: GroupNorm ResBlocks, a sampled 4-channel latent at 1/4 size."""

    architecture = (
        "latent-diffusion style KL-VAE: ResBlock encoder -> sampled 4-ch latent (/4) -> deep "
        "ResBlock decoder with nearest 2x upsample + conv (output = decode of a posterior sample)"
    )
    stride = 4
    latent_channels = 4
    kl_weight = 1e-5  # small, as in LDM: the latent must stay informative

    def __init__(self) -> None:
        super().__init__()
        zc = self.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            ResBlock(32, 32),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            ResBlock(64, 64),
            nn.GroupNorm(8, 64),
            nn.SiLU(),
            nn.Conv2d(64, 2 * zc, 3, padding=1),
        )
        # Deep decoder, upsampling as the LDM decoder does (nearest + conv), ResBlocks at
        # every scale but the last (where they would cost most of the budget).
        self.decoder = nn.Sequential(
            nn.Conv2d(zc, 64, 3, padding=1),
            ResBlock(64, 64),
            ResBlock(64, 64),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(64, 32, 3, padding=1),
            ResBlock(32, 32),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.GroupNorm(8, 16),
            nn.SiLU(),
            nn.Conv2d(16, 3, 3, padding=1),
        )

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        mean, logvar = self.encoder(self.to_net(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    def _sample(self, mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn(mean.shape, generator=noise, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = self._posterior(x)
        return self.from_net(self.decoder(self._sample(mean, logvar, noise)))

    def fit_loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        mean, logvar = self._posterior(x)
        recon = self.from_net(self.decoder(self._sample(mean, logvar, noise)))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return self.reconstruction_loss(recon, x) + self.kl_weight * kl


@register_family("vq_vae")
class VQAutoencoder(GeneratorFamily):
    """VQ-VAE (van den Oord et al. 2017): codebook-quantised 1/4-size grid, residual stack,
    transposed-conv decoder straight to RGB."""

    architecture = (
        "VQ-VAE: conv encoder (/4) -> nearest codebook entry (256 x 8-d, straight-through, warm-started) -> "
        "residual stack -> two ConvTranspose2d(k=4, s=2) straight to RGB"
    )
    stride = 4
    codebook_size = 256
    code_dim = 8  # low-dimensional codes are used more evenly (Yu et al. 2022, ViT-VQGAN)
    commitment = 0.25  # beta of the VQ-VAE loss

    def __init__(self) -> None:
        super().__init__()
        self.encoder = conv_encoder((16, 32, 64), self.code_dim)
        self.codebook = nn.Parameter(torch.randn(self.codebook_size, self.code_dim) * 0.1)
        self.pre = nn.Conv2d(self.code_dim, 64, 3, padding=1)
        self.res = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 1)) for _ in range(2)
        )
        self.up = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),
        )
        self._fit_steps = 0  # fit_loss calls so far (selects warm-up or VQ training)
        self._warmup_steps = 0  # the first third of the fit: no quantisation (set by prepare)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encoder(self.to_net(x))

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        n, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        index = torch.cdist(flat, self.codebook).argmin(dim=1)
        return self.codebook[index].reshape(n, h, w, c).permute(0, 3, 1, 2)

    def _decode(self, q: torch.Tensor) -> torch.Tensor:
        h = self.pre(q)
        for block in self.res:
            h = h + block(h)
        return self.from_net(self.up(h))

    def _init_codebook(self, z: torch.Tensor, noise: torch.Generator) -> None:
        # Codebook entries start as encoder outputs of real crops, so every code is in use
        # (a brief fit cannot revive dead codes).
        with torch.no_grad():
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
            if flat.shape[0] >= self.codebook_size:
                pick = torch.randperm(flat.shape[0], generator=noise)[: self.codebook_size]
            else:
                pick = torch.randint(0, flat.shape[0], (self.codebook_size,), generator=noise)
            self.codebook.copy_(flat[pick])

    def prepare(self, x: torch.Tensor, noise: torch.Generator, steps: int) -> None:
        self._fit_steps = 0
        self._warmup_steps = steps // 3
        self._init_codebook(self._encode(x), noise)

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        z = self._encode(x)
        q = self._quantize(z)
        return self._decode(z + (q - z).detach())

    def fit_loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        z = self._encode(x)
        step = self._fit_steps
        self._fit_steps = step + 1
        if step < self._warmup_steps:
            # Plain autoencoder first: quantising a random encoder's output from step 0
            # collapses onto a few codes (gray, blurry output) within a short fit.
            return self.reconstruction_loss(self._decode(z), x)
        if step == self._warmup_steps:
            self._init_codebook(z, noise)  # restart the codes from the trained encoder
        q = self._quantize(z)
        recon = self._decode(z + (q - z).detach())  # straight-through gradient to the encoder
        codebook = F.mse_loss(q, z.detach())
        commit = F.mse_loss(z, q.detach())
        return self.reconstruction_loss(recon, x) + codebook + self.commitment * commit
