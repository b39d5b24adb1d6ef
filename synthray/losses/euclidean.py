"""Euclidean-distance contrastive (siamese, margin) loss: the thesis's ablation loss."""

from __future__ import annotations

import torch

from synthray.losses.base import EmbeddingLoss
from synthray.losses.config import LossConfig
from synthray.losses.registry import register_loss

_EPS = 1e-12  # floor under d^2 before the square root: sqrt has an infinite slope at 0


class EuclideanContrastiveLoss(EmbeddingLoss):
    """Pairwise contrastive loss with a margin, after Hadsell, Chopra & LeCun 2006.

    As thesis 001 §3.4.1 defines it (Hadsell et al. carry an extra factor 1/2, which only
    rescales the loss), over pairs ``k`` with distance ``D_k = ||x_a - x_b||_2``::

        L = 1/K * sum_k [ same_k * D_k^2 + (1 - same_k) * max(0, margin - D_k)^2 ]

    Same-label pairs are pulled together, different-label pairs are pushed apart until
    they are ``margin`` away. By default every unordered pair of rows in the batch (or of
    flattened views) is scored; ``pairs`` restricts it to given index pairs, the siamese
    set-up of the thesis. A batch with no pair or no positive pair gives a zero loss that
    stays in the graph, the same contract as :class:`SupConLoss`, so a training loop can
    treat both losses alike.

    Args:
        margin: distance (> 0) beyond which a negative pair costs nothing. Unit vectors
            are at most 2 apart, so any margin >= 2 pushes every negative pair.
        normalize: L2-normalise the features inside the loss.
    Raises:
        ValueError: on a non-positive margin.
    """

    def __init__(self, *, margin: float = 1.0, normalize: bool = True) -> None:
        super().__init__(normalize=normalize)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = float(margin)

    def _pair_d2(
        self, z: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = (torch.as_tensor(p, device=z.device) for p in pairs)
        if a.shape != b.shape or a.ndim != 1 or a.dtype.is_floating_point or b.dtype.is_floating_point:
            raise ValueError("pairs must be two 1-D integer index tensors of equal length")
        m = z.shape[0]
        if a.numel() and (min(int(a.min()), int(b.min())) < 0 or max(int(a.max()), int(b.max())) >= m):
            raise ValueError(f"pair indices must lie in [0, {m})")
        return a, b, (z[a] - z[b]).pow(2).sum(dim=1)

    def compute(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """The margin loss on (M, D) embeddings and (M,) labels.

        Args:
            z: (M, D) embeddings.
            labels: (M,) labels.
            pairs: optional (a, b), two (K,) index tensors into the rows; None = all
                unordered pairs ``a < b``.
        Returns:
            () loss (0 when no pair is positive), or None when there is no pair.
        """
        upper = None
        if pairs is None:
            m = z.shape[0]
            n_pairs = m * (m - 1) // 2
            # The Gram form needs O(M^2) memory, not O(M^2 D) like explicit differences;
            # rounding can make it slightly negative, hence the clamp. The pairs a < b are
            # picked by a mask, not by indexing, so nothing waits on the device.
            sq = z.pow(2).sum(dim=1)
            d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
            upper = torch.triu(torch.ones(m, m, dtype=torch.bool, device=z.device), diagonal=1)
            same = (labels[:, None] == labels[None, :]) & upper
        else:
            a, b, d2 = self._pair_d2(z, pairs)
            n_pairs = d2.numel()
            same = labels[a] == labels[b]
        if n_pairs == 0:
            return None
        dist = d2.clamp_min(_EPS).sqrt()
        push = (self.margin - dist).clamp_min(0.0).pow(2)
        per_pair = torch.where(same, d2, push)
        if upper is not None:
            per_pair = per_pair.masked_fill(~upper, 0.0)
        # A batch with no positive pair is zeroed by a mask, not an `if`: no host-device sync.
        return per_pair.sum() / n_pairs * same.any().to(d2.dtype)

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Computes the loss.

        Args:
            features: (N, D) or (N, V, D) embeddings, any float dtype.
            labels: (N,) class labels; None = each sample its own class.
            pairs: optional (a, b) index tensors of shape (K,) into the N rows; only with
                (N, D) features.
        Returns:
            () scalar loss.
        Raises:
            ValueError: on mismatched shapes or bad pair indices.
        """
        if pairs is not None and isinstance(features, torch.Tensor) and features.ndim == 3:
            raise ValueError("pairs index rows of (N, D) features; flatten multi-view input first")
        return super().forward(features, labels, pairs=pairs)


@register_loss("euclidean")
def euclidean_loss(cfg: LossConfig) -> EuclideanContrastiveLoss:
    """The thesis's Euclidean-distance contrastive loss with the configured margin."""
    return EuclideanContrastiveLoss(margin=cfg.margin, normalize=cfg.normalize)
