"""003's perturbation augmentation: Gaussian blur, random resized crop and colour jitter.

003 (§4.3) applies all three to a training image with probability 0.8, so that a
classifier cannot lean on small generator "glitches" alone. The parameters are not given
in the paper; these are torchvision's usual ones.
"""

from __future__ import annotations


import torch
from torchvision.transforms import v2

from synthray.typed_config import config_dataclass


@config_dataclass
class PerturbConfig:
    """003's perturbations (all applied together, with probability ``p``)."""

    p: float = 0.8
    """probability an image is perturbed (003: 80%)"""
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    """Gaussian blur sigma range"""
    blur_kernel: int = 5
    """blur kernel side (odd)"""
    crop_scale: tuple[float, float] = (0.5, 1.0)
    """random resized crop: area share kept"""
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    """brightness, contrast, saturation, hue"""


class Perturb:
    """Callable ``(N, 3, R, R) float [0, 1] -> same shape``, perturbing each image independently.

    Args:
        cfg: the perturbation settings.
        resolution: R (the crop is resized back to it).
    Raises:
        ValueError: on a probability outside [0, 1] or an even blur kernel.
    """

    def __init__(self, cfg: PerturbConfig, resolution: int) -> None:
        if not 0.0 <= cfg.p <= 1.0:
            raise ValueError(f"perturbation probability must lie in [0, 1], got {cfg.p}")
        if cfg.blur_kernel < 1 or cfg.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd and positive, got {cfg.blur_kernel}")
        self.cfg = cfg
        b, c, s, h = cfg.jitter
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(resolution, scale=tuple(cfg.crop_scale), antialias=True),
                v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h),
                v2.GaussianBlur(cfg.blur_kernel, sigma=tuple(cfg.blur_sigma)),
            ]
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, R, R) images, got {tuple(images.shape)}")
        chosen = torch.rand(images.shape[0]) < self.cfg.p
        if not bool(chosen.any()):
            return images
        out = images.clone()
        for i in torch.nonzero(chosen).flatten().tolist():
            out[i] = self.transform(images[i]).clamp(0.0, 1.0)
        return out
