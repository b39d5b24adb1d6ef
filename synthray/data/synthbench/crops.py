"""Random crops of the source photographs, and the photometric jitter every image gets.

Real images and generator inputs come from the same :class:`CropSampler` (different random
streams), so the two share content and colour statistics. Every crop is resampled to the
output side with a random scale and a random filter, some down (sharp, aliased a little),
some up (soft): blur alone must not tell a generator's output from a real image.

:func:`match_moments` gives each fake the per-channel mean and spread of the crop it was made
from, and :func:`jitter` is then applied to the final float image of *every* class alike, reals
and fakes, right before quantisation; it spreads colour and brightness statistics so that a
colour histogram sees the photographs' variety, not one class's tint.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from synthray.typed_config import config_dataclass

#: PIL filters a crop is resampled with, drawn uniformly (as photos on the web are).
RESAMPLE_FILTERS = (
    Image.Resampling.BOX,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
)


@config_dataclass(frozen=True)
class CropConfig:
    """How crops are drawn; the same for reals and generator inputs."""

    min_scale: float = 0.2
    """output side / source side at the most zoomed-out crop (downsampling)"""
    max_scale: float = 2.5
    """... at the most zoomed-in crop (upsampled, soft, as web images often are)"""
    hflip: float = 0.5
    """probability of a left-right flip"""
    vflip: float = 0.5
    """probability of an upside-down flip"""
    min_std: float = 0.03
    """crops flatter than this (luma std in [0, 1]) are redrawn"""
    max_tries: int = 20
    """redraws before a flat crop is accepted anyway"""


class CropSampler:
    """Draws square crops of random position, scale and flip from a set of photographs.

    Args:
        photos: loaded RGB images; each crop picks one uniformly.
        resolution: side of the returned crops.
        config: crop distribution.
    """

    def __init__(self, photos: Sequence[Image.Image], resolution: int, config: CropConfig | None = None) -> None:
        if not photos:
            raise ValueError("CropSampler needs at least one photograph")
        self.photos = list(photos)
        self.resolution = int(resolution)
        self.config = config or CropConfig()

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One crop.

        Args:
            rng: the image's own random stream (consumed in a fixed order).
        Returns:
            float32 array ``(resolution, resolution, 3)`` in ``[0, 1]``.
        """
        cfg = self.config
        crop = self._draw(rng)
        for _ in range(cfg.max_tries - 1):
            if _luma(crop).std() >= cfg.min_std:
                break
            crop = self._draw(rng)
        return crop

    def sample_batch(self, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """One crop per stream, stacked ``(N, resolution, resolution, 3)``."""
        return np.stack([self.sample(rng) for rng in rngs])

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        res = self.resolution
        photo = self.photos[int(rng.integers(len(self.photos)))]
        width, height = photo.size
        scale = math.exp(rng.uniform(math.log(cfg.min_scale), math.log(cfg.max_scale)))
        side = min(res / scale, float(width), float(height))
        # Sub-pixel box origin: crops are not aligned to the photo's pixel grid, as a
        # real resize from an arbitrary framing would not be.
        x0 = rng.uniform(0.0, width - side)
        y0 = rng.uniform(0.0, height - side)
        resample = RESAMPLE_FILTERS[int(rng.integers(len(RESAMPLE_FILTERS)))]
        flip_h = rng.random() < cfg.hflip
        flip_v = rng.random() < cfg.vflip
        img = photo.resize((res, res), resample=resample, box=(x0, y0, x0 + side, y0 + side))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if flip_h:
            arr = arr[:, ::-1]
        if flip_v:
            arr = arr[::-1]
        return np.ascontiguousarray(arr)


def _luma(img: np.ndarray) -> np.ndarray:
    # Written out rather than ``img @ weights``: no BLAS call, so no BLAS thread pool (slow to
    # wake on a busy machine) and the same arithmetic whatever BLAS is installed.
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


@config_dataclass(frozen=True)
class JitterConfig:
    """Photometric jitter applied identically to every class before quantisation."""

    brightness: float = 0.08
    """additive offset drawn from [-b, b]"""
    contrast: float = 1.3
    """multiplicative contrast around the mean, log-uniform in [1/c, c]"""
    saturation: float = 1.4
    """colourfulness factor, log-uniform in [1/s, s]"""
    gamma: float = 1.3
    """exponent, log-uniform in [1/g, g]"""
    white_balance: float = 1.08
    """per-channel gain, log-uniform in [1/w, w]"""


def _log_uniform(rng: np.random.Generator, factor: float, size: int | None = None) -> np.ndarray:
    return np.exp(rng.uniform(-math.log(factor), math.log(factor), size=size))


def draw_jitter(rng: np.random.Generator, config: JitterConfig | None = None) -> dict[str, np.ndarray]:
    """Draws one image's jitter parameters (so the draw order is fixed and explicit)."""
    cfg = config or JitterConfig()
    return {
        "brightness": np.float32(rng.uniform(-cfg.brightness, cfg.brightness)),
        "contrast": np.float32(_log_uniform(rng, cfg.contrast)),
        "saturation": np.float32(_log_uniform(rng, cfg.saturation)),
        "gamma": np.float32(_log_uniform(rng, cfg.gamma)),
        "white_balance": _log_uniform(rng, cfg.white_balance, size=3).astype(np.float32),
    }


def jitter(img: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Applies drawn jitter to one float image.

    Args:
        img: ``(H, W, 3)`` float in about ``[0, 1]`` (generator outputs may overshoot).
        params: from :func:`draw_jitter`.
    Returns:
        the jittered image, clipped to ``[0, 1]``.
    """
    img = np.clip(img, 0.0, 1.0) * params["white_balance"]
    gray = _luma(img)[..., None]
    img = gray + (img - gray) * params["saturation"]
    mean = gray.mean()
    img = (img - mean) * params["contrast"] + mean + params["brightness"]
    img = np.clip(img, 0.0, 1.0) ** params["gamma"]
    return img.astype(np.float32)


def match_moments(img: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Gives ``img`` the per-channel mean and standard deviation of ``reference``.

    A per-channel affine map: it moves no pixel relative to its neighbours, so a generator's
    spatial fingerprint is untouched, while the colour cast and contrast loss of a briefly
    fitted network (which a fully trained generator would not have) are removed.

    Args:
        img: ``(H, W, 3)`` float generator output.
        reference: ``(H, W, 3)`` float, the real crop it was generated from.
    Returns:
        float32 ``(H, W, 3)``, not clipped.
    """
    mean, std = img.mean(axis=(0, 1)), img.std(axis=(0, 1))
    ref_mean, ref_std = reference.mean(axis=(0, 1)), reference.std(axis=(0, 1))
    # A flat output channel stays flat (no division by ~0), only shifted to the right mean.
    gain = np.where(std > 1e-4, ref_std / np.maximum(std, 1e-4), 1.0)
    return ((img - mean) * gain + ref_mean).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float image -> uint8, rounding to nearest."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
