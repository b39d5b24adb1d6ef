"""The service's rule against brute force: per-class scores, the is-AI margin and its
calibration, label/is_ai agreement, "unknown", and enrollment that cannot swallow real photos."""

from __future__ import annotations

import numpy as np
import pytest

from synthray.attribution.openset import UNKNOWN
from synthray.attribution.rule import (
    ClassScores,
    EnrollmentRefused,
    Thresholds,
    attribute,
    calibrate,
    check_enrollment,
    class_scores,
    decide,
    topk_mean,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clusters(rng: np.random.Generator, centers: dict[str, np.ndarray], n: int, spread: float) -> dict[str, np.ndarray]:
    return {c: _unit(v + spread * rng.normal(size=(n, len(v)))) for c, v in centers.items()}


def _hits(queries: np.ndarray, refs: dict[str, np.ndarray], k: int) -> list[dict[str, list[float]]]:
    """Brute force: each class's k most similar references of each query."""
    out = []
    for q in queries:
        out.append({c: sorted((r @ q).tolist(), reverse=True)[:k] for c, r in refs.items()})
    return out


def test_class_scores_are_the_mean_of_each_classes_own_nearest():
    rng = np.random.default_rng(0)
    refs = {"real": _unit(rng.normal(size=(40, 8))), "a": _unit(rng.normal(size=(5, 8)))}
    q = _unit(rng.normal(size=(6, 8)))
    cs = class_scores(_hits(q, refs, 11), ["real", "a"])
    for i in range(len(q)):
        assert cs.scores[i, 0] == pytest.approx(np.sort(refs["real"] @ q[i])[::-1][:11].mean())
        assert cs.scores[i, 1] == pytest.approx((refs["a"] @ q[i]).mean())  # fewer than k: all of them
    assert np.allclose(topk_mean(q @ refs["real"].T, 11), cs.scores[:, 0])
    # a class with no references is absent, not zero
    assert np.isneginf(class_scores([{"real": [0.5]}], ["real", "a"]).scores[0, 1])


def test_reference_counts_do_not_decide_the_answer():
    """A query halfway between real and a generator is answered the same whether real has 10
    or 1000 references there (a neighbour vote would follow the counts)."""
    rng = np.random.default_rng(1)
    real_dir, gen_dir = _unit(rng.normal(size=16)), _unit(rng.normal(size=16))
    q = _unit(0.55 * real_dir + 0.45 * gen_dir)[None]
    answers = []
    for n_real in (10, 1000):
        refs = {
            "real": _unit(real_dir + 0.05 * rng.normal(size=(n_real, 16))),
            "gen": _unit(gen_dir + 0.05 * rng.normal(size=(10, 16))),
        }
        answers.append(decide(class_scores(_hits(q, refs, 5)), Thresholds()).labels[0])
    assert answers == ["real", "real"]


def test_label_and_is_ai_always_agree_and_unknown_is_ai():
    rng = np.random.default_rng(2)
    scores = rng.uniform(-1, 1, size=(300, 4))
    scores[::7, 2] = -np.inf  # absent classes too
    cs = ClassScores(["a", "b", "real", "c"], scores)
    t = Thresholds(ai_threshold=0.1, class_thresholds={"c": 0.3}, acceptance={"a": 0.2, "b": -0.5, "c": 0.0})
    d = decide(cs, t)
    for lab, flagged, score in zip(d.labels, d.is_ai, d.is_ai_score):
        assert (lab == "real") == (not flagged) == (score < 0.1)
    assert UNKNOWN in d.labels and "real" in d.labels
    # brute force of the margin: generator c counts only past its own threshold
    for i in range(len(scores)):
        margins = [
            scores[i, j] - scores[i, 2] - (t.threshold_of(c) - 0.1) for j, c in enumerate(cs.classes) if c != "real"
        ]
        assert d.is_ai_score[i] == pytest.approx(max(margins))
    # a flagged image named a generator clears that generator's acceptance and threshold
    for i, lab in enumerate(d.labels):
        if lab not in ("real", UNKNOWN):
            j = cs.classes.index(lab)
            assert scores[i, j] >= t.acceptance[lab] and scores[i, j] - scores[i, 2] >= t.threshold_of(lab)


def test_calibration_meets_the_target_fpr_and_the_unknown_rate():
    rng = np.random.default_rng(3)
    centers = {c: _unit(rng.normal(size=16)) for c in ("real", "a", "b")}
    refs = _clusters(rng, centers, 60, 0.25)
    val = _clusters(rng, centers, 100, 0.25)
    q = np.concatenate(list(val.values()))
    truth = [c for c, v in val.items() for _ in v]
    cs = class_scores(_hits(q, refs, 11))
    t = calibrate(cs, truth, target_fpr=0.05, unknown_rate=0.1, k=11)
    real = np.array(truth) == "real"
    flagged = cs.is_ai_score(t) >= t.ai_threshold
    assert flagged[real].mean() == pytest.approx(0.05) and t.calibration["fpr"] == pytest.approx(flagged[real].mean())
    # the most flagging threshold within the target: one value lower flags more reals
    lower = np.sort(cs.is_ai_score(t)[real])
    below = lower[lower < t.ai_threshold]
    assert not len(below) or np.mean(cs.is_ai_score(t)[real] >= below[-1]) > 0.05
    for c in ("a", "b"):  # acceptance: the unknown_rate quantile of the class's own scores
        own = cs.scores[np.array(truth) == c, cs.classes.index(c)]
        assert np.mean(own < t.acceptance[c]) <= 0.1
    assert t.calibration["warning"] is None and t.calibration["tpr"] > 0.9
    assert Thresholds.from_dict(t.to_dict()) == t


def test_calibration_says_so_when_nothing_can_be_flagged(caplog):
    scores = np.array([[0.9, 0.1]] * 10 + [[0.1, 0.9]] * 10)  # real images sit on the generator
    cs = ClassScores(["a", "real"], scores)
    t = calibrate(cs, ["real"] * 10 + ["a"] * 10, target_fpr=0.05, unknown_rate=0.05, k=11)
    assert t.calibration["warning"] and "does not separate" in t.calibration["warning"]
    assert t.calibration["tpr"] == 0.0
    with pytest.raises(TypeError, match="rebuild"):
        Thresholds.from_dict({"min_similarity": 0.1})  # an index calibrated by the old rule


def _enroll_setup(seed: int, gen_offset: float):
    rng = np.random.default_rng(seed)
    real_dir, known_dir = _unit(rng.normal(size=32)), _unit(rng.normal(size=32))
    new_dir = _unit(real_dir + gen_offset * _unit(rng.normal(size=32)))
    refs = {
        "real": _unit(real_dir + 0.12 * rng.normal(size=(200, 32))),
        "known": _unit(known_dir + 0.12 * rng.normal(size=(50, 32))),
    }
    real_cal = _unit(real_dir + 0.12 * rng.normal(size=(200, 32)))
    samples = _unit(new_dir + 0.12 * rng.normal(size=(50, 32)))
    t = calibrate(class_scores(_hits(real_cal, refs, 11)), ["real"] * 200, 0.05, 0.05, 11)
    return refs, real_cal, samples, t


@pytest.mark.parametrize("seed", range(3))
def test_enrollment_never_flags_more_real_photographs_than_allowed(seed):
    """A generator close to real: its threshold is raised until the real calibration
    photographs are flagged at most max_fpr_increase more often than before."""
    refs, real_cal, samples, t = _enroll_setup(seed, gen_offset=1.0)
    k = 11
    check = check_enrollment(
        "new",
        samples,
        class_scores(_hits(samples, refs, k)),
        class_scores(_hits(real_cal, refs, k)),
        real_cal @ samples.T,
        t,
        k,
        0.05,
        0.005,
    )
    # brute force: the real photographs flagged with the new class in, at its threshold
    with_new = {**refs, "new": samples}
    t2 = Thresholds.from_dict(t.to_dict())
    t2.class_thresholds["new"] = check.threshold
    after = decide(class_scores(_hits(real_cal, with_new, k)), t2).is_ai.mean()
    assert after == pytest.approx(check.real_fpr_after)
    assert check.real_fpr_after <= check.real_fpr_before + 0.005 + 1e-12
    assert check.threshold > t.ai_threshold  # this generator sits near real: the mechanism engaged
    # leave-one-out acceptance: the 5% quantile of each sample's score against the others
    sims = samples @ samples.T
    np.fill_diagonal(sims, -np.inf)
    own = np.sort(sims, axis=1)[:, ::-1][:, :k].mean(axis=1)
    assert np.mean(own < check.acceptance) <= 0.05


def test_a_sample_set_that_sits_inside_real_is_refused():
    refs, real_cal, _, t = _enroll_setup(7, gen_offset=0.0)
    photos = real_cal[:40]  # "enrolling" real photographs
    with pytest.raises(EnrollmentRefused, match="inside the real photographs"):
        check_enrollment(
            "sneaky",
            photos,
            class_scores(_hits(photos, refs, 11)),
            class_scores(_hits(real_cal, refs, 11)),
            real_cal @ photos.T,
            t,
            11,
            0.05,
        )
    with pytest.raises(EnrollmentRefused, match="at least 2"):
        check_enrollment("one", photos[:1], class_scores(_hits(photos[:1], refs, 11)), None, None, t, 11, 0.05)


def test_attribute_reports_scores_evidence_and_an_empty_index():
    class N:
        def __init__(self, g, s):
            self.generator, self.similarity, self.origin, self.source_path = g, s, "trained", ""

    hits = [{"real": [0.9, 0.8], "a": [0.4]}, {"real": [0.1], "a": [0.95, 0.9]}]
    out = attribute(hits, [[N("real", 0.9)], [N("a", 0.95)]], Thresholds(ai_threshold=0.05), k=11)
    assert [a.label for a in out] == ["real", "a"] and [a.is_ai for a in out] == [False, True]
    assert out[1].votes == {"real": 0.1, "a": pytest.approx(0.925)}
    assert out[1].confidence == pytest.approx(0.825) and out[1].neighbours[0]["generator"] == "a"
    empty = attribute([{}], [[]], None, k=11)[0]
    assert empty.label == UNKNOWN and empty.unknown_reason == "empty_index" and not empty.is_ai
