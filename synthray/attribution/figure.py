"""The calibration as a picture: where the thresholds fall among the scores they were chosen on.

Left, the is-AI score of the real and the generated calibration images with the is-AI
threshold: how far apart the two are is how well the encoder tells real from AI. Right, each
generator's own score on its own calibration images with its acceptance (below it the
answer is ``unknown``): a generator whose dots sit far below its line is one the encoder
barely recognises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from synthray.attribution.rule import ClassScores, Thresholds
from synthray.data.schema import REAL
from synthray.plots import pyplot, save_figure


def calibration_figure(cs: ClassScores, true_labels: Sequence[str], t: Thresholds, path: str | Path) -> Path:
    """Draws the calibration of ``t`` on the scores ``cs`` of images of ``true_labels``; returns the path."""
    plt = pyplot()
    y = np.asarray([str(c) for c in true_labels], dtype=object)
    score = cs.is_ai_score(t)
    finite = np.isfinite(score)
    real = (y == REAL) & finite
    fake = (y != REAL) & finite
    generators = [c for c in cs.classes if c != REAL and (y == c).any()]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, max(3.6, 0.22 * len(generators) + 1.2)), gridspec_kw={"width_ratios": [1, 1.3]}
    )
    values = score[real | fake]
    bins = np.linspace(values.min(), values.max(), 40) if len(values) and values.min() < values.max() else 20
    if real.any():
        ax.hist(score[real], bins=bins, alpha=0.6, color="tab:blue", label=f"real ({real.sum()})")
    if fake.any():
        ax.hist(score[fake], bins=bins, alpha=0.6, color="tab:red", label=f"generated ({fake.sum()})")
    if np.isfinite(t.ai_threshold):
        ax.axvline(t.ai_threshold, color="black", linestyle="--", label=f"is-AI threshold {t.ai_threshold:.3f}")
    cal = t.calibration or {}
    rates = [f"{name} {cal[key]:.0%}" for name, key in (("FPR", "fpr"), ("TPR", "tpr")) if cal.get(key) is not None]
    ax.set_title("is-AI score (largest margin over real)" + (f": {', '.join(rates)}" if rates else ""), fontsize=9)
    ax.set_xlabel("score")
    ax.set_ylabel("calibration images")
    ax.legend(fontsize=8)

    for i, name in enumerate(generators):
        own = cs.scores[y == name, cs.classes.index(name)]
        own = own[np.isfinite(own)]
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, len(own))
        bx.scatter(own, i + jitter, s=8, alpha=0.6, color="tab:red")
        if name in t.acceptance:
            bx.plot([t.acceptance[name]] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
    bx.set_yticks(range(len(generators)))
    bx.set_yticklabels(generators, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("similarity to its own references")
    bx.set_title("each generator's images and its acceptance (|): left of it, unknown", fontsize=9)
    return save_figure(fig, path)
