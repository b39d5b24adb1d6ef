"""Image classifiers with a real/AI (binary) or per-generator (multiclass) head.

The baselines of 002, 003 and 004 are all "a network body -> features -> one linear head",
trained end to end (or head only, for 004's frozen-backbone transfer) on class-balanced
batches of the seen classes. :class:`ImageClassifier` is that loop once; the method
families fill in the body and their hooks (perturbation, autoencoder reconstruction,
rotation pre-training, the combined loss).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthray.data.schema import REAL
from synthray.methods.base import (
    AI,
    FitContext,
    Method,
    MethodConfig,
    Prediction,
    ScoreFn,
    adam_steps,
    check_head,
    is_ai_from_probs,
)
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)


@config_dataclass
class ClassifierConfig(MethodConfig):
    """An image classifier's settings."""

    head: str = "binary"
    """"binary": one sigmoid output, real vs AI (002/003/004 on CIFAKE); "multiclass": one softmax output per seen class
    (attribution among the generators trained on).
    """
    log_every: int = 50
    """steps between training-loss log lines"""


class ClassifierNet(nn.Module):
    """``body`` (images -> (N, F) features) followed by a linear head.

    Args:
        body: the feature extractor.
        feature_dim: F.
        num_outputs: 1 (binary logit) or the number of classes.
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, R, R) images -> ((N, outputs) logits, (N, F) features)."""
        feats = self.body(x)
        return self.head(feats), feats


def balanced_bce(logit: torch.Tensor, is_ai: torch.Tensor) -> torch.Tensor:
    """BCE with real and AI rows weighted half each.

    Batches are balanced over generators, so real is one class of many; unweighted, the
    head would learn that "AI" is almost always right.

    Args:
        logit: (N,) AI logits.
        is_ai: (N,) bool targets.
    Returns:
        () loss.
    """
    target = is_ai.to(logit.dtype)
    n_ai = target.sum()
    n_real = target.numel() - n_ai
    per_row = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    # A batch without one side gives its rows the whole weight.
    w_ai = torch.where(n_real > 0, 0.5, 1.0) / n_ai.clamp_min(1)
    w_real = torch.where(n_ai > 0, 0.5, 1.0) / n_real.clamp_min(1)
    return (per_row * torch.where(is_ai, w_ai, w_real)).sum()


class ImageClassifier(Method):
    """The shared training/prediction loop; subclasses implement :meth:`build_body`.

    Hooks (all optional): :meth:`pretrain` (before the main phase), :meth:`train_input`
    (training-only input transform), :meth:`model_input` (applied at training and test,
    e.g. autoencoder reconstruction), :meth:`loss`, :meth:`trainable`, :meth:`set_train_mode`.
    """

    Config = ClassifierConfig

    def __init__(self, cfg: Any, name: str = "") -> None:
        super().__init__(cfg, name)
        check_head(cfg.head)
        self.net: ClassifierNet | None = None
        self.classes: list[str] = []

    @property
    def attributes(self) -> bool:  # type: ignore[override]
        return self.cfg.head == "multiclass"

    # --- hooks -----------------------------------------------------------------
    def build_body(self, ctx: FitContext) -> tuple[nn.Module, int]:
        """(images -> (N, F) features module, F) for ``ctx.resolution``."""
        raise NotImplementedError

    def pretrain(self, ctx: FitContext) -> dict[str, Any]:
        """Work before the main phase (self-supervised pre-training, an autoencoder)."""
        return {}

    def train_input(self, x: torch.Tensor) -> torch.Tensor:
        """Training-only transform of a batch (augmentation)."""
        return x

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Transform applied before the network at training and test time."""
        return x

    def trainable(self) -> Iterable[nn.Parameter]:
        assert self.net is not None
        return self.net.parameters()

    def set_train_mode(self) -> None:
        assert self.net is not None
        self.net.train()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the network the optimizer also trains (a loss's weights)."""
        return []

    def loss(
        self, logits: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of a batch: balanced BCE (binary) or cross-entropy (multiclass).

        Args:
            logits: (N, outputs).
            feats: (N, F) body features.
            labels: (N,) int64 indices into ``self.classes``.
        Returns:
            (scalar loss, parts to log).
        """
        if self.cfg.head == "binary":
            loss = balanced_bce(logits[:, 0], self.is_ai_target(labels))
        else:
            loss = F.cross_entropy(logits, labels)
        return loss, {}

    # --- the loop ----------------------------------------------------------------
    def is_ai_target(self, labels: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the row's class is not "real" (all True when "real" is not trained)."""
        if REAL not in self.classes:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.classes.index(REAL)

    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Builds the network for ``ctx`` and trains it for ``cfg.steps`` steps.

        Raises:
            ValueError: a binary head without "real" among the seen classes (nothing to
                contrast AI with), or too little data for one batch.
        """
        if self.cfg.head == "binary" and REAL not in ctx.classes:
            raise ValueError(f"{self.name}: a binary head needs {REAL!r} among the trained classes {ctx.classes}")
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        self.classes = list(ctx.classes)
        body, feature_dim = self.build_body(ctx)
        outputs = 1 if self.cfg.head == "binary" else len(self.classes)
        self.net = ClassifierNet(body, feature_dim, outputs).to(ctx.device)
        info: dict[str, Any] = dict(self.pretrain(ctx))
        params = [p for p in self.trainable() if p.requires_grad] + self.extra_parameters()
        t0 = time.perf_counter()
        last_parts: dict[str, float] = {}

        def loss_of(batch: dict[str, Any]) -> torch.Tensor:
            assert self.net is not None
            x = self.model_input(self.train_input(batch["image"]))
            logits, feats = self.net(x)
            loss, parts = self.loss(logits, feats, torch.as_tensor(batch["label"], device=ctx.device))
            last_parts.update(parts)
            return loss

        self.set_train_mode()
        losses = adam_steps(
            params, self.cfg.lr, ctx.epochs(self.cfg.batch_size), self.cfg.steps, loss_of, self.name, self.cfg.log_every
        )
        self.net.eval()
        info.update(
            train_loss_first=losses[0] if losses else None,
            train_loss_last=losses[-1] if losses else None,
            main_phase_s=round(time.perf_counter() - t0, 2),
            loss_parts=last_parts or None,
        )
        return info

    def _require_fit(self) -> ClassifierNet:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        return self.net

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        net = self._require_fit()
        net.eval()
        logits, _ = net(self.model_input(images.to(self.device)))
        if self.cfg.head == "binary":
            p = torch.sigmoid(logits[:, 0].float()).cpu().numpy()
            return Prediction(p, np.where(p >= 0.5, AI, REAL))
        probs = logits.float().softmax(dim=1)
        pred = probs.argmax(dim=1).cpu().numpy()
        return Prediction(
            is_ai_from_probs(probs, self.classes).cpu().numpy(), np.array([self.classes[i] for i in pred], dtype=object)
        )

    def modules(self) -> list[nn.Module]:
        return [self._require_fit()]

    def score_fn(self, label: str) -> ScoreFn:
        """Binary: the AI logit (negated for "real"); multiclass: the class's logit."""
        net = self._require_fit()
        if self.cfg.head == "binary":
            sign = -1.0 if label == REAL else 1.0
            return lambda x: sign * net(self.model_input(x))[0][:, 0]
        if label not in self.classes:
            raise ValueError(f"{self.name} has no output for {label!r}; classes: {self.classes}")
        idx = self.classes.index(label)
        return lambda x: net(self.model_input(x))[0][:, idx]
