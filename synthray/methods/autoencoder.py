"""003's convolutional autoencoder, used to reconstruct images before classification.

003 (§4.4) passes every image through an autoencoder so a classifier sees a "basal
reconstruction" that drops some generator-specific high-frequency detail. Its shape:

- encoder: Conv(3->32, 3x3, stride 2, pad 1) ReLU, Conv(32->64, 3x3, stride 2, pad 1) ReLU,
  flatten, Linear(64 * R/4 * R/4 -> latent) (4096 -> 2048 at 003's 32 px);
- decoder: Linear(latent -> 64 * R/4 * R/4), bilinear x2, ConvTranspose(64->32, 3x3, stride 1,
  pad 1) ReLU, bilinear x2, ConvTranspose(32->3, 3x3, stride 1, pad 1), tanh;
- inputs scaled to [-1, 1]; trained with mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAutoencoder(nn.Module):
    """003's autoencoder for (N, 3, R, R) images in [0, 1] (R divisible by 4).

    Args:
        resolution: R.
        latent_dim: bottleneck size (003: 2048).
    Raises:
        ValueError: R not divisible by 4, or a non-positive latent size.
    """

    def __init__(self, resolution: int, latent_dim: int = 2048) -> None:
        super().__init__()
        if resolution % 4 or resolution < 4 or latent_dim < 1:
            raise ValueError(f"need a resolution divisible by 4 and latent_dim >= 1, got {resolution}, {latent_dim}")
        self.resolution = resolution
        self.grid = resolution // 4
        flat = 64 * self.grid * self.grid
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(flat, latent_dim),
        )
        self.expand = nn.Linear(latent_dim, flat)
        self.up1 = nn.ConvTranspose2d(64, 32, 3, stride=1, padding=1)
        self.up2 = nn.ConvTranspose2d(32, 3, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs images.

        Args:
            x: (N, 3, R, R) images in [0, 1].
        Returns:
            (N, 3, R, R) reconstructions in [0, 1].
        Raises:
            ValueError: on a shape other than the one the autoencoder was built for.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.resolution, self.resolution):
            raise ValueError(f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        z = self.encoder(x * 2.0 - 1.0)
        h = self.expand(z).view(-1, 64, self.grid, self.grid)
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.relu(self.up1(h))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        return (torch.tanh(self.up2(h)) + 1.0) / 2.0


def train_autoencoder(
    model: ConvAutoencoder, batches, steps: int, lr: float = 1e-3, log_every: int = 50
) -> list[float]:
    """Fits ``model`` by MSE on the images of ``batches``.

    Args:
        model: the autoencoder (on the batches' device).
        batches: an iterator of dicts with "image" (N, 3, R, R) float [0, 1].
        steps: optimizer steps.
        lr: Adam learning rate.
        log_every: steps between log lines (0 = none).
    Returns:
        the loss of every step.
    """
    from synthray.methods.base import adam_steps

    def loss_of(batch: dict) -> torch.Tensor:
        x = batch["image"]
        # MSE on 003's [-1, 1] scale, which is 4x the [0, 1] one.
        return F.mse_loss(model(x) * 2.0 - 1.0, x * 2.0 - 1.0)

    model.train()
    losses = adam_steps(model.parameters(), lr, batches, steps, loss_of, "autoencoder", log_every)
    model.eval()
    return losses
