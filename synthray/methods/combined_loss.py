"""004's combined loss: cross-entropy + real/fake feature similarity + confidence penalty.

004 (§3.4)::

    L = alpha * L_CE + beta * L_FS + gamma * L_CP,   alpha, beta, gamma learnable

- ``L_FS``: cosine similarity of the centroids of the real and of the fake features in the
  batch (minimising it pushes the two classes apart). Mapped to ``(1 + cos) / 2`` in [0, 1].
- ``L_CP``: a confidence penalty. 004's text calls it the negative entropy of the softmax,
  which as a penalty on over-confidence (Pereyra et al. 2017) means *raising* the entropy;
  its formula (4) prints the entropy itself, whose minimum is maximal confidence. We follow
  the text: ``log C - H(p)`` (>= 0, 0 for a uniform prediction, largest when confident).

004 does not say how learnable weights are kept from collapsing to 0 (which minimises any
weighted sum). We learn them as homoscedastic-uncertainty weights (Kendall et al. 2018):
``sum_i exp(-s_i) * L_i + s_i``, which keeps every weight positive and cannot be zeroed for
free; with every ``L_i >= 0`` this has a finite optimum ``s_i = log L_i``.

Why not a registered loss (``synthray.losses``): that registry's contract is
``loss(embeddings, labels)`` on unit vectors; this one needs logits as well and owns
trainable parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TERMS = ("ce", "feature_similarity", "confidence_penalty")
_S_RANGE = (-4.0, 4.0)  # bounds on the log-weights: a term at exactly 0 would drive s to -inf


def feature_similarity(features: torch.Tensor, is_ai: torch.Tensor) -> torch.Tensor:
    """``(1 + cos(c_real, c_fake)) / 2`` of the batch centroids; 0 (still in the graph) when a side is missing.

    Args:
        features: (N, F) features.
        is_ai: (N,) bool.
    Returns:
        () in [0, 1].
    """
    w_ai = is_ai.to(features.dtype)
    w_real = 1.0 - w_ai
    c_ai = (features * w_ai[:, None]).sum(0) / w_ai.sum().clamp_min(1)
    c_real = (features * w_real[:, None]).sum(0) / w_real.sum().clamp_min(1)
    cos = F.cosine_similarity(c_ai, c_real, dim=0, eps=1e-8)
    both = (w_ai.sum() > 0) & (w_real.sum() > 0)
    return torch.where(both, (1.0 + cos) / 2.0, cos * 0.0)


def confidence_penalty(logits: torch.Tensor) -> torch.Tensor:
    """``log C - mean entropy`` of the predicted distribution (a binary logit counts as C = 2).

    Args:
        logits: (N, C) class logits, or (N, 1) one AI logit.
    Returns:
        () in [0, log C].
    """
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    logp = logits.log_softmax(dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1).mean()
    return math.log(logits.shape[1]) - entropy


class CombinedLoss(nn.Module):
    """004's three-term loss with learned (uncertainty) weights.

    ``forward(logits, features, labels, is_ai)``: ``logits`` (N, 1) binary or (N, C),
    ``features`` (N, F), ``labels`` (N,) int class indices (multiclass) and ``is_ai`` (N,) bool.
    Returns (total, {term: value, term + "_weight": exp(-s)}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(len(TERMS)))

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, is_ai: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from synthray.methods.classifier import balanced_bce

        if logits.ndim != 2 or features.ndim != 2 or logits.shape[0] != features.shape[0]:
            raise ValueError(
                f"expected (N, C) logits and (N, F) features, got {tuple(logits.shape)}, {tuple(features.shape)}"
            )
        ce = balanced_bce(logits[:, 0], is_ai) if logits.shape[1] == 1 else F.cross_entropy(logits, labels)
        parts = torch.stack([ce, feature_similarity(features, is_ai), confidence_penalty(logits)])
        s = self.log_vars.clamp(*_S_RANGE)
        total = (torch.exp(-s) * parts + s).sum()
        info = {t: round(float(v), 5) for t, v in zip(TERMS, parts.detach())}
        info.update({f"{t}_weight": round(float(w), 4) for t, w in zip(TERMS, torch.exp(-s.detach()))})
        return total, info
