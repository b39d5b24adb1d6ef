"""Augmentations as a config list, from a small registry.

Each step works on one (3, H, W) float tensor with values in [0, 255]. Steps marked
``geometric`` see the decoded image before the resize (a random resized crop must pick
from the original pixels); the rest run on the resized image. JPEG re-compression and
blur matter for robustness: social platforms re-encode and downscale what they host,
and the detector should not depend on a pristine fingerprint.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from synthray.config import AugmentConfig
from synthray.registry import Registry

Step = Callable[[torch.Tensor], torch.Tensor]
# name -> (factory(generator, **params) -> step, geometric)
_REGISTRY: Registry[tuple[Callable[..., Step], bool]] = Registry("augmentation")


def register_augmentation(name: str, geometric: bool = False) -> Callable:
    """Registers a factory ``factory(generator, **params) -> step`` under ``name``."""

    def deco(factory: Callable[..., Step]) -> Callable[..., Step]:
        _REGISTRY.register(name)((factory, geometric))
        return factory

    return deco


def list_augmentations() -> list[str]:
    return _REGISTRY.names()


@dataclasses.dataclass
class AugmentPipeline:
    before_resize: list[Step]
    after_resize: list[Step]


def _uniform(g: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _with_probability(step: Step, p: float, g: torch.Generator | None) -> Step:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
    if p >= 1.0:
        return step

    def maybe(img: torch.Tensor) -> torch.Tensor:
        return step(img) if torch.rand((), generator=g).item() < p else img

    return maybe


def build_augmentations(cfgs: Sequence[AugmentConfig], generator: torch.Generator | None = None) -> AugmentPipeline:
    """Builds the configured steps in order.

    Args:
        cfgs: steps from the config; ``name`` selects the registered factory.
        generator: torch RNG for reproducible draws (None uses the global RNG).
    Returns:
        the steps split into before- and after-resize lists, each in config order.
    Raises:
        ValueError: on an unknown name; TypeError on parameters the step does not take.
    """
    pipe = AugmentPipeline([], [])
    for cfg in cfgs:
        factory, geometric = _REGISTRY.get(cfg.name)
        step = _with_probability(factory(generator, **cfg.params), cfg.p, generator)
        (pipe.before_resize if geometric else pipe.after_resize).append(step)
    return pipe


@register_augmentation("hflip")
def hflip(generator: torch.Generator | None) -> Step:
    """Horizontal flip (combine with ``p`` for a random flip)."""
    return lambda img: img.flip(-1)


@register_augmentation("random_resized_crop", geometric=True)
def random_resized_crop(
    generator: torch.Generator | None,
    scale: Sequence[float] = (0.5, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> Step:
    """Crops a random area share in ``scale`` with aspect ratio in ``ratio`` (Inception-style).

    The crop is not resized here: the following resize brings it to the output side.
    """
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"random_resized_crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    log_r = (math.log(ratio[0]), math.log(ratio[1]))

    def step(img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        area = h * w
        for _ in range(10):
            target = area * _uniform(generator, lo, hi)
            aspect = math.exp(_uniform(generator, *log_r))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=generator))
                left = int(torch.randint(0, w - cw + 1, (), generator=generator))
                return img[..., top : top + ch, left : left + cw]
        return img  # no valid crop drawn: keep the whole image rather than distort it

    return step


@register_augmentation("jpeg")
def jpeg(generator: torch.Generator | None, quality: Sequence[int] = (30, 95)) -> Step:
    """Re-encodes as JPEG at a quality drawn uniformly from ``quality`` (inclusive)."""
    q_lo, q_hi = int(quality[0]), int(quality[1])
    if not 1 <= q_lo <= q_hi <= 100:
        raise ValueError(f"jpeg quality must satisfy 1 <= lo <= hi <= 100, got {quality}")

    def step(img: torch.Tensor) -> torch.Tensor:
        q = int(torch.randint(q_lo, q_hi + 1, (), generator=generator))
        u8 = img.round().clamp(0, 255).to(torch.uint8).cpu()
        out = decode_jpeg(encode_jpeg(u8, quality=q))
        return out.to(img.device, torch.float32)

    return step


@register_augmentation("gaussian_blur")
def gaussian_blur(generator: torch.Generator | None, sigma: Sequence[float] = (0.1, 2.0)) -> Step:
    """Separable Gaussian blur with sigma drawn uniformly from ``sigma``."""
    s_lo, s_hi = float(sigma[0]), float(sigma[1])
    if not 0 < s_lo <= s_hi:
        raise ValueError(f"gaussian_blur sigma must satisfy 0 < lo <= hi, got {sigma}")

    def step(img: torch.Tensor) -> torch.Tensor:
        return blur(img, _uniform(generator, s_lo, s_hi))

    return step


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (..., C, H, W) float image: torchvision's separable kernel over
    three standard deviations each side (at least 3 taps), edges reflected."""
    from torchvision.transforms.v2 import functional as TF

    k = 2 * max(1, int(math.ceil(3 * sigma))) + 1
    return TF.gaussian_blur(img, kernel_size=[k, k], sigma=[sigma, sigma])
