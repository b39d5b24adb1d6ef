"""Explanations of a score: gradient saliency and LIME-style superpixel occlusion.

Both explain a differentiable score ``f(images (N, 3, R, R)) -> (N,)``: a classifier's
logit, or for an attribution the cosine similarity of the image's embedding to the
predicted class's references (the direction its neighbours lie in).

- Saliency (Simonyan et al. 2014; 003 §4.6): ``|df/dx|``, max over colour channels.
- LIME-style occlusion (Ribeiro et al. 2016; 001 §5 explains its embeddings with LIME):
  SLIC superpixels; random subsets of them are replaced by a blurred copy of the image; the
  score of every such view is regressed (ridge, weighted by closeness to the original) on
  which superpixels were kept. A superpixel's weight is how much the score drops without it.

:func:`explain_attribution` is the entry point for the Serve app's optional ``explain``
field: an :class:`~synthray.attribution.embedder.Embedder`, the image bytes and the
reference vectors of the predicted class in, an :class:`Explanation` (JSON via ``to_dict``) out.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthray.data.augment import blur
from synthray.methods.explain_config import EXPLAIN_KINDS, ExplainConfig  # noqa: F401 - re-exported here

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class LimeResult:
    """Superpixel weights of one image."""

    segments: np.ndarray  # (H, W) int superpixel id of every pixel, ids 0..S-1
    weights: np.ndarray  # (S,) surrogate-model weight of each superpixel (score units)
    intercept: float  # the surrogate's score with every superpixel occluded
    r2: float  # weighted R^2 of the surrogate on the views (how linear the score is in the superpixels)

    @property
    def map(self) -> np.ndarray:
        """(H, W) each pixel's superpixel weight."""
        return self.weights[self.segments]


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float (3, H, W) image tensor, got {getattr(image, 'shape', type(image))}")


def saliency_map(score_fn: ScoreFn, image: torch.Tensor) -> np.ndarray:
    """``|d score / d pixel|``, max over channels, scaled to [0, 1].

    Args:
        score_fn: differentiable ``(N, 3, H, W) -> (N,)`` (its modules in eval mode).
        image: (3, H, W) float image on the score function's device.
    Returns:
        (H, W) float32 map in [0, 1] (all zeros when the gradient is zero).
    """
    _check_image(image)
    x = image.detach()[None].clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(score_fn(x).sum(), x)
    m = grad.abs().amax(dim=1)[0].float().cpu().numpy()
    top = float(m.max())
    return (m / top if top > 0 else m).astype(np.float32)


def superpixels(image: torch.Tensor, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels of a (3, H, W) image (min-max scaled for SLIC's colour space): (H, W) ids 0..S-1."""
    from skimage.segmentation import slic

    arr = image.detach().float().permute(1, 2, 0).cpu().numpy()
    lo, hi = arr.min(), arr.max()
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    seg = slic(arr, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
    # Consecutive ids even if SLIC skipped some.
    _, ids = np.unique(seg, return_inverse=True)
    return ids.reshape(seg.shape).astype(np.int64)


def lime_map(score_fn: ScoreFn, image: torch.Tensor, cfg: ExplainConfig | None = None) -> LimeResult:
    """LIME-style superpixel occlusion.

    Args:
        score_fn: ``(N, 3, H, W) -> (N,)`` (gradients are not needed).
        image: (3, H, W) float image on the score function's device.
        cfg: settings.
    Returns:
        the superpixels and their weights.
    """
    from sklearn.linear_model import Ridge

    cfg = cfg or ExplainConfig()
    _check_image(image)
    image = image.detach()
    segments = superpixels(image, cfg.n_segments, cfg.compactness)
    n_seg = int(segments.max()) + 1
    baseline = blur(image, cfg.blur_sigma or image.shape[-1] / 8.0)
    rng = np.random.default_rng(cfg.seed)
    masks = rng.random((cfg.n_samples, n_seg)) < cfg.keep_prob
    masks[0] = True  # the unoccluded image anchors the surrogate
    seg_t = torch.as_tensor(segments, device=image.device)
    scores = []
    with torch.no_grad():
        for s in range(0, len(masks), cfg.batch_size):
            keep = torch.as_tensor(masks[s : s + cfg.batch_size], device=image.device)[:, seg_t]  # (B, H, W)
            views = torch.where(keep[:, None], image[None], baseline[None])
            scores.append(score_fn(views).float().cpu())
    y = torch.cat(scores).numpy().astype(np.float64)
    kept = masks.sum(axis=1)
    distance = 1.0 - kept / np.sqrt(np.maximum(kept, 1) * n_seg)  # cosine distance to the all-kept mask
    weights = np.sqrt(np.exp(-(distance**2) / cfg.kernel_width**2))
    model = Ridge(alpha=cfg.ridge_alpha).fit(masks.astype(np.float64), y, sample_weight=weights)
    r2 = float(model.score(masks.astype(np.float64), y, sample_weight=weights))
    return LimeResult(segments, model.coef_.astype(np.float32), float(model.intercept_), r2)


def _png_b64(values: np.ndarray, signed: bool) -> str:
    from PIL import Image

    v = np.asarray(values, dtype=np.float64)
    top = float(np.abs(v).max()) or 1.0
    scaled = (v / top + 1.0) / 2.0 if signed else np.clip(v / top, 0, 1)
    buf = io.BytesIO()
    Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclasses.dataclass
class Explanation:
    """Why an image scored as it did; every map is (R, R) at the model's input resolution."""

    score: float  # the explained score of the unoccluded image (cosine similarity for attributions)
    saliency: np.ndarray | None = None  # (R, R) in [0, 1]
    lime: LimeResult | None = None

    def to_dict(self, encoding: str = "png") -> dict[str, Any]:
        """JSON-able form.

        Args:
            encoding: "png": maps as base64 8-bit grayscale PNGs (saliency 0..1 -> 0..255;
                LIME weights signed, 128 = 0, scaled by the largest |weight|); "list": nested
                lists of floats (and superpixel ids).
        Returns:
            {"score", "resolution", "saliency", "lime": {"map", "segments", "weights",
            "intercept", "r2"}} with absent parts left out.
        """
        if encoding not in ("png", "list"):
            raise ValueError(f"encoding must be 'png' or 'list', got {encoding!r}")
        out: dict[str, Any] = {"score": round(self.score, 6)}
        if self.saliency is not None:
            out["resolution"] = int(self.saliency.shape[-1])
            out["saliency"] = (
                _png_b64(self.saliency, signed=False) if encoding == "png" else np.round(self.saliency, 4).tolist()
            )
        if self.lime is not None:
            out["resolution"] = int(self.lime.segments.shape[-1])
            out["lime"] = {
                "map": _png_b64(self.lime.map, signed=True)
                if encoding == "png"
                else np.round(self.lime.map, 6).tolist(),
                "weights": np.round(self.lime.weights, 6).tolist(),
                "intercept": round(self.lime.intercept, 6),
                "r2": round(self.lime.r2, 4),
            }
            if encoding == "list":
                out["lime"]["segments"] = self.lime.segments.tolist()
        return out


def explain_score(
    score_fn: ScoreFn, image: torch.Tensor, kinds: Sequence[str] = EXPLAIN_KINDS, cfg: ExplainConfig | None = None
) -> Explanation:
    """Saliency and/or LIME of ``score_fn`` on one (3, R, R) image.

    Raises:
        ValueError: an unknown kind (see :data:`EXPLAIN_KINDS`) or a bad image.
    """
    unknown = sorted(set(kinds) - set(EXPLAIN_KINDS))
    if unknown or not kinds:
        raise ValueError(f"explanation kinds must be among {EXPLAIN_KINDS}, got {list(kinds)}")
    _check_image(image)
    with torch.no_grad():
        score = float(score_fn(image[None]).float()[0])
    return Explanation(
        score=score,
        saliency=saliency_map(score_fn, image) if "saliency" in kinds else None,
        lime=lime_map(score_fn, image, cfg) if "lime" in kinds else None,
    )


def similarity_score(model: torch.nn.Module, references: np.ndarray | torch.Tensor, device: torch.device) -> ScoreFn:
    """``x -> cos(model(x), unit mean of references)``.

    Args:
        model: an encoder returning (N, D) embeddings.
        references: (K, D) or (D,) reference embeddings of the class to explain.
        device: where the model runs.
    Raises:
        ValueError: on empty or non-finite references.
    """
    ref = torch.as_tensor(np.asarray(references, dtype=np.float32), device=device)
    ref = ref[None] if ref.ndim == 1 else ref
    if ref.ndim != 2 or ref.shape[0] == 0 or not bool(torch.isfinite(ref).all()):
        raise ValueError(f"references must be a finite (K>0, D) or (D,) array, got shape {tuple(ref.shape)}")
    target = F.normalize(F.normalize(ref, dim=1).mean(dim=0), dim=0)
    return lambda x: F.normalize(model(x).float(), dim=1) @ target


def explain_attribution(
    embedder: Any,
    image: bytes,
    references: np.ndarray,
    kinds: Sequence[str] = EXPLAIN_KINDS,
    cfg: ExplainConfig | None = None,
) -> Explanation:
    """Explains an attribution: which pixels make the image's embedding close to a class's references.

    Args:
        embedder: a loaded :class:`~synthray.attribution.embedder.Embedder` (its model version
            must be the one the references were embedded with).
        image: the encoded image (any format the embedder decodes).
        references: (K, D) reference vectors of the predicted class (e.g. the class's vectors
            from the store, or the attribution's neighbours of that class), or one (D,) vector.
        kinds: "saliency" and/or "lime".
        cfg: LIME settings.
    Returns:
        the :class:`Explanation`; ``to_dict()`` gives a JSON field.
    Raises:
        ValueError: undecodable image bytes, references of the wrong width, or unknown kinds.
    """
    from synthray.data.preprocess import finalize_pixels

    references = np.asarray(references, dtype=np.float32)
    if references.shape[-1] != embedder.dim:
        raise ValueError(f"references are {references.shape[-1]}-d, the embedder's vectors are {embedder.dim}-d")
    pixels = embedder.pixels([image])
    x = finalize_pixels(pixels, embedder.preprocess, embedder.device)[0]
    return explain_score(similarity_score(embedder.model, references, embedder.device), x, kinds, cfg)


def explanation_figure(
    images: Sequence[np.ndarray],
    rows: Sequence[tuple[str, Sequence[Explanation | None]]],
    titles: Sequence[str],
    path: str | Path,
) -> Path:
    """A grid: the images on top, then per row (a method) the saliency and LIME maps of each image.

    Args:
        images: (H, W, 3) float images in [0, 1].
        rows: (row name, one Explanation (or None: not explainable) per image).
        titles: one title per image.
        path: the PNG to write.
    Returns:
        the path written.
    """
    from skimage.segmentation import mark_boundaries

    from synthray.plots import pyplot, save_figure

    plt = pyplot()

    n_img = len(images)
    fig, axes = plt.subplots(1 + len(rows), 2 * n_img, figsize=(2.2 * 2 * n_img, 2.2 * (1 + len(rows))), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (img, title) in enumerate(zip(images, titles)):
        axes[0, 2 * j].imshow(img)
        axes[0, 2 * j].set_title(title, fontsize=8)
    for i, (name, exps) in enumerate(rows, start=1):
        axes[i, 0].text(-0.1, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
        for j, (img, exp) in enumerate(zip(images, exps)):
            if exp is None:
                continue
            if exp.saliency is not None:
                axes[i, 2 * j].imshow(img)
                axes[i, 2 * j].imshow(exp.saliency, cmap="inferno", alpha=0.6)
                axes[i, 2 * j].set_title(f"saliency ({exp.score:.2f})", fontsize=7)
            if exp.lime is not None:
                m = exp.lime.map
                top = float(np.abs(m).max()) or 1.0
                axes[i, 2 * j + 1].imshow(mark_boundaries(img, exp.lime.segments, color=(1, 1, 1)))
                axes[i, 2 * j + 1].imshow(m, cmap="bwr", vmin=-top, vmax=top, alpha=0.55)
                axes[i, 2 * j + 1].set_title(f"LIME (R2 {exp.lime.r2:.2f})", fontsize=7)
    return save_figure(fig, path)
