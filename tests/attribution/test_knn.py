"""kNN search and vote against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthray.attribution import knn_classify, knn_search


def _brute(q, r, labels, c, k, weighted, exclude_self=False):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    preds, votes_all, idx_all = [], [], []
    for i, row in enumerate(qn):
        sims = rn @ row
        order = [j for j in np.argsort(-sims, kind="stable") if not (exclude_self and j == i)][:k]
        votes = np.zeros(c)
        for j in order:
            votes[labels[j]] += max(sims[j], 0) if weighted else 1
        best = np.flatnonzero(np.isclose(votes, votes.max(), rtol=0, atol=1e-9))
        # tie: the class whose nearest voter comes first
        pred = next(labels[j] for j in order if labels[j] in best)
        preds.append(pred)
        votes_all.append(votes)
        idx_all.append(order)
    return np.array(preds), np.array(votes_all), np.array(idx_all)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [1, 4, 11])
def test_knn_matches_brute_force(weighted, k):
    rng = np.random.default_rng(k)
    r = rng.normal(size=(200, 16)).astype(np.float32)
    labels = rng.integers(0, 5, 200)
    q = rng.normal(size=(37, 16)).astype(np.float32)
    res = knn_classify(torch.from_numpy(q), torch.from_numpy(r), torch.from_numpy(labels), 5, k=k, weighted=weighted)
    preds, votes, idx = _brute(q, r, labels, 5, k, weighted)
    assert np.array_equal(res.indices.numpy(), idx)
    assert np.allclose(res.votes.numpy(), votes, atol=1e-5)
    assert np.array_equal(res.predictions.numpy(), preds)


def test_leave_one_out_and_chunking():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 50)
    res = knn_classify(torch.from_numpy(r), torch.from_numpy(r), torch.from_numpy(labels), 3, k=5, exclude_self=True)
    assert not (res.indices.numpy() == np.arange(50)[:, None]).any()
    preds, _, _ = _brute(r, r, labels, 3, 5, False, exclude_self=True)
    assert np.array_equal(res.predictions.numpy(), preds)
    s1, i1 = knn_search(torch.from_numpy(r), torch.from_numpy(r), 5, chunk=7)
    s2, i2 = knn_search(torch.from_numpy(r), torch.from_numpy(r), 5)
    assert torch.equal(i1, i2) and torch.allclose(s1, s2)


def test_bad_shapes():
    with pytest.raises(ValueError):
        knn_search(torch.zeros(3, 4), torch.zeros(5, 3), 1)
    with pytest.raises(ValueError):
        knn_search(torch.zeros(3, 4), torch.zeros(0, 4), 1)
    with pytest.raises(ValueError):
        knn_classify(torch.zeros(3, 4), torch.ones(5, 4), torch.zeros(4, dtype=torch.long), 2)
