"""``evaluate(cfg)``: a checkpoint and a protocol in, a report folder out.

Steps (each logged with its time):

1. resolve the protocol against the checkpoint and the classes in the shards;
2. embed the test split (capped per class) and the reference split's rows of every test
   class (the in-memory kNN of the closed-set numbers and the sweep draws from them);
3. build the index of the protocol's indexed classes with
   :func:`synthray.index.build.build_index` (which also calibrates and stores the
   open-set and is-AI thresholds), or reuse one that already matches;
4. attribute the test images through the store with the stored thresholds, exactly as the
   service does (:class:`synthray.attribution.Attributor`);
5. metrics, the sample-size sweep, robustness, explanations of a few attributions
   (:mod:`synthray.eval.explain`), figures; ``report.json`` (every number and every
   prediction), ``report.md``, ``config.yaml``.

Zero-shot classes are scored two ways (see ``report.md``'s notes):

- open set (the product): the index holds only the indexed classes; a zero-shot image
  is right when it comes out "unknown";
- closed set (the thesis, 3.5.3: its kNN was fitted on embeddings of all classes, the
  encoder never saw the zero-shot ones): every test class gets ``per_class`` references
  in an exact in-memory kNN that always names a class; P/R/F1 are macro-averaged
  separately over seen and zero-shot classes, as the thesis's Table 4.3.

The steps live beside this module: :mod:`~synthray.eval.selection` (the protocol and the
rows), :mod:`~synthray.eval.index_prep` (the index), :mod:`~synthray.eval.service_scores`
(the open set, as the service answers), :mod:`~synthray.eval.closed_set` (the closed set
and the sweep), :mod:`~synthray.eval.robustness_scores`; this module runs them in order and
writes the report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import yaml

from synthray.eval.closed_set import ClosedSetKnn, closed_set_and_sweep
from synthray.eval.config import EvalConfig
from synthray.eval.data import RowSet, embed_rows
from synthray.eval.eval_report import EvalReport, ImagePrediction
from synthray.eval.eval_report import summarize as summarize  # re-exported: the CLI and the demo import it here
from synthray.eval.index_prep import EvalError as EvalError  # re-exported: the CLI and synthray.eval import it here
from synthray.eval.index_prep import prepare_index, store_config
from synthray.eval.robustness_scores import robustness_scores
from synthray.eval.selection import select_evaluation
from synthray.eval.service_scores import score_open_set, service_figures
from synthray.index.config import StoreConfig

log = logging.getLogger(__name__)


def _predictions(rows: RowSet, attributions: list, closed: list[str] | None) -> list[ImagePrediction]:
    """One report row per test image: its service answer, and its closed-set one when scored."""
    return [
        ImagePrediction(
            content_hash=rows.content_hash[i],
            source_path=rows.source_path[i],
            true=rows.generator[i],
            predicted=a.label,
            nearest=a.nearest_class,
            closed_set=closed[i] if closed is not None else None,
            is_ai_score=a.is_ai_score,
            is_ai=bool(a.is_ai),
            mean_similarity=a.mean_similarity,
            agreement=a.confidence,
            unknown_reason=a.unknown_reason,
        )
        for i, a in enumerate(attributions)
    ]


class _Laps:
    """Wall time of each step since the previous one, logged as each step ends."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.times: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._last, 2)
        self._last = now
        log.info("evaluate: %s done in %.1f s", name, self.times[name])

    def total(self) -> dict[str, float]:
        return {**self.times, "total": round(time.perf_counter() - self.start, 2)}


def evaluate(cfg: EvalConfig) -> EvalReport:
    """Runs one evaluation into ``cfg.out`` (see the module docstring).

    Args:
        cfg: the evaluation config.
    Returns:
        the report (also written to ``<out>/report.json``, as :meth:`EvalReport.to_dict`).
    Raises:
        ProtocolError: the protocol does not fit the checkpoint or the shards.
        EvalError: a configured store that cannot be used.
        CheckpointError / FileNotFoundError: no checkpoint / no shards.
    """
    from synthray.attribution.attributor import Attributor
    from synthray.attribution.embedder import Embedder
    from synthray.attribution.rule import attribute
    from synthray.config import to_dict
    from synthray.eval.explain import explain_test_images, explanation_facts
    from synthray.eval.report import write_figures
    from synthray.eval.robustness import parse_degradation
    from synthray.index.store import open_store

    for spec in cfg.degradations:  # a typo fails before minutes of embedding
        parse_degradation(spec)
    laps = _Laps()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size)
    sel = select_evaluation(cfg, embedder)
    protocol, test, refs = sel.protocol, sel.test, sel.refs
    notes = list(protocol.notes)
    if sel.missing_refs:
        notes.append(f"no reference images of {sel.missing_refs}: closed-set numbers and the sweep are skipped")
    laps("protocol")
    index_info = prepare_index(cfg, protocol, embedder, sel.index_counts)  # before embedding: fail fast
    laps("index")
    test_emb = embed_rows(embedder, sel.files, test, cfg.batch_size, what=cfg.test_split)
    laps("embed test")
    ref_emb = embed_rows(embedder, sel.files, refs, cfg.batch_size, what="reference")
    laps("embed references")

    truth = list(test.generator)
    store_cfg, _ = store_config(cfg)
    with open_store(store_cfg, embedder.model_version, embedder.dim, create=False) as store:
        attributor = Attributor(embedder, store)
        threshold = attributor.thresholds.ai_threshold if attributor.thresholds else 0.0
        test_hits, neighbours = store.query(test_emb, attributor.cfg.k)
        attributions = attribute(
            test_hits, neighbours, attributor.thresholds, attributor.cfg.k, attributor.cfg.open_set
        )
        scores = score_open_set(protocol, truth, attributions, threshold)
        service = service_figures(cfg, sel, embedder, store, attributor, test_emb, test_hits, truth, attributions)
        laps("attribute and enroll")

        knn = ClosedSetKnn(cfg, sel, ref_emb, attributor.cfg)
        closed = None if sel.missing_refs else knn.predict(test_emb)
        closed_set, sweep = (
            closed_set_and_sweep(cfg, sel, knn, closed, ref_emb, test_emb, attributor.cfg)
            if closed is not None
            else (None, None)
        )
        laps("closed set and sweep")
        rob_rows = test.capped(cfg.robustness_max_per_class)
        robustness = robustness_scores(
            cfg, sel, embedder, attributor, threshold, rob_rows, test_emb, knn if closed is not None else None
        )
        laps("robustness")
        thresholds = attributor.thresholds.to_dict() if attributor.thresholds else None
        rule = to_dict(attributor.cfg)
        index = {**index_info, "counts": store.counts(), "collection": store.collection}

    # Toward the explained class's references as the index holds them (knn.idx: the index's rows).
    explained = explain_test_images(
        embedder, sel.files, test, attributions, protocol, ref_emb[knn.idx], refs.generator[knn.idx], cfg.explain
    )
    explanations = explanation_facts(explained, test, attributions) if explained else None
    if explained:
        laps("explain")

    report = EvalReport(
        protocol=protocol,
        checkpoint=embedder.describe(),
        test_split=cfg.test_split,
        test_counts=test.counts(),
        reference_counts=refs.counts(),
        notes=notes,
        detection=scores["detection"],
        open_set=scores["open_set"],
        service=service,
        closed_set=closed_set,
        sweep=sweep,
        robustness=robustness,
        robustness_images=len(rob_rows),
        thresholds=thresholds,
        attribution_rule=rule,
        index=index,
        explanations=explanations,
        predictions=_predictions(test, attributions, closed),
    )
    if cfg.figures:
        report.figures = write_figures(report, test_emb, truth, out, cfg, explained)
        laps("figures")
    report.timings = laps.total()
    _write_report(report, cfg, store_cfg, out)
    log.info("evaluation written to %s (%.1f s)", out, report.timings["total"])
    return report


def _write_report(report: EvalReport, cfg: EvalConfig, store_cfg: StoreConfig, out: Path) -> None:
    """``config.yaml`` (the resolved settings), ``report.json`` and ``report.md``."""
    from synthray.config import to_dict
    from synthray.eval.report import write_markdown

    resolved = {"eval": to_dict(cfg), "resolved_protocol": report.protocol.to_dict(), "store": to_dict(store_cfg)}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
