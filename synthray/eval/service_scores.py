"""The test images scored as the service answers them: detection and open-set metrics of
the attributions, and the service's figures (specificity, held-out generators flagged,
open-set AUROC/OSCR, the enrollment effect) from :mod:`synthray.eval.openset`."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthray.eval.config import EvalConfig
from synthray.eval.data import embed_rows
from synthray.eval.protocols import Protocol
from synthray.eval.selection import Selection


def score_open_set(protocol: Protocol, truth: list[str], attributions: list, threshold: float) -> dict[str, Any]:
    """Detection (``{}`` when the protocol has no real class) and open-set metrics of
    ``attributions`` against ``truth``, flagged at the is-AI ``threshold``."""
    from synthray.eval.metrics import detection_metrics, open_set_metrics

    pred = [a.label for a in attributions]
    return {
        "detection": detection_metrics(truth, [a.is_ai_score for a in attributions], threshold, protocol.real)
        if protocol.real
        else {},
        "open_set": open_set_metrics(
            truth,
            pred,
            protocol.indexed,
            protocol.seen,
            protocol.zero_shot,
            novelty_scores=[1 - a.mean_similarity for a in attributions],
        ),
    }


def service_figures(
    cfg: EvalConfig,
    sel: Selection,
    embedder: Any,
    store: Any,
    attributor: Any,
    test_emb: np.ndarray,
    test_hits: list,
    truth: list[str],
    attributions: list,
) -> dict[str, Any]:
    """Specificity, held-out generators flagged, open-set AUROC/OSCR, and the enrollment effect
    (:mod:`synthray.eval.openset`)."""
    from synthray.attribution.rule import Thresholds
    from synthray.eval.openset import enrollment_effect, open_set_scores, specificity_and_flags

    protocol = sel.protocol
    novel = list(protocol.novel)
    t = attributor.thresholds or Thresholds()
    out: dict[str, Any] = {
        "at_threshold": specificity_and_flags(
            [a.label for a in attributions], np.asarray([a.is_ai for a in attributions]), truth, novel
        ),
        "open_set": open_set_scores(test_hits, truth, protocol.indexed, t),
        "calibration_warning": t.calibration.get("warning") if attributor.thresholds else "no calibrated thresholds",
    }
    if sel.enroll is not None and len(sel.enroll):
        emb = embed_rows(embedder, sel.files, sel.enroll, cfg.batch_size, what="enrollment")
        groups = {f: emb[sel.enroll.generator == f] for f in novel if (sel.enroll.generator == f).sum() >= 2}
        real = store.calibration_vectors()
        out["enrollment"] = enrollment_effect(
            test_hits,
            test_emb,
            truth,
            groups,
            real,
            store.class_hits(real, attributor.cfg.k) if len(real) else [],
            t,
            attributor.cfg,
            {f: store.class_hits(v, attributor.cfg.k) for f, v in groups.items()},
        )
    return out
