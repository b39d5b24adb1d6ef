"""Metric functions on hand-made predictions, against hand computation and sklearn; the
sample-size sweep and the degradations on real image bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from synthray.attribution.config import AttributionConfig
from synthray.eval.metrics import (
    attribution_metrics,
    closed_set_metrics,
    confusion,
    detection_metrics,
    open_set_metrics,
)
from synthray.eval.robustness import list_degradations, parse_degradation
from synthray.eval.sweep import knn_predict, sample_size_sweep


def test_detection_per_generator_by_hand():
    y = ["real", "real", "real", "A", "A", "B", "B"]
    s = [0.1, 0.4, 0.7, 0.6, 0.9, 0.3, 0.8]
    d = detection_metrics(y, s, threshold=0.5)
    # real vs A: pairs (A > real): 0.6 beats 0.1, 0.4 not 0.7; 0.9 beats all -> 5 of 6.
    assert d["per_generator"]["A"]["auc"] == pytest.approx(5 / 6)
    # real vs B: 0.3 beats 0.1 only; 0.8 beats all -> 4 of 6.
    assert d["per_generator"]["B"]["auc"] == pytest.approx(4 / 6)
    # at 0.5: real flagged = {0.7}; A flagged both; B flagged 0.8 -> A: 4/5 right, B: 3/5.
    assert d["per_generator"]["A"]["accuracy"] == pytest.approx(4 / 5)
    assert d["per_generator"]["B"]["accuracy"] == pytest.approx(3 / 5)
    assert d["overall"]["auc"] == pytest.approx(roc_auc_score([0, 0, 0, 1, 1, 1, 1], s))
    assert d["overall"]["fpr"] == pytest.approx(1 / 3) and d["overall"]["tpr"] == pytest.approx(3 / 4)
    assert detection_metrics(["A", "B"], [0.2, 0.9], 0.5) == {}  # no real images: nothing to detect against


def test_attribution_macro_groups_equal_sklearn_macro():
    y = ["a", "a", "b", "b", "c", "c", "c", "d"]
    p = ["a", "b", "b", "b", "c", "a", "unknown", "d"]
    m = attribution_metrics(y, p, ["a", "b", "c", "d"], {"seen": ["a", "b"], "zero_shot": ["c", "d"]})
    for group, labels in (("seen", ["a", "b"]), ("zero_shot", ["c", "d"])):
        ref = precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)
        assert [m["macro"][group][k] for k in ("precision", "recall", "f1")] == pytest.approx(list(ref[:3]))
    # By hand: a has precision 1/2 (a predicted for a and c), recall 1/2.
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["accuracy"] == pytest.approx(5 / 8)


def test_open_set_scores_novel_images_against_unknown():
    y = ["real", "real", "x", "x", "novel", "novel", "novel"]
    p = ["real", "unknown", "x", "real", "unknown", "unknown", "x"]
    sims = np.array([0.9, 0.5, 0.8, 0.7, 0.3, 0.2, 0.6])
    m = open_set_metrics(y, p, indexed=["real", "x"], seen=["real", "x"], zero_shot=["novel"], novelty_scores=1 - sims)
    target = ["real", "real", "x", "x", "unknown", "unknown", "unknown"]
    assert m["accuracy"] == pytest.approx(np.mean(np.array(target) == np.array(p)))
    assert m["unknown_rate"] == {"novel": pytest.approx(2 / 3), "real": 0.5, "x": 0.0}
    assert m["novel_unknown_rate_macro"] == pytest.approx(2 / 3)
    assert m["macro"]["zero_shot"]["classes"] == ["unknown"]  # novel classes are scored through "unknown"
    assert m["macro"]["zero_shot"]["recall"] == pytest.approx(2 / 3)
    ref = precision_recall_fscore_support(target, p, labels=["unknown"], zero_division=0)
    assert m["per_class"]["unknown"]["precision"] == pytest.approx(ref[0][0])  # 2 of 3 unknowns are novel
    assert m["novelty_auroc"] == pytest.approx(roc_auc_score([0, 0, 0, 0, 1, 1, 1], 1 - sims))
    assert m["confusion"]["rows"] == ["real", "novel", "x"]
    assert m["confusion"]["columns"] == ["real", "novel", "x", "unknown"]
    assert m["confusion"]["matrix"] == [[1, 0, 0, 1], [0, 0, 1, 2], [1, 0, 1, 0]]


def test_closed_set_and_confusion_keep_every_prediction():
    y = ["a", "a", "b", "z"]
    p = ["a", "b", "b", "a"]
    m = closed_set_metrics(y, p, ["a", "b", "z"], seen=["a", "b"], zero_shot=["z"])
    assert m["macro"]["zero_shot"]["recall"] == 0.0 and m["macro"]["zero_shot"]["classes"] == ["z"]
    assert m["macro_f1"] == pytest.approx(precision_recall_fscore_support(y, p, average="macro", zero_division=0)[2])
    c = confusion(["a", "b"], ["a", "weird"], ["a", "b"], extra_columns=())
    assert c["columns"] == ["a", "b", "other"] and c["matrix"] == [[1, 0, 0], [0, 0, 1]]


def _clusters(rng, per_class, classes, dim=16, spread=0.15, centres_seed=0):
    centres = np.random.default_rng(centres_seed).normal(size=(len(classes), dim))
    x = np.concatenate([centres[i] + spread * rng.normal(size=(per_class, dim)) for i in range(len(classes))])
    labels = np.repeat(classes, per_class)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_knn_predict_matches_brute_force_nearest_neighbour():
    rng = np.random.default_rng(0)
    refs, ref_labels = _clusters(rng, 30, ["real", "a", "b"], spread=0.8)
    queries, _ = _clusters(rng, 10, ["real", "a", "b"], spread=0.8)
    got = knn_predict(refs, ref_labels, queries, k=1, weighted=False).labels()
    expected = ref_labels[np.argmax(queries @ refs.T, axis=1)]
    assert got == list(expected)


def test_sweep_returns_one_row_per_size():
    rng = np.random.default_rng(1)
    classes = ["real", "a", "b", "held"]
    refs, ref_labels = _clusters(rng, 40, classes)
    queries, q_labels = _clusters(np.random.default_rng(2), 10, classes)
    rows = sample_size_sweep(
        refs,
        ref_labels,
        queries,
        q_labels,
        seen=["real", "a", "b"],
        zero_shot=["held"],
        sizes=[5, 20, 100, "all"],
        attribution=AttributionConfig(k=11, vote="majority"),
        repeats=3,
        small_k=3,
        seed=0,
    )
    assert [r["size"] for r in rows] == [5, 20, 100, "all"]
    assert [r["k"] for r in rows] == [3, 3, 11, 11]  # below 4*k references a class, k drops to small_k
    assert [r["draws"] for r in rows] == [3, 3, 1, 1]  # 100 > 40 available: the one possible draw
    assert [r["capped"] for r in rows] == [False, False, True, False]
    assert rows[2]["per_class_max"] == 40
    for r in rows:
        assert r["accuracy"] > 0.9 and r["zero_shot_f1"] is not None  # well-separated clusters
    assert rows[2]["accuracy"] == rows[3]["accuracy"]  # 100 per class = all 40 here
    with pytest.raises(ValueError, match="no references for test classes"):
        sample_size_sweep(refs[:40], ref_labels[:40], queries, q_labels, [], [], [5], AttributionConfig())


def _png(rng, size=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_degradations_change_pixels_and_keep_the_size():
    assert list_degradations() == ["blur", "downscale", "jpeg"]
    data = _png(np.random.default_rng(0))
    original = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    for spec, fmt in (("jpeg:30", "JPEG"), ("downscale:0.25", "PNG"), ("blur:2", "PNG")):
        with Image.open(io.BytesIO(parse_degradation(spec)(data))) as img:
            assert img.format == fmt and img.size == (48, 48)
            pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
        # Noise loses high frequencies under each: the pixel variance drops.
        assert pixels.std() < original.std() * 0.9, spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sharpen:1", "unknown degradation"),
        ("jpeg", "needs a quality"),
        ("jpeg:0", "quality in 1..100"),
        ("downscale:2", r"factor in \(0, 1\)"),
        ("blur:-1", "sigma > 0"),
    ],
)
def test_bad_degradation_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_degradation(spec)
