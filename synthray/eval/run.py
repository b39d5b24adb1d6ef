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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from synthray.attribution.config import AttributionConfig
from synthray.eval.config import EvalConfig
from synthray.eval.data import RowSet, available, embed_rows, select_rows
from synthray.eval.eval_report import EvalReport, ImagePrediction
from synthray.eval.eval_report import summarize as summarize  # re-exported: the CLI and the demo import it here
from synthray.eval.protocols import CheckpointInfo, Protocol, resolve_protocol
from synthray.index.config import IndexConfig, StoreConfig

log = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """The evaluation cannot run as configured (the message says what to change)."""


def store_config(cfg: EvalConfig) -> tuple[StoreConfig, bool]:
    """The store to use, and whether it is the evaluation's private one (``<out>/index``)."""
    if cfg.store.url is None and not cfg.store.path:
        return dataclasses.replace(cfg.store, path=str(Path(cfg.out) / "index")), True
    return cfg.store, False


def _index_mismatch(
    store_cfg: StoreConfig, embedder: Any, expected: dict[str, int], attribution: AttributionConfig | None
) -> tuple[str | None, str | None]:
    """(why the store cannot serve as is and only needs a build, why it cannot serve at all)."""
    from synthray.config import to_dict
    from synthray.index.store import StoreError, open_store

    try:
        store = open_store(store_cfg, embedder.model_version, embedder.dim, create=False)
    except StoreError as exc:
        if "no collection" in str(exc):
            return "no index for this model version yet", None
        raise
    with store:
        counts = store.counts()
        meta = store.metadata()
    foreign = sorted(set(counts) - set(expected))
    enrolled = sorted(c for c, n in counts.items() if n.get("enrolled"))
    extra = sorted(c for c, n in counts.items() if c in expected and n.get("trained", 0) > expected[c])
    if foreign or enrolled or extra:
        return None, (
            f"it holds classes {foreign} outside the protocol's {sorted(expected)}"
            if foreign
            else f"it holds enrolled references of {enrolled}"
            if enrolled
            else f"it holds more references of {extra} than per_class chooses"
        )
    if attribution is not None and meta.get("attribution") != to_dict(attribution):
        return None, f"its rule {meta.get('attribution')} differs from the configured {to_dict(attribution)}"
    short = sorted(c for c, n in expected.items() if counts.get(c, {}).get("trained", 0) < n)
    if short:
        return f"references of {short} missing", None
    if not meta.get("thresholds"):
        return "no calibrated thresholds", None
    return None, None


def _ray_initialized() -> bool:
    try:
        import ray
    except ImportError:  # the GPU benchmark machine has no Ray; use_ray=False works there
        return False
    return ray.is_initialized()


def prepare_index(cfg: EvalConfig, protocol: Protocol, embedder: Any, expected: dict[str, int]) -> dict[str, Any]:
    """Builds the index of ``protocol.indexed`` (``build_index``) unless a matching one exists.

    A private index (``<out>/index``) that does not match is deleted and rebuilt; a
    configured store is only added to (missing references, calibration), never changed
    in a way that would alter what its other users get: that is an :class:`EvalError`.
    """
    from synthray.index.build import build_index

    store_cfg, private = store_config(cfg)
    build_reason, conflict = _index_mismatch(store_cfg, embedder, expected, cfg.attribution)
    if conflict and not private:
        raise EvalError(
            f"the index at {store_cfg.url or store_cfg.path} cannot be used for {protocol.name}: "
            f"{conflict}; point eval.store at a fresh folder (or leave store.path empty for a private "
            "index under the run folder)"
        )
    if conflict:
        log.info("private index does not match (%s): rebuilding it", conflict)
        shutil.rmtree(store_cfg.path, ignore_errors=True)
        build_reason = conflict
    if build_reason is None:
        log.info("reusing the index at %s", store_cfg.url or store_cfg.path)
        return {"reused": True, "store": store_cfg.url or str(Path(store_cfg.path).resolve())}
    log.info("building the index (%s)", build_reason)
    icfg = IndexConfig(
        checkpoint=str(embedder.checkpoint),
        shards=cfg.shards,
        split=cfg.reference_split,
        per_class=cfg.per_class,
        real_per_class=cfg.real_per_class,
        classes=tuple(protocol.indexed),
        batch_size=cfg.batch_size,
        device=cfg.device,
        calibration_split=cfg.calibration_split,
        calibration_per_class=cfg.calibration_per_class,
        calibration_real=cfg.calibration_real,
        store=store_cfg,
    )
    ray_was_up = _ray_initialized()
    try:
        summary = build_index(icfg, attribution=cfg.attribution, use_ray=cfg.use_ray)
    finally:
        if cfg.use_ray and not ray_was_up and _ray_initialized():
            import ray

            ray.shutdown()  # build_index started it for this evaluation: stop what was started here
    return {"reused": False, "reason": build_reason, **summary}


def _service_figures(
    cfg: EvalConfig,
    sel: "_Selection",
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


def _predictions(rows: RowSet, attributions: list, closed: list[str] | None) -> list[ImagePrediction]:
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


def _score_open_set(protocol: Protocol, truth: list[str], attributions: list, threshold: float) -> dict[str, Any]:
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


@dataclasses.dataclass
class _Selection:
    """What one evaluation reads: the protocol and the rows of each role."""

    protocol: Protocol
    files: list[str]
    test: RowSet  # the test images (capped per class)
    refs: RowSet  # reference rows of every test class that has some (in-memory kNN, sweep)
    index_counts: dict[str, int]  # references per indexed class the index build chooses
    missing_refs: list[str]  # test classes without reference rows (no closed set, no sweep)
    enroll: RowSet | None  # validation images of the novel generators, enrolled in memory


def _select(cfg: EvalConfig, embedder: Any) -> _Selection:
    from synthray.data.pipeline import find_shards
    from synthray.data.manifest import read_labels
    from synthray.index.selection import choose_rows, reference_caps

    files = find_shards(cfg.shards)
    labels = read_labels(files)
    ref_available = available(labels, cfg.reference_split)
    protocol = resolve_protocol(
        cfg.protocol, CheckpointInfo.from_embedder(embedder), available(labels, cfg.test_split), ref_available
    )
    log.info(
        "protocol %s: indexed %s, zero-shot %s, novel %s",
        protocol.name,
        list(protocol.indexed),
        list(protocol.zero_shot),
        list(protocol.novel),
    )
    classes = list(protocol.test_classes)
    with_refs = [c for c in classes if ref_available.get(c, 0) > 0]
    every_ref = set(select_rows(labels, cfg.reference_split, with_refs).content_hash)
    return _Selection(
        protocol=protocol,
        files=files,
        # No test image may be its own reference (the same bytes in both splits).
        test=select_rows(labels, cfg.test_split, classes, cfg.max_test_per_class, exclude=every_ref),
        refs=select_rows(labels, cfg.reference_split, with_refs, _reference_cap(cfg)),
        index_counts={
            c: len(h)
            for c, h in choose_rows(
                labels,
                cfg.reference_split,
                protocol.indexed,
                reference_caps(protocol.indexed, cfg.per_class, cfg.real_per_class),
            ).hashes.items()
        },
        missing_refs=[c for c in classes if c not in with_refs],
        enroll=select_rows(labels, cfg.calibration_split, list(protocol.novel), cfg.enroll_per_class)
        if cfg.enroll_per_class and protocol.novel
        else None,
    )


def _reference_cap(cfg: EvalConfig) -> int | None:
    """References per class held in memory: at least the index's ``per_class`` (the closed
    set uses exactly the index's rows), else ``reference_max_per_class``."""
    caps = [cfg.reference_max_per_class, None if cfg.per_class == "all" else int(cfg.per_class)]
    return None if None in caps else max(caps)


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
    sel = _select(cfg, embedder)
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
        scores = _score_open_set(protocol, truth, attributions, threshold)
        service = _service_figures(cfg, sel, embedder, store, attributor, test_emb, test_hits, truth, attributions)
        laps("attribute and enroll")

        knn = _ClosedSetKnn(cfg, sel, ref_emb, attributor.cfg)
        closed = None if sel.missing_refs else knn.predict(test_emb)
        closed_set, sweep = (
            _closed_set_and_sweep(cfg, sel, knn, closed, ref_emb, test_emb, attributor.cfg)
            if closed is not None
            else (None, None)
        )
        laps("closed set and sweep")
        rob_rows = test.capped(cfg.robustness_max_per_class)
        robustness = _robustness(
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


class _ClosedSetKnn:
    """The thesis's closed-set kNN: an exact kNN over the index's reference rows (the smallest
    content hashes), plus as many of every class the index lacks; it always names a class."""

    def __init__(self, cfg: EvalConfig, sel: _Selection, ref_emb: np.ndarray, rule: AttributionConfig) -> None:
        self.refs = sel.refs.capped(cfg.per_class)
        self.idx = np.flatnonzero(np.isin(sel.refs.content_hash, self.refs.content_hash))
        self._vectors, self._labels = ref_emb[self.idx], sel.refs.generator[self.idx]
        self._k, self._weighted = rule.k, rule.vote == "weighted"
        self._classes = list(sel.protocol.test_classes)

    def predict(self, vectors: np.ndarray) -> list[str]:
        from synthray.eval.sweep import knn_predict

        return knn_predict(self._vectors, self._labels, vectors, self._k, self._weighted, self._classes).labels()


def _closed_set_and_sweep(
    cfg: EvalConfig,
    sel: _Selection,
    knn: _ClosedSetKnn,
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


def _robustness(
    cfg: EvalConfig,
    sel: _Selection,
    embedder: Any,
    attributor: Any,
    threshold: float,
    rob_rows: RowSet,
    test_emb: np.ndarray,
    knn: _ClosedSetKnn | None,
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
        res = _score_open_set(protocol, rob_truth, attributor.attribute_vectors(vectors), threshold)
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


def _write_report(report: EvalReport, cfg: EvalConfig, store_cfg: StoreConfig, out: Path) -> None:
    """``config.yaml`` (the resolved settings), ``report.json`` and ``report.md``."""
    from synthray.config import to_dict
    from synthray.eval.report import write_markdown

    resolved = {"eval": to_dict(cfg), "resolved_protocol": report.protocol.to_dict(), "store": to_dict(store_cfg)}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
