"""Report figures as PNG files (matplotlib's Agg backend: no display needed).

Each function draws one figure from report numbers or stored predictions and returns the
path it wrote.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.plots import pyplot as _plt
from synthray.plots import save_figure as _save

log = logging.getLogger(__name__)


def confusion_heatmap(conf: Mapping[str, Any], path: Path, title: str) -> Path:
    """Row-normalised heatmap of a confusion matrix, counts written in the cells."""
    plt = _plt()
    m = np.asarray(conf["matrix"], dtype=np.float64)
    rows, cols = conf["rows"], conf["columns"]
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(cols), 1.0 + 0.6 * len(rows)))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    return _save(fig, path)


def roc_curves(y_true: Sequence[str], scores: Sequence[float], real: str, path: Path, title: str) -> Path:
    """One ROC curve per generator (real vs that generator, is-AI score)."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    y = np.asarray(list(y_true), dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for generator in sorted(set(y) - {real}):
        keep = (y == real) | (y == generator)
        fpr, tpr, _ = roc_curve(y[keep] != real, s[keep])
        ax.plot(fpr, tpr, label=f"{generator} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate (real flagged AI)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def sweep_curve(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Accuracy and macro F1 (seen / zero-shot) against references per class, with std bars."""
    plt = _plt()
    labels = [str(r["size"]) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, name in (
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1"),
        ("seen_f1", "seen F1"),
        ("zero_shot_f1", "zero-shot F1"),
    ):
        y = [r.get(key) for r in rows]
        if all(v is None for v in y):
            continue
        err = [r.get(f"{key}_std") or 0 for r in rows]
        ax.errorbar(x, [np.nan if v is None else v for v in y], yerr=err, marker="o", capsize=3, label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("references per class")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def robustness_chart(results: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path:
    """Grouped bars: detection AUC and attribution accuracy, clean and per degradation."""
    plt = _plt()
    specs = list(results)
    series = {
        "detection AUC": [(results[s].get("detection") or {}).get("overall", {}).get("auc") for s in specs],
        "open-set accuracy": [results[s].get("open_set_accuracy") for s in specs],
        "closed-set accuracy": [results[s].get("closed_set_accuracy") for s in specs],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    x = np.arange(len(specs))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(3.5 + 0.9 * len(specs), 4))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [np.nan if v is None else v for v in values], width, label=name)
    ax.set_xticks(x, specs, rotation=30, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: the bars reach the top
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def umap_plot(
    embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str, seed: int = 0, max_points: int = 3000
) -> Path | None:
    """2-D UMAP (cosine metric) of embeddings coloured by class; None when too few points.

    UMAP needs a neighbourhood: below 10 points there is nothing meaningful to draw.
    """
    labels = np.asarray(list(labels), dtype=object)
    n = len(embeddings)
    if n < 10:
        log.info("UMAP skipped: %d points", n)
        return None
    rng = np.random.default_rng(seed)
    if n > max_points:
        pick = np.sort(rng.choice(n, size=max_points, replace=False))
        embeddings, labels, n = embeddings[pick], labels[pick], max_points
    import torch
    import umap

    from synthray.models.knn import knn_search

    # Exact cosine neighbours handed to UMAP (self first, at distance 0): exact at any n,
    # and it skips compiling UMAP's approximate search, most of its first-call cost.
    x = np.asarray(embeddings, dtype=np.float32)
    k = min(15, n - 1)
    sims, idx = knn_search(torch.from_numpy(x), torch.from_numpy(x), k)
    dists = np.clip(1 - sims.numpy(), 0, 2).astype(np.float32)
    dists[:, 0] = 0.0
    reducer = umap.UMAP(
        n_neighbors=k, metric="cosine", random_state=seed, n_jobs=1, precomputed_knn=(idx.numpy(), dists, None)
    )
    with warnings.catch_warnings():  # "no search index: transform unavailable" (a plot never transforms)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*", category=UserWarning)
        xy = reducer.fit_transform(x)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for c in sorted(set(labels)):
        keep = labels == c
        ax.scatter(xy[keep, 0], xy[keep, 1], s=8, alpha=0.7, label=str(c))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return _save(fig, path)


def explanation_grid(
    images: Sequence[np.ndarray], explanations: Sequence[Any], titles: Sequence[str], path: Path
) -> Path:
    """One column per explained image: the image, its saliency overlay, its LIME overlay.

    Args:
        images: (R, R, 3) float images in [0, 1] (the encoder's input pixels).
        explanations: one :class:`~synthray.methods.explain.Explanation` per image (all of
            the same kinds).
        titles: one title per column.
        path: the PNG to write.
    """
    from skimage.segmentation import mark_boundaries

    plt = _plt()
    kinds = [k for k in ("saliency", "lime") if getattr(explanations[0], k) is not None]
    fig, axes = plt.subplots(
        1 + len(kinds), len(images), figsize=(2.6 * len(images), 2.5 * (1 + len(kinds))), squeeze=False
    )
    for j, (img, exp, title) in enumerate(zip(images, explanations, titles)):
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].imshow(img, interpolation="nearest")
        axes[0, j].set_title(title, fontsize=7)
        for i, kind in enumerate(kinds, start=1):
            ax = axes[i, j]
            if kind == "saliency":
                ax.imshow(img, interpolation="nearest")
                ax.imshow(exp.saliency, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            else:  # superpixel weights, red = the score rests on it, blue = it pulls the score down
                top = float(np.abs(exp.lime.weights).max()) or 1.0
                ax.imshow(mark_boundaries(img, exp.lime.segments, color=(1, 1, 1)), interpolation="nearest")
                ax.imshow(exp.lime.map, cmap="bwr", vmin=-top, vmax=top, alpha=0.55)
                ax.set_xlabel(f"LIME R2 {exp.lime.r2:.2f}", fontsize=7)
        if j == 0:
            for i, kind in enumerate(("input", *kinds)):
                axes[i, 0].set_ylabel(kind, fontsize=9)
    return _save(fig, path)
