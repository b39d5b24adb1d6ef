"""Settings of the explanations (``synthray.methods.explain``), kept free of torch so that
configs which embed them (``synthray.eval.config``) import without it."""

from __future__ import annotations


from synthray.typed_config import config_dataclass

EXPLAIN_KINDS = ("saliency", "lime")


@config_dataclass
class ExplainConfig:
    """LIME-style occlusion settings (saliency has none)."""

    n_segments: int = 40
    """SLIC superpixels asked for (SLIC may return a few more or fewer)"""
    compactness: float = 10.0
    """SLIC: higher = squarer superpixels, lower = closer to colour edges"""
    n_samples: int = 300
    """occluded views scored (001 used 10,000 per image; 300 is stable at 40 segments)"""
    keep_prob: float = 0.5
    """chance each superpixel stays visible in a view"""
    kernel_width: float = 0.25
    """LIME's exponential kernel on the cosine distance to the unoccluded mask"""
    ridge_alpha: float = 1.0
    """ridge penalty of the surrogate linear model"""
    blur_sigma: float | None = None
    """occluded pixels take this Gaussian blur of the image; None = R / 8"""
    batch_size: int = 64
    """views per forward pass"""
    seed: int = 0
    """same seed, same views"""

    def __post_init__(self) -> None:
        if self.n_segments < 2 or self.n_samples < 10 or not 0 < self.keep_prob < 1:
            raise ValueError("need n_segments >= 2, n_samples >= 10 and 0 < keep_prob < 1")
