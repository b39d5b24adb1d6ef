"""An index build's calibration: the open-set and is-AI thresholds from validation images of
the indexed classes, scored against the store, and the real photographs kept for enrollment's
checks (:mod:`synthray.attribution.rule` decides; this module feeds it the store's scores)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthray.attribution.config import AttributionConfig
from synthray.data.schema import REAL
from synthray.index.config import IndexConfig
from synthray.index.selection import Choice
from synthray.index.sink import ReferenceSink
from synthray.index.store import CALIBRATION, BaseStore

log = logging.getLogger(__name__)


def calibrate_store(
    store: Any,
    vectors: np.ndarray,
    true_labels: Sequence[str],
    attribution: AttributionConfig,
    figure: Path | None = None,
) -> tuple[Any, str | None]:
    """The rule's thresholds from queries of known classes, scored against ``store``.

    Args:
        store: the reference store (already holding the references).
        vectors: (N, D) query embeddings.
        true_labels: N true classes (each indexed).
        attribution: k, unknown rate and target FPR.
        figure: where to draw the scores and the chosen thresholds (PNG); None: no figure.
    Returns:
        (:class:`~synthray.attribution.rule.Thresholds`, the figure's path or None when none
        was drawn).
    """
    from synthray.attribution.rule import calibrate, class_scores

    hits = store.class_hits(np.asarray(vectors, dtype=np.float32), attribution.k)
    classes = sorted(store.counts())
    cs = class_scores(hits, classes)
    thresholds = calibrate(cs, true_labels, attribution.target_fpr, attribution.unknown_rate, attribution.k)
    drawn = None
    if figure is not None:
        from synthray.attribution.figure import calibration_figure
        from synthray.plots import draw_safely

        drawn = draw_safely("calibration figure", calibration_figure, cs, true_labels, thresholds, figure)
    return thresholds, str(drawn) if drawn else None


def keep_real_calibration(store: BaseStore, vectors: np.ndarray, sink: ReferenceSink) -> None:
    """Stores the real calibration photographs (origin ``calibration``, never searched as
    references): enrollment checks against them that a new generator flags no more of them."""
    from synthray.index.store import Reference

    real = [i for i, lab in enumerate(sink.cal_labels) if lab == REAL]
    if real:
        store.upsert(
            vectors[real],
            [Reference(REAL, True, sink.cal_hashes[i], split=sink.cal_split, origin=CALIBRATION) for i in real],
        )


def calibration_gap(cal: Choice, cfg: IndexConfig) -> dict[str, Any]:
    """Says which classes calibration has no images for (all of them: no thresholds)."""
    lacking = sorted(c for c, h in cal.hashes.items() if not h)
    if cal.total == 0:
        log.warning(
            "split %r has no images of the indexed classes: no open-set thresholds stored; the index "
            "answers closed-set only (never 'unknown') until it is calibrated",
            cfg.calibration_split,
        )
        return {"skipped": f"no images of the indexed classes in split {cfg.calibration_split!r}"}
    if lacking:
        log.warning(
            "calibration split %r has no images of %s: thresholds come from the other classes",
            cfg.calibration_split,
            lacking,
        )
    return {"classes_without_queries": lacking}
