"""The thesis's closed set (3.5.3): an exact in-memory kNN over the index's reference rows,
plus as many of every test class the index lacks, which always names a class; and the
reference sample-size sweep (4.4) over the same reference embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthray.attribution.config import AttributionConfig
from synthray.eval.config import EvalConfig
from synthray.eval.selection import Selection


class ClosedSetKnn:
    """The thesis's closed-set kNN: an exact kNN over the index's reference rows (the smallest
    content hashes), plus as many of every class the index lacks; it always names a class."""

    def __init__(self, cfg: EvalConfig, sel: Selection, ref_emb: np.ndarray, rule: AttributionConfig) -> None:
        self.refs = sel.refs.capped(cfg.per_class)
        self.idx = np.flatnonzero(np.isin(sel.refs.content_hash, self.refs.content_hash))
        self._vectors, self._labels = ref_emb[self.idx], sel.refs.generator[self.idx]
        self._k, self._weighted = rule.k, rule.vote == "weighted"
        self._classes = list(sel.protocol.test_classes)

    def predict(self, vectors: np.ndarray) -> list[str]:
        """(N, D) unit embeddings -> N class names."""
        from synthray.eval.sweep import knn_predict

        return knn_predict(self._vectors, self._labels, vectors, self._k, self._weighted, self._classes).labels()


def closed_set_and_sweep(
    cfg: EvalConfig,
    sel: Selection,
    knn: ClosedSetKnn,
    closed: list[str],
    ref_emb: np.ndarray,
    test_emb: np.ndarray,
    rule: AttributionConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The closed-set metrics of the test images' kNN answers, and the reference sample-size sweep."""
    from synthray.eval.metrics import closed_set_metrics
    from synthray.eval.sweep import sample_size_sweep

    protocol, truth = sel.protocol, list(sel.test.generator)
    closed_set = closed_set_metrics(truth, closed, list(protocol.test_classes), protocol.seen, protocol.zero_shot)
    closed_set["references_per_class"] = knn.refs.counts()
    sweep = (
        sample_size_sweep(
            ref_emb,
            sel.refs.generator,
            test_emb,
            truth,
            protocol.seen,
            protocol.zero_shot,
            cfg.sweep_sizes,
            rule,
            repeats=cfg.sweep_repeats,
            small_k=cfg.sweep_small_k,
            seed=cfg.seed,
        )
        if cfg.sweep_sizes
        else []
    )
    return closed_set, sweep
