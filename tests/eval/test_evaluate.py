"""End-to-end evaluation on the session's tiny trained encoder ("dots" held out of training).

Real parts throughout: the checkpoint, the Parquet shards, the embedded Qdrant index
built by build_index, the Attributor. The report's numbers are recomputed here with
sklearn from the per-image predictions the report stores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from synthray.cli import main
from synthray.config import from_dict
from synthray.eval import EvalConfig, EvalError, ProtocolError, evaluate
from synthray.index import Reference, StoreConfig, open_store

FIGURES = {"confusion_closed_set", "confusion_open_set", "roc", "sweep", "robustness"}


def _settings(tiny_model, out, **kw):
    base = {
        "checkpoint": str(tiny_model.checkpoint),
        "shards": str(tiny_model.shards),
        "out": str(out),
        "per_class": 20,
        "real_per_class": 20,
        "calibration_per_class": 20,
        "max_test_per_class": 16,
        "batch_size": 64,
        "enroll_per_class": 12,
        "device": "cpu",
        "use_ray": False,
        "reference_max_per_class": 30,
        "sweep_sizes": [5, 10, "all"],
        "sweep_repeats": 2,
        "degradations": ["jpeg:50"],
        "robustness_max_per_class": 6,
        "umap": False,
        "attribution": {"k": 5, "vote": "weighted"},
    }
    base.update(kw)
    return base


def _check_against_predictions(report):
    """Every headline number agrees with sklearn on the stored per-image predictions."""
    preds = report["predictions"]
    y = np.array([p["true"] for p in preds])
    assert report["test_counts"] == {c: int((y == c).sum()) for c in set(y)}
    open_pred = np.array([p["predicted"] for p in preds])
    indexed = report["protocol"]["indexed"]
    target = np.where(np.isin(y, indexed), y, "unknown")
    o = report["open_set"]
    assert o["accuracy"] == pytest.approx(accuracy_score(target, open_pred), abs=1e-6)
    labels = list(o["per_class"])
    p, r, f, n = precision_recall_fscore_support(target, open_pred, labels=labels, zero_division=0)
    for i, c in enumerate(labels):
        assert o["per_class"][c]["precision"] == pytest.approx(p[i], abs=1e-6)
        assert o["per_class"][c]["recall"] == pytest.approx(r[i], abs=1e-6)
        assert o["per_class"][c]["f1"] == pytest.approx(f[i], abs=1e-6)
        assert o["per_class"][c]["support"] == n[i]
    seen = [c for c in indexed if c in report["protocol"]["seen"]]
    ref = precision_recall_fscore_support(target, open_pred, labels=seen, average="macro", zero_division=0)
    assert o["macro"]["seen"]["f1"] == pytest.approx(ref[2], abs=1e-6)
    conf = o["confusion"]
    assert np.array_equal(
        conf["matrix"],
        confusion_matrix(y, open_pred, labels=conf["columns"])[[conf["columns"].index(c) for c in conf["rows"]]],
    )

    closed = np.array([p["closed_set"] for p in preds])
    c = report["closed_set"]
    assert c["accuracy"] == pytest.approx(accuracy_score(y, closed), abs=1e-6)
    classes = report["protocol"]["test_classes"]
    ref = precision_recall_fscore_support(y, closed, labels=classes, average="macro", zero_division=0)
    assert c["macro_f1"] == pytest.approx(ref[2], abs=1e-6)

    det = report["detection"]
    score = np.array([p["is_ai_score"] for p in preds])
    threshold = report["thresholds"]["ai_threshold"]  # det["threshold"] is rounded for reading
    for gen, d in det["per_generator"].items():
        keep = (y == "real") | (y == gen)
        assert d["auc"] == pytest.approx(roc_auc_score(y[keep] != "real", score[keep]), abs=1e-6)
        assert d["accuracy"] == pytest.approx(accuracy_score(y[keep] != "real", score[keep] >= threshold), abs=1e-6)
    assert det["threshold"] == pytest.approx(report["thresholds"]["ai_threshold"], abs=1e-6)  # rounded to 6 places
    assert [p["is_ai"] for p in preds] == list(score >= threshold)


def test_es2_report_agrees_with_its_predictions_and_the_index_is_reused(tiny_model, tmp_path, record_property):
    out = tmp_path / "es2"
    report = evaluate(
        from_dict(EvalConfig, _settings(tiny_model, out, protocol={"name": "ES2"}, umap=True, explain={"images": 0}))
    )

    assert report.protocol.indexed == ("real", "checks", "diagonals", "rings", "stripes")
    assert report.protocol.zero_shot == () and report.protocol.ignored == ("dots",)
    assert "dots" not in report.test_counts
    _check_against_predictions(report.to_dict())  # the helper reads report.json's layout
    assert report.index["reused"] is False
    assert {c: n["trained"] for c, n in report.index["counts"].items()} == {c: 20 for c in report.test_counts}
    assert report.closed_set["references_per_class"] == {c: 20 for c in report.test_counts}
    record_property(
        "es2", {"auc": report.detection["overall"]["auc"], "seen_f1": report.closed_set["macro"]["seen"]["f1"]}
    )
    # The trained encoder separates its own classes (a loose floor: the model is tiny).
    assert report.detection["overall"]["auc"] > 0.8
    assert report.closed_set["macro"]["seen"]["f1"] > 0.6

    assert [r["size"] for r in report.sweep] == [5, 10, "all"]
    assert set(report.robustness) == {"clean", "jpeg:50"}
    assert report.robustness["jpeg:50"]["detection"]["overall"]["n_ai"] == 4 * 6
    for name in (*FIGURES, "umap"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert set(report.figures) == FIGURES | {"umap"}  # explain.images 0: no explanations
    assert report.explanations is None and not (out / "explanations.png").exists()
    assert "explanations" not in report.to_dict()
    assert "explain" not in report.timings
    # report.json is to_dict(), key for key (the text: NaN != NaN would fail a comparison of values).
    assert (out / "report.json").read_text() == json.dumps(report.to_dict(), indent=1, default=str) + "\n"
    md = (out / "report.md").read_text()
    assert "# Evaluation: ES2" in md and "| checks | " in md and "jpeg:50" in md
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["eval"]["protocol"]["name"] == "ES2" and resolved["resolved_protocol"]["ignored"] == ["dots"]

    # Same index, nothing new to compute: reused as it is.
    again = evaluate(
        from_dict(
            EvalConfig,
            _settings(
                tiny_model,
                out,
                protocol={"name": "ES2"},
                sweep_sizes=[],
                degradations=[],
                figures=False,
                explain={"images": 0},
            ),
        )
    )
    assert again.index["reused"] is True
    assert again.open_set == report.open_set


def test_es4_from_the_cli_scores_dots_as_zero_shot(tiny_model, tmp_path, capsys):
    out = tmp_path / "es4"
    config = tmp_path / "eval.yaml"
    settings = _settings(tiny_model, out, figures=True, sweep_sizes=[10, "all"], sweep_repeats=1)
    config.write_text(yaml.safe_dump({"eval": settings}))
    assert (
        main(["evaluate", "--config", str(config), "--set", "protocol.name=ES4", "--set", "protocol.held_out=[dots]"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"] == "ES4" and summary["zero_shot"] == ["dots"]

    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["novel"] == ["dots"] and "dots" in report["test_counts"]
    _check_against_predictions(report)
    preds = report["predictions"]
    dots = [p for p in preds if p["true"] == "dots"]
    assert report["open_set"]["unknown_rate"]["dots"] == pytest.approx(
        np.mean([p["predicted"] == "unknown" for p in dots]), abs=1e-6
    )
    assert summary["novel_unknown_rate"] == report["open_set"]["unknown_rate"]["dots"]
    # Closed set (the thesis's way): "dots" has references too and is scored on its own label.
    y = [p["true"] for p in preds]
    closed = [p["closed_set"] for p in preds]
    ref = precision_recall_fscore_support(y, closed, labels=["dots"], zero_division=0)
    assert report["closed_set"]["macro"]["zero_shot"]["recall"] == pytest.approx(ref[1][0], abs=1e-6)
    assert report["closed_set"]["macro"]["zero_shot"]["classes"] == ["dots"]
    assert "dots" not in report["index"]["counts"]  # never in the service's index
    assert report["detection"]["per_generator"]["dots"]["auc"] is not None
    _check_service_figures(report)
    assert all((out / f"{name}.png").exists() for name in FIGURES)
    assert not (out / "umap.png").exists()
    md = (out / "report.md").read_text()
    assert "zero-shot classes (never trained on): dots" in md
    _check_explanations(report, out, md)


def _check_service_figures(report):
    """The unseen-image figures agree with the predictions, and enrollment was as the service does it."""
    preds = report["predictions"]
    service = report["service"]
    at = service["at_threshold"]
    real = [p for p in preds if p["true"] == "real"]
    dots = [p for p in preds if p["true"] == "dots"]
    assert at["real_specificity_label"] == pytest.approx(np.mean([p["predicted"] == "real" for p in real]))
    assert at["real_specificity_is_ai"] == pytest.approx(np.mean([not p["is_ai"] for p in real]))
    assert at["label_is_ai_disagree"] == 0  # real exactly when not flagged
    assert at["flagged_ai"]["dots"] == pytest.approx(np.mean([p["is_ai"] for p in dots]))
    det = report["detection"]["overall"]
    assert 0 <= det["tpr_at_1pct_fpr"] <= det["tpr_at_5pct_fpr"] <= 1
    o = service["open_set"]
    assert 0 <= o["known_vs_novel_auroc"] <= 1 and 0 <= o["oscr"] <= 1
    enr = service["enrollment"]
    assert enr["enrolled_per_family"] == {"dots": 12}
    assert set(enr["checks"]) | set(enr["refused"]) == {"dots"}
    if "dots" in enr["checks"]:
        check = enr["checks"]["dots"]
        # enrollment never lets real calibration photographs be flagged more than allowed
        assert (
            check["real_fpr_after"] <= check["real_fpr_before"] + report["attribution_rule"]["max_fpr_increase"] + 1e-9
        )
        assert enr["after"]["named"]["dots"] > enr["before"]["named"]["dots"] == 0


def _check_explanations(report, out, md):
    """Four explained test images, one per role, each explained toward the class the service named."""
    from PIL import Image

    facts = report["explanations"]
    by_hash = {p["content_hash"]: p for p in report["predictions"]}
    assert len(facts) == 4 and len({f["content_hash"] for f in facts}) == 4
    for f in facts:
        p = by_hash[f["content_hash"]]
        assert (f["true"], f["predicted"], f["source_path"]) == (p["true"], p["predicted"], p["source_path"])
        # The answer's class, or the vote winner when the answer is "unknown" (always an indexed class).
        assert f["explained_class"] == (p["nearest"] if p["predicted"] == "unknown" else p["predicted"])
        assert f["explained_class"] in report["protocol"]["indexed"]
        assert -1 <= f["score"] <= 1 and 0.1 <= f["saliency_top10_share"] <= 1
        assert f["lime"]["superpixels"] >= 10 and len(f["lime"]["top"]) == 3
    roles = {f["role"]: f for f in facts}
    truth = {c: "unknown" for c in report["protocol"]["novel"]}
    assert roles["seen, correct"]["predicted"] == roles["seen, correct"]["true"] not in ("real", "dots")
    assert roles["zero-shot"]["true"] == "dots" and roles["real"]["true"] == "real"
    wrong = roles.get("wrong")
    if wrong is None:  # no wrong answer to show: the filler takes its place
        assert all(truth.get(p["true"], p["true"]) == p["predicted"] for p in report["predictions"])
    else:
        assert wrong["predicted"] != truth.get(wrong["true"], wrong["true"])
    assert report["figures"]["explanations"] == "explanations.png"
    with Image.open(out / "explanations.png") as img:
        img.verify()
        assert img.format == "PNG" and img.size[0] > 4 * 150  # one column per explained image
    assert "## Explanations" in md and "![explanations](explanations.png)" in md
    assert md.count("explanations.png") == 1  # beside its table, not again under Figures
    assert "explain" in report["timings"]


def test_a_protocol_that_does_not_fit_fails_before_any_work(tiny_model, tmp_path):
    with pytest.raises(ProtocolError, match="generators only"):
        evaluate(from_dict(EvalConfig, _settings(tiny_model, tmp_path / "es1", protocol={"name": "ES1"})))
    with pytest.raises(ValueError, match="unknown degradation"):
        evaluate(from_dict(EvalConfig, _settings(tiny_model, tmp_path / "x", degradations=["sepia:1"])))
    assert not (tmp_path / "es1" / "report.json").exists()


def test_a_shared_store_holding_an_enrolled_zero_shot_class_is_refused(tiny_model, tmp_path):
    from synthray.attribution.embedder import Embedder

    embedder = Embedder(tiny_model.checkpoint, device="cpu")
    shared = StoreConfig(path=str(tmp_path / "shared"))
    with open_store(shared, embedder.model_version, embedder.dim) as store:
        v = np.eye(embedder.dim, dtype=np.float32)[:2]
        store.upsert(v, [Reference("dots", False, f"h{i}", origin="enrolled") for i in range(2)])
    settings = _settings(tiny_model, tmp_path / "es4", protocol={"name": "ES4"}, store={"path": shared.path})
    with pytest.raises(EvalError, match="outside the protocol"):
        evaluate(from_dict(EvalConfig, settings))
    with open_store(shared, embedder.model_version, embedder.dim, create=False) as store:
        assert store.counts() == {"dots": {"trained": 0, "enrolled": 2}}  # left as it was
