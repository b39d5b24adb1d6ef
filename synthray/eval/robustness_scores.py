"""The evaluation's robustness table: the open set (and the closed set, when it is scored)
on a capped sample of the test images, clean and under each configured degradation
(:mod:`synthray.eval.robustness` degrades and re-embeds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthray.eval.closed_set import ClosedSetKnn
from synthray.eval.config import EvalConfig
from synthray.eval.data import RowSet, embed_rows
from synthray.eval.selection import Selection
from synthray.eval.service_scores import score_open_set


def robustness_scores(
    cfg: EvalConfig,
    sel: Selection,
    embedder: Any,
    attributor: Any,
    threshold: float,
    rob_rows: RowSet,
    test_emb: np.ndarray,
    knn: ClosedSetKnn | None,
) -> dict[str, Any]:
    """Scores of ``rob_rows`` clean and under each degradation (``{}`` without degradations);
    ``knn``: the closed set, scored too when given."""
    from synthray.eval.metrics import closed_set_metrics
    from synthray.eval.robustness import run_robustness

    if not cfg.degradations:
        return {}
    protocol = sel.protocol
    rob_truth = list(rob_rows.generator)

    def score(vectors: np.ndarray) -> dict[str, Any]:
        res = score_open_set(protocol, rob_truth, attributor.attribute_vectors(vectors), threshold)
        row = {
            "detection": res["detection"],
            "open_set_accuracy": res["open_set"]["accuracy"],
            "open_set_seen_f1": (res["open_set"]["macro"]["seen"] or {}).get("f1"),
        }
        if knn is not None:
            row["closed_set_accuracy"] = closed_set_metrics(
                rob_truth, knn.predict(vectors), list(protocol.test_classes), protocol.seen, protocol.zero_shot
            )["accuracy"]
        return row

    return run_robustness(
        cfg.degradations,
        lambda degrade: embed_rows(
            embedder, sel.files, rob_rows, cfg.batch_size, degrade, what=getattr(degrade, "spec", "clean")
        ),
        score,
        clean=test_emb[np.isin(sel.test.content_hash, rob_rows.content_hash)],
    )
