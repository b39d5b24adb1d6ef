"""The check before a generator is enrolled: refuse a sample set that sits inside the real
photographs, and calibrate the new generator's acceptance (leave-one-out on its samples) and
its own is-AI threshold ``t_c``, raised until the real calibration photographs stored with the
index are flagged no more often than before (within ``max_fpr_increase``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from synthray.attribution.scores import ClassScores, topk_mean
from synthray.attribution.decision import decide
from synthray.attribution.openset import quantile_threshold
from synthray.attribution.thresholds import Thresholds
from synthray.data.schema import REAL


class EnrollmentRefused(ValueError):
    """The samples of an enrollment look like real photographs (or cannot be calibrated)."""


@dataclasses.dataclass
class EnrollmentCheck:
    """What enrolling a sample set would do, before anything is written."""

    generator: str
    samples: int
    looks_real: float  # share of the samples inside real: answered "real", as close to real as real photographs
    acceptance: float  # the generator's acceptance, leave-one-out from its samples
    threshold: float  # its is-AI threshold t_c (>= t)
    samples_flagged: float  # share of its samples flagged with t_c, leave-one-out
    real_fpr_before: float | None  # real calibration photographs flagged before / after
    real_fpr_after: float | None
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_enrollment(
    generator: str,
    samples: np.ndarray,
    sample_scores: ClassScores,
    real_scores: ClassScores | None,
    real_vectors_sims: np.ndarray | None,
    t: Thresholds,
    k: int,
    unknown_rate: float,
    max_fpr_increase: float = 0.005,
    max_looks_real: float = 0.5,
) -> EnrollmentCheck:
    """Calibrates a generator about to be enrolled, or refuses it.

    Args:
        generator: its name.
        samples: (n, D) unit embeddings of its samples (already in the index for this
            generator or not; they are compared with each other leave-one-out).
        sample_scores: the samples' per-class scores against the index *without* them.
        real_scores: the real calibration photographs' per-class scores against the index
            without the samples (None when the index stores none).
        real_vectors_sims: (R, n) similarities of those photographs to the samples.
        t: the current thresholds.
        k: neighbours per class.
        unknown_rate: the share of its own images allowed to come out unknown.
        max_fpr_increase: how much more often real calibration photographs may be flagged.
        max_looks_real: refuse when more than this share of the samples is answered real.
    Returns:
        the check; its ``acceptance`` and ``threshold`` go into the thresholds when enrolled.
    Raises:
        EnrollmentRefused: the samples sit inside real, or there are too few to calibrate.
    """
    n = len(samples)
    if n < 2:
        raise EnrollmentRefused(f"enrolling {generator!r} needs at least 2 samples to calibrate, got {n}")
    warnings: list[str] = []
    before = decide(sample_scores, t)
    answered_real = np.asarray([lab == REAL for lab in before.labels])
    if real_scores is not None and len(real_scores.scores):
        # "Inside real": answered real, and as close to the real references as real photographs
        # are (all but the least typical tenth of the calibration photographs). A generator far
        # from everything the index knows is answered real by the margin alone, but is not
        # inside real: it is enrolled, and its threshold then keeps real photographs safe.
        typical = quantile_threshold(real_scores.real_score(), 0.1)
        answered_real &= sample_scores.real_score() >= typical
    looks_real = float(np.mean(answered_real))
    if looks_real > max_looks_real:
        raise EnrollmentRefused(
            f"{looks_real:.0%} of the {n} samples of {generator!r} are answered 'real' by the index: the set sits "
            "inside the real photographs (are they real images, or is the generator too close to real for this "
            "encoder?); nothing was enrolled"
        )
    if looks_real > 0:
        warnings.append(f"{looks_real:.0%} of the samples look real to the index before enrollment")
    # Leave-one-out: each sample against the others, as a future image of the generator would be.
    sims = np.asarray(samples, dtype=np.float64) @ np.asarray(samples, dtype=np.float64).T
    np.fill_diagonal(sims, -np.inf)  # never its own neighbour
    own = topk_mean(sims, min(k, n - 1))
    acceptance = quantile_threshold(own, unknown_rate)
    threshold = t.ai_threshold
    fpr_before = fpr_after = None
    if real_scores is not None and real_vectors_sims is not None and len(real_vectors_sims):
        base = decide(real_scores, t).is_ai
        fpr_before = float(base.mean())
        margin = topk_mean(real_vectors_sims, k) - real_scores.real_score()
        # The smallest t_c >= t whose added flags keep the real FPR within the allowance.
        allowed = int(np.floor((fpr_before + max_fpr_increase) * len(base) + 1e-9)) - int(base.sum())
        extra = np.sort(margin[~base])[::-1]  # the photographs this generator could newly flag
        if allowed < len(extra):
            threshold = max(threshold, float(extra[max(allowed, 0)]) + 1e-6)
        fpr_after = float(np.mean(base | (margin >= threshold)))
    sample_margin = own - sample_scores.real_score()
    flagged = float(np.mean(sample_margin >= threshold))
    if flagged < 1 - 2 * unknown_rate:
        warnings.append(
            f"only {flagged:.0%} of the samples clear the threshold that keeps real photographs "
            "safe: many of this generator's images will be answered 'real'"
        )
    return EnrollmentCheck(
        generator, n, looks_real, float(acceptance), float(threshold), flagged, fpr_before, fpr_after, warnings
    )
