"""The service's attribution rule: per-class similarity scores, a calibrated is-AI margin,
per-class acceptance for naming, and enrollment that cannot swallow real photographs.

A neighbour vote counts references, so whichever class has more references nearby wins, and
"real", the most varied class, loses to any tight generator cluster. Here every class is
scored alone: ``s_c`` is the mean cosine similarity of the query's ``k`` nearest references
*of class c* (fewer when c has fewer), so a class's reference count does not decide the answer.

- is-AI: the margin ``max_c (s_c - s_real - (t_c - t))`` over generators c, where ``t`` is the
  threshold calibrated on real validation photographs at the target false-positive rate and
  ``t_c >= t`` a generator's own, stricter threshold (set at enrollment, see below). The image
  is flagged when the margin reaches ``t``.
- label: ``real`` when not flagged; otherwise the flagged generator with the highest ``s_c``,
  or ``unknown`` when that score is below the generator's acceptance (its own images' scores
  at the calibrated ``unknown_rate``): an image of a generator the index has never seen is
  AI, but no known generator's. So ``label`` and ``is_ai`` always agree: ``real`` if and only
  if not flagged.
- enrollment: a sample set that mostly scores as real is refused; the new generator's
  acceptance comes from its own samples, leave-one-out; and its threshold ``t_c`` is raised
  until the real calibration photographs stored with the index are flagged no more often than
  before (within ``max_fpr_increase``).

Everything here is numpy: no Ray, no torch, no store.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from synthray.errors import ConfigError
from synthray.attribution.openset import UNKNOWN, fpr_threshold, quantile_threshold
from synthray.data.schema import REAL

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Thresholds:
    """The calibrated rule (stored in the index's metadata)."""

    ai_threshold: float = 0.0  # t: the is-AI margin at or above which an image is flagged
    class_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)  # t_c > t of enrolled generators
    acceptance: dict[str, float] = dataclasses.field(default_factory=dict)  # min s_c to be named c (else unknown)
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)  # how they were chosen, what was measured

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Thresholds":
        d = copy.deepcopy(dict(d or {}))  # never share nested dicts with a cached metadata read
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"Thresholds: unknown keys {sorted(unknown)} (an index calibrated by an older "
                "synthray: rebuild it with `synthray index`)"
            )
        return cls(**d)

    def threshold_of(self, generator: str) -> float:
        return max(self.ai_threshold, self.class_thresholds.get(generator, self.ai_threshold))


@dataclasses.dataclass
class ClassScores:
    """Per-class scores of N queries over C classes."""

    classes: list[str]  # columns
    scores: np.ndarray  # (N, C) mean similarity of each class's nearest references; -inf: class has none

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 2 or self.scores.shape[1] != len(self.classes):
            raise ValueError(f"scores must be (N, {len(self.classes)}), got {self.scores.shape}")

    @property
    def real_col(self) -> int | None:
        return self.classes.index(REAL) if REAL in self.classes else None

    def real_score(self) -> np.ndarray:
        """(N,) ``s_real``; -inf when the index holds no real reference."""
        col = self.real_col
        return self.scores[:, col] if col is not None else np.full(len(self.scores), -np.inf)

    def margins(self, t: Thresholds) -> np.ndarray:
        """(N, C) ``s_c - s_real - (t_c - t)``; -inf in the real column and for absent classes."""
        with np.errstate(invalid="ignore"):  # -inf - -inf: a class absent beside an absent real
            out = np.nan_to_num(self.scores - self.real_score()[:, None], nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        if self.real_col is None:  # no real reference: nothing to weigh against, every image looks AI
            out = np.where(np.isfinite(self.scores), np.inf, -np.inf)
        for j, name in enumerate(self.classes):
            if name == REAL:
                out[:, j] = -np.inf
            elif name in t.class_thresholds:
                out[:, j] -= t.threshold_of(name) - t.ai_threshold
        return out

    def is_ai_score(self, t: Thresholds) -> np.ndarray:
        """(N,) the is-AI score: the largest per-generator margin (flagged when >= ``t.ai_threshold``)."""
        m = self.margins(t)
        return m.max(axis=1) if m.shape[1] else np.full(len(m), -np.inf)


def class_scores(
    hits: Sequence[Mapping[str, Sequence[float]]], classes: Sequence[str] | None = None, k: int | None = None
) -> ClassScores:
    """Per-class scores from each query's per-class neighbour similarities.

    Args:
        hits: per query, ``{class: similarities of its nearest references, most similar first}``.
        classes: the columns (default: every class seen, sorted).
        k: use at most the first k similarities of each class (None = all given).
    """
    names = list(classes) if classes is not None else sorted({c for h in hits for c in h})
    col = {c: j for j, c in enumerate(names)}
    scores = np.full((len(hits), len(names)), -np.inf)
    for i, h in enumerate(hits):
        for c, sims in h.items():
            if c in col and len(sims):
                scores[i, col[c]] = float(np.mean(np.asarray(sims, dtype=np.float64)[:k]))
    return ClassScores(names, scores)


def topk_mean(similarities: np.ndarray, k: int) -> np.ndarray:
    """(N, M) similarities to M references of one class -> (N,) mean of each row's k largest."""
    sims = np.asarray(similarities, dtype=np.float64)
    kk = min(k, sims.shape[1])
    if kk == 0:
        return np.full(len(sims), -np.inf)
    return -np.mean(np.partition(-sims, kk - 1, axis=1)[:, :kk], axis=1)


@dataclasses.dataclass
class Decision:
    """The rule's answer for N queries (arrays, for evaluation at scale)."""

    labels: list[str]  # real | a generator | unknown
    nearest: list[str]  # the best-scoring generator (also when the label is real or unknown)
    is_ai: np.ndarray  # (N,) bool
    is_ai_score: np.ndarray  # (N,) the margin of :meth:`ClassScores.is_ai_score`
    generator_score: np.ndarray  # (N,) s_c of the nearest generator
    reasons: list[str | None]  # "far" when flagged but below every acceptance, else None


def decide(cs: ClassScores, t: Thresholds, open_set: bool = True) -> Decision:
    """Applies the rule to per-class scores (see the module docstring)."""
    margins = cs.margins(t)
    n = len(cs.scores)
    gen_cols = [j for j, c in enumerate(cs.classes) if c != REAL]
    score = cs.is_ai_score(t)
    flagged = score >= t.ai_threshold
    if gen_cols:
        # Among the generators whose own threshold the image meets, the most similar one; when
        # none meets it, the most similar generator overall (reported as "nearest").
        gs = cs.scores[:, gen_cols]
        meets = margins[:, gen_cols] >= t.ai_threshold
        best_meeting = np.where(meets, gs, -np.inf).argmax(axis=1)
        best_any = gs.argmax(axis=1)
        pick = np.where(meets.any(axis=1), best_meeting, best_any)
        nearest = [cs.classes[gen_cols[j]] for j in pick]
        gscore = gs[np.arange(n), pick]
    else:
        nearest, gscore = [UNKNOWN] * n, np.full(n, -np.inf)
    labels: list[str] = []
    reasons: list[str | None] = []
    for i in range(n):
        if not flagged[i]:
            labels.append(REAL)
            reasons.append(None)
        elif open_set and gscore[i] < t.acceptance.get(nearest[i], -np.inf):
            labels.append(UNKNOWN)
            reasons.append("far")
        else:
            labels.append(nearest[i])
            reasons.append(None)
    return Decision(labels, nearest, flagged, score, gscore, reasons)


def calibrate(
    cs: ClassScores, true_labels: Sequence[str], target_fpr: float, unknown_rate: float, k: int
) -> Thresholds:
    """The rule's thresholds from validation images of the indexed classes.

    Args:
        cs: their per-class scores against the index.
        true_labels: their classes.
        target_fpr: share of real validation photographs allowed to be flagged.
        unknown_rate: share of each generator's validation images allowed to come out unknown.
        k: the k the scores were computed with (recorded).
    Returns:
        :class:`Thresholds` with a ``calibration`` record (rates measured at the thresholds,
        and a ``warning`` when no threshold flags anything at the target).
    """
    y = np.asarray([str(c) for c in true_labels], dtype=object)
    if len(y) != len(cs.scores):
        raise ValueError(f"{len(y)} labels for {len(cs.scores)} queries")
    t = Thresholds()
    real = y == REAL
    score = cs.is_ai_score(t)
    record: dict[str, Any] = {
        "queries": int(len(y)),
        "real_queries": int(real.sum()),
        "k": k,
        "target_fpr": target_fpr,
        "unknown_rate_target": unknown_rate,
        "warning": None,
    }
    if real.any():
        t.ai_threshold = fpr_threshold(score[real], target_fpr)
        if (~real).any() and t.ai_threshold > score[~real].max():
            record["warning"] = (
                f"no is-AI threshold keeps real validation false positives at {target_fpr:.0%} and flags any "
                "generated validation image: the encoder does not separate real from AI here"
            )
            log.warning("is-AI calibration: %s", record["warning"])
    else:
        record["warning"] = "no real validation images: the is-AI threshold is not calibrated"
        log.warning("is-AI calibration: %s", record["warning"])
    for j, name in enumerate(cs.classes):
        own = (y == name) & np.isfinite(cs.scores[:, j])
        if name != REAL and own.any():
            t.acceptance[name] = quantile_threshold(cs.scores[own, j], unknown_rate)
    d = decide(cs, t)
    flagged = d.is_ai
    record.update(
        {
            "fpr": float(flagged[real].mean()) if real.any() else None,
            "tpr": float(flagged[~real].mean()) if (~real).any() else None,
            "unknown_rate": float(np.mean([lab == UNKNOWN for lab, yy in zip(d.labels, y) if yy != REAL]))
            if (~real).any()
            else None,
            "named_right": float(np.mean([lab == yy for lab, yy in zip(d.labels, y) if yy != REAL]))
            if (~real).any()
            else None,
        }
    )
    t.calibration = record
    return t


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


@dataclasses.dataclass
class Attribution:
    """The answer for one image."""

    label: str  # "real", a generator name, or "unknown"
    nearest_class: str  # the best-scoring generator (also when the label is real or unknown)
    is_ai_score: float  # the is-AI margin; flagged when >= the calibrated threshold
    is_ai: bool  # label != "real"
    confidence: float  # the winning class's score minus the runner-up's (0: a tie)
    mean_similarity: float  # the label's class score s_c (for "unknown": the nearest generator's)
    unknown_reason: str | None  # "far" | "empty_index" | None
    votes: dict[str, float]  # every class's score s_c (classes with references)
    neighbours: list[dict[str, Any]]  # [{generator, similarity, origin, source_path}], nearest first

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attribute(
    hits: Sequence[Mapping[str, Sequence[float]]],
    neighbours: Sequence[Sequence[Any]],
    t: Thresholds | None,
    k: int,
    open_set: bool = True,
) -> list[Attribution]:
    """Attributions of N queries.

    Args:
        hits: per query, each class's nearest-reference similarities (the store's ``class_hits``).
        neighbours: per query, its nearest references overall, nearest first (evidence shown
            with the answer; objects with ``generator``, ``similarity``, ``origin``, ``source_path``).
        t: the calibrated thresholds (None: an uncalibrated index, is-AI margin threshold 0).
        k: references per class.
        open_set: answer "unknown" below a generator's acceptance.
    """
    t = t or Thresholds()
    cs = class_scores(hits, k=k)
    out: list[Attribution] = []
    if not cs.classes:
        return [Attribution(UNKNOWN, UNKNOWN, 0.0, False, 0.0, 0.0, "empty_index", {}, []) for _ in hits]
    d = decide(cs, t, open_set)
    for i in range(len(hits)):
        row = cs.scores[i]
        finite = np.sort(row[np.isfinite(row)])[::-1]
        label = d.labels[i]
        own = row[cs.classes.index(label)] if label in cs.classes else d.generator_score[i]
        out.append(
            Attribution(
                label=label,
                nearest_class=d.nearest[i],
                is_ai_score=float(d.is_ai_score[i]),
                is_ai=bool(d.is_ai[i]),
                confidence=float(finite[0] - finite[1]) if len(finite) > 1 else 1.0,
                mean_similarity=float(own),
                unknown_reason=d.reasons[i],
                votes={c: float(x) for c, x in zip(cs.classes, row) if np.isfinite(x)},
                neighbours=[
                    {
                        "generator": nb.generator,
                        "similarity": float(nb.similarity),
                        "origin": getattr(nb, "origin", ""),
                        "source_path": getattr(nb, "source_path", ""),
                    }
                    for nb in neighbours[i]
                ],
            )
        )
    return out
