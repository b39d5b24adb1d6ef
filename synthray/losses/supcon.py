"""Supervised Contrastive loss (after Khosla et al. 2020, "Supervised Contrastive Learning")."""

from __future__ import annotations

import torch

from synthray.losses.base import EmbeddingLoss
from synthray.losses.config import LossConfig
from synthray.losses.registry import register_loss


class SupConLoss(EmbeddingLoss):
    """SupCon, the ``L_out`` form (mean over positives outside the log), as thesis 001 §3.4.2.

    For anchor ``i`` with positives ``P(i)`` (same label, not ``i``) and contrast set
    ``A(i)`` (every row but ``i``)::

        L_i = -(tau / base_tau) / |P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )

    and the loss is the mean of ``L_i`` over the anchors that have at least one positive
    (an anchor alone in its class has no pull term; counting it would only dilute the mean).
    With multi-view input every view is an anchor and the other views of its sample are
    positives. Input is expected unit length (the encoder's output); ``normalize=True``
    (default) makes sure of it at no cost to unit inputs.

    Args:
        temperature: softmax temperature tau (> 0); 0.1 in 001, 0.05 in 000.
        base_temperature: the loss is scaled by ``temperature / base_temperature``;
            None = temperature (no scaling).
        normalize: L2-normalise the features inside the loss.
    Raises:
        ValueError: on a non-positive temperature.
    """

    def __init__(
        self, *, temperature: float = 0.1, base_temperature: float | None = None, normalize: bool = True
    ) -> None:
        super().__init__(normalize=normalize)
        base_temperature = temperature if base_temperature is None else base_temperature
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {temperature}, {base_temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)

    def compute(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """SupCon on (M, D) full-precision embeddings and (M,) labels; None if M < 2."""
        m = z.shape[0]
        if m < 2:  # nothing to contrast with (known from the shape, no device sync)
            return None
        not_self = ~torch.eye(m, dtype=torch.bool, device=z.device)
        positives = (labels[:, None] == labels[None, :]) & not_self
        n_pos = positives.sum(dim=1)
        has_pos = n_pos > 0
        logits = z @ z.T / self.temperature  # (M, M)
        # logsumexp subtracts the row max itself; self-contrast is masked out of the
        # denominator. With M >= 2 every row keeps a finite entry, so no row is all -inf.
        log_denom = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - log_denom
        mean_log_prob_pos = torch.where(positives, log_prob, 0.0).sum(dim=1) / n_pos.clamp_min(1)
        # Anchors without a positive are left out of the mean by masking rather than by
        # indexing or an `if`: no host-device sync on the GPU, and a batch with no positive
        # at all comes out as an exact 0 that is still part of the graph.
        per_anchor = torch.where(has_pos, mean_log_prob_pos, 0.0)
        mean = per_anchor.sum() / has_pos.sum().clamp_min(1)
        return -(self.temperature / self.base_temperature) * mean


@register_loss("supcon")
def supcon_loss(cfg: LossConfig) -> SupConLoss:
    """SupCon with the configured temperature (the thesis's training loss)."""
    return SupConLoss(temperature=cfg.temperature, base_temperature=cfg.base_temperature, normalize=cfg.normalize)
