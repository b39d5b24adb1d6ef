"""Exact cosine k-nearest-neighbour search and voting, in torch.

The thesis classifies an embedding by a majority vote of its k=11 nearest reference
embeddings; this is that core, exact and batched. It backs the validation kNN accuracy
during training and the reference answer that the vector store is checked against.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class KnnResult:
    """Neighbours and votes of N queries over C classes."""

    indices: torch.Tensor  # (N, k) reference indices, nearest first
    similarities: torch.Tensor  # (N, k) cosine similarities
    votes: torch.Tensor  # (N, C) vote mass per class (counts, or similarity weights)
    predictions: torch.Tensor  # (N,) argmax class of the votes


def knn_search(
    queries: torch.Tensor, references: torch.Tensor, k: int, chunk: int = 4096, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by cosine similarity.

    Args:
        queries: (N, D) embeddings (normalised here, so any scale works).
        references: (M, D) embeddings.
        k: neighbours per query (capped at M, or M - 1 with ``exclude_self``).
        chunk: queries per matrix product (bounds memory at chunk x M).
        exclude_self: queries ARE the references (leave-one-out): skip index i for query i.
    Returns:
        (similarities (N, k'), indices (N, k')), nearest first.
    """
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D), got {tuple(queries.shape)} and {tuple(references.shape)}")
    if references.shape[0] == 0:
        raise ValueError("no reference embeddings")
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    r = torch.nn.functional.normalize(references.float(), dim=1)
    k = min(k, r.shape[0] - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("not enough references for a neighbour")
    sims, idxs = [], []
    for start in range(0, q.shape[0], chunk):
        s = q[start : start + chunk] @ r.T
        if exclude_self:
            rows = torch.arange(s.shape[0], device=s.device)
            s[rows, rows + start] = float("-inf")
        top = s.topk(k, dim=1)
        sims.append(top.values)
        idxs.append(top.indices)
    return torch.cat(sims), torch.cat(idxs)


def knn_classify(
    queries: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    num_classes: int,
    k: int = 11,
    weighted: bool = False,
    exclude_self: bool = False,
) -> KnnResult:
    """Votes of the k nearest references (after the thesis: k = 11, majority vote).

    Args:
        queries: (N, D) embeddings.
        references: (M, D) embeddings.
        reference_labels: (M,) int labels in [0, num_classes).
        num_classes: C.
        k: neighbours.
        weighted: weight each vote by its similarity (clamped at 0) instead of 1.
        exclude_self: leave-one-out when queries are the references.
    Returns:
        the neighbours, per-class votes and predictions. Ties go to the class whose
        nearest voter is closest (a deterministic, distance-aware tie-break).
    """
    if reference_labels.shape != (references.shape[0],):
        raise ValueError(f"reference_labels must be ({references.shape[0]},), got {tuple(reference_labels.shape)}")
    sims, idx = knn_search(queries, references, k, exclude_self=exclude_self)
    labels = reference_labels.to(idx.device)[idx]  # (N, k)
    weights = sims.clamp(min=0) if weighted else torch.ones_like(sims)
    votes = torch.zeros(queries.shape[0], num_classes, device=sims.device)
    votes.scatter_add_(1, labels, weights)
    # Tie-break: a tiny bonus decreasing with neighbour rank, far below one vote's weight.
    # In float64 so the bonus is not lost to float32 rounding of the vote totals.
    kk = labels.shape[1]
    rank_bonus = torch.zeros(votes.shape, dtype=torch.float64, device=votes.device)
    bonus = 1e-9 * (kk - torch.arange(kk, device=sims.device, dtype=torch.float64)) / kk
    rank_bonus.scatter_reduce_(1, labels, bonus.expand(labels.shape[0], kk).contiguous(), reduce="amax")
    predictions = (votes.double() + rank_bonus).argmax(dim=1)
    return KnnResult(indices=idx, similarities=sims, votes=votes, predictions=predictions)
