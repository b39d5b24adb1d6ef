"""Grouping inbox embeddings into candidate generators (scikit-learn's HDBSCAN), with ids
that stay while a group persists.

HDBSCAN needs no cluster count and leaves outliers out (label -1): the inbox holds images of
several new generators, odd photographs and one-offs, and only dense groups are of interest.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def group(
    vectors: np.ndarray, min_cluster_size: int, min_samples: int | None = None, reduce_dims: int = 32, seed: int = 0
) -> np.ndarray:
    """HDBSCAN labels of (N, D) embeddings: a group number per row, -1 for outliers.

    Rows are unit-normalised (Euclidean distance then orders pairs as cosine similarity does)
    and projected on their first ``reduce_dims`` principal components when D is larger.
    """
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    n = len(vectors)
    if n < min_cluster_size:
        return np.full(n, -1, dtype=int)
    x = unit(vectors)
    if reduce_dims and x.shape[1] > reduce_dims and n > reduce_dims:
        x = PCA(n_components=reduce_dims, random_state=seed).fit_transform(x)
    labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True).fit_predict(x)
    if (labels == -1).all():
        # HDBSCAN never answers "one group" unless allowed: an inbox holding one new generator
        # and a few strays is that case. Allowed from the start, it also merges distinct groups.
        labels = HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=min_samples, allow_single_cluster=True, copy=True
        ).fit_predict(x)
    return labels


@dataclasses.dataclass(frozen=True)
class Summary:
    """What one group looks like."""

    members: list[int]  # row indices
    centroid: np.ndarray  # unit mean direction
    cohesion: float  # mean cosine similarity of the members to the centroid (1 = one point)
    examples: list[int]  # the rows nearest the centroid, nearest first


def summarize(vectors: np.ndarray, labels: np.ndarray, examples: int) -> list[Summary]:
    """Per group (largest first): members, centroid, cohesion and example rows."""
    x = unit(vectors)
    out = []
    for g in sorted(set(labels.tolist()) - {-1}):
        rows = np.flatnonzero(labels == g)
        c = x[rows].mean(axis=0)
        c = c / max(np.linalg.norm(c), 1e-12)
        sims = x[rows] @ c
        order = rows[np.argsort(-sims, kind="stable")]
        out.append(Summary(rows.tolist(), c, float(sims.mean()), order[:examples].tolist()))
    return sorted(out, key=lambda s: -len(s.members))


def match(groups: Sequence[set[str]], previous: Mapping[str, set[str]], overlap: float) -> list[str | None]:
    """An earlier id for each new group, or None (a new discovery).

    A group keeps id ``d`` when it holds at least ``overlap`` of ``d``'s remembered members;
    each id goes to one group only, the largest share first (a split keeps the id on its bigger
    part, a merge keeps the id of the discovery it absorbed most of).
    """
    pairs = []
    for gi, members in enumerate(groups):
        for pid, old in previous.items():
            if old:
                share = len(members & old) / len(old)
                if share >= overlap:
                    pairs.append((share, len(members & old), gi, pid))
    out: list[str | None] = [None] * len(groups)
    used: set[str] = set()
    for _, _, gi, pid in sorted(pairs, key=lambda p: (-p[0], -p[1], p[3])):
        if out[gi] is None and pid not in used:
            out[gi] = pid
            used.add(pid)
    return out
