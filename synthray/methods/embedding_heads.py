"""Classifiers on frozen embeddings: kNN (001), nearest centroid and the centroid comparator
(001's ablations), and 000's MLP.

Each fits on reference embeddings of the train split (``fit``) and answers for query
embeddings (``predict``). The thesis's classifiers on embeddings (001 §3.2.2, §4.3):

- kNN: majority vote of the k = 11 nearest references; every enrolled class can win,
  held-out generators included (they were never trained on, only enrolled).
- nearest centroid: the class whose mean embedding is nearest (Euclidean distance).
- centroid comparator: a feed-forward network takes ``[anchor, centroid]`` and says whether
  they are the same class; the anchor goes to the centroid with the highest match. Trained
  on the seen classes' centroids; at test time it also compares against held-out
  centroids it never saw (001 found that it then fails on zero-shot classes).
- MLP (000 §III.D): two linear layers with ReLU and dropout 0.5 on the embedding, trained
  with the encoder frozen; binary (000) or one output per seen class.
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthray.attribution.openset import vote
from synthray.data.schema import REAL
from synthray.methods.base import AI, Prediction, adam_steps, check_head
from synthray.methods.classifier import balanced_bce
from synthray.models.knn import knn_search
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)

CLASSIFIERS = ("knn", "centroid", "comparator", "mlp")


@config_dataclass
class HeadConfig:
    """Settings of the classifiers on embeddings (each reads the ones it needs)."""

    k: int = 11
    """kNN neighbours (the thesis's k)"""
    vote: str = "majority"
    """kNN: "majority" (the thesis) | "weighted" (by cosine similarity)"""
    head: str = "binary"
    """MLP output: "binary" (000, real vs AI) | "multiclass" (one per seen class)"""
    hidden: int = 128
    """MLP / comparator hidden width (000's embedding size)"""
    dropout: float = 0.5
    """MLP dropout (000)"""
    epochs: int = 20
    """MLP / comparator passes over the seen classes' embeddings (000: 20)"""
    batch_size: int = 128
    """MLP / comparator batch (000: 128)"""
    lr: float = 1e-4
    """MLP / comparator Adam learning rate (000: 1e-4)"""


def _class_means(emb: torch.Tensor, labels: np.ndarray, classes: list[str]) -> torch.Tensor:
    rows = []
    for c in classes:
        mask = torch.as_tensor(labels == c, device=emb.device)
        if not bool(mask.any()):
            raise ValueError(f"no reference embedding of class {c!r}")
        rows.append(emb[mask].mean(dim=0))
    return torch.stack(rows)


def _ai_margin(scores: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """Best non-real class score minus the real score: an is-AI score for AUC (higher = AI)."""
    if REAL not in classes:
        return torch.ones(scores.shape[0], device=scores.device)
    r = classes.index(REAL)
    others = torch.cat([scores[:, :r], scores[:, r + 1 :]], dim=1)
    if others.shape[1] == 0:
        return -scores[:, r]
    return others.max(dim=1).values - scores[:, r]


class EmbeddingHead(abc.ABC):
    """A classifier on (N, D) embeddings."""

    attributes = True  # labels name classes (False: only "real"/"ai")

    def __init__(self, cfg: HeadConfig) -> None:
        self.cfg = cfg
        self.classes: list[str] = []  # what predict() can answer

    @abc.abstractmethod
    def fit(self, emb: torch.Tensor, labels: np.ndarray, seen: list[str], enrolled: list[str]) -> dict[str, Any]:
        """Fits on reference embeddings.

        Args:
            emb: (M, D) reference embeddings (seen and held-out classes).
            labels: (M,) class names.
            seen: the classes the encoder trained on (trained heads learn only these).
            enrolled: every class with references (seen + held out).
        """

    @abc.abstractmethod
    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C) differentiable per-class scores, C = ``len(self.classes)``."""

    def predict(self, z: torch.Tensor) -> Prediction:
        with torch.no_grad():
            s = self.scores(z)
        pred = s.argmax(dim=1).cpu().numpy()
        return Prediction(
            _ai_margin(s, self.classes).cpu().numpy(), np.array([self.classes[i] for i in pred], dtype=object)
        )

    def score(self, z: torch.Tensor, label: str) -> torch.Tensor:
        """(N,) differentiable evidence for ``label`` (for explanations)."""
        if label not in self.classes:
            raise ValueError(f"no score for {label!r}; classes: {self.classes}")
        return self.scores(z)[:, self.classes.index(label)]

    def modules(self) -> list[nn.Module]:
        return []


class KnnHead(EmbeddingHead):
    """The thesis's kNN vote over every enrolled reference."""

    def fit(self, emb, labels, seen, enrolled):
        if self.cfg.k < 1 or self.cfg.vote not in ("majority", "weighted"):
            raise ValueError(f"need k >= 1 and vote 'majority' | 'weighted', got {self.cfg.k}, {self.cfg.vote!r}")
        self.refs, self.ref_labels = emb, np.asarray(labels, dtype=object)
        self.classes = list(enrolled)
        self.centroids = F.normalize(_class_means(emb, self.ref_labels, self.classes), dim=1)
        return {"references": int(len(labels))}

    def predict(self, z: torch.Tensor) -> Prediction:
        sims, idx = knn_search(z, self.refs, self.cfg.k)
        v = vote(
            self.ref_labels[idx.cpu().numpy()],
            sims.cpu().numpy(),
            weighted=self.cfg.vote == "weighted",
            classes=self.classes,
        )
        return Prediction(v.is_ai_score, np.array([self.classes[i] for i in v.predicted], dtype=object))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        # The vote itself has no gradient; explanations use the similarity to the class's
        # (normalised) mean reference, the direction its neighbours lie in.
        return F.normalize(z, dim=1) @ self.centroids.T


class CentroidHead(EmbeddingHead):
    """Nearest class centroid by Euclidean distance (001's third classifier)."""

    def fit(self, emb, labels, seen, enrolled):
        self.classes = list(enrolled)
        self.centroids = _class_means(emb, np.asarray(labels, dtype=object), self.classes)
        return {"centroids": len(self.classes)}

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(z, self.centroids).pow(2)


def _train_minibatches(model: nn.Module, loss_fn, n: int, cfg: HeadConfig, device: torch.device) -> list[float]:
    """``cfg.epochs`` shuffled passes of ``loss_fn(row indices)`` over ``n`` rows."""
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randperm(n, generator=g).to(device)[s : s + cfg.batch_size]
        for _ in range(cfg.epochs)
        for s in range(0, n, cfg.batch_size)
    ]
    model.train()
    losses = adam_steps(model.parameters(), cfg.lr, iter(batches), len(batches), loss_fn, "embedding head", 0)
    model.eval()
    return losses


def _seen_rows(emb: torch.Tensor, labels: np.ndarray, seen: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    index = {c: i for i, c in enumerate(seen)}
    keep = np.array([lab in index for lab in labels])
    if not keep.any():
        raise ValueError(f"no reference embedding of the seen classes {seen}")
    y = torch.tensor([index[lab] for lab in labels[keep]], device=emb.device)
    return emb[torch.as_tensor(keep, device=emb.device)], y


class ComparatorHead(EmbeddingHead):
    """001's feed-forward comparator of ``[anchor, centroid]`` pairs (same class or not)."""

    def fit(self, emb, labels, seen, enrolled):
        labels = np.asarray(labels, dtype=object)
        self.classes = list(enrolled)
        self.centroids = _class_means(emb, labels, self.classes)
        d = emb.shape[1]
        self.net = nn.Sequential(nn.Linear(2 * d, self.cfg.hidden), nn.ReLU(), nn.Linear(self.cfg.hidden, 1)).to(
            emb.device
        )
        x, y = _seen_rows(emb, labels, seen)
        seen_centroids = self.centroids[[self.classes.index(c) for c in seen]]
        # Every anchor against every seen centroid: one match per C - 1 mismatches, so the
        # matches are up-weighted to balance.
        pos_weight = torch.tensor(float(max(1, len(seen) - 1)), device=emb.device)

        def loss_fn(rows: torch.Tensor) -> torch.Tensor:
            logits = self._pair_logits(x[rows], seen_centroids)
            target = F.one_hot(y[rows], len(seen)).float()
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)

        losses = _train_minibatches(self.net, loss_fn, len(y), self.cfg, emb.device)
        return {"comparator_loss_first": losses[0], "comparator_loss_last": losses[-1]}

    def _pair_logits(self, z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        n, c = z.shape[0], centroids.shape[0]
        pairs = torch.cat([z[:, None, :].expand(n, c, -1), centroids[None, :, :].expand(n, c, -1)], dim=2)
        return self.net(pairs).squeeze(-1)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return self._pair_logits(z, self.centroids)

    def modules(self) -> list[nn.Module]:
        return [self.net]


class MlpHead(EmbeddingHead):
    """000's classifier: Linear -> ReLU -> Dropout(0.5) -> Linear on the frozen embedding."""

    def fit(self, emb, labels, seen, enrolled):
        check_head(self.cfg.head)
        labels = np.asarray(labels, dtype=object)
        binary = self.cfg.head == "binary"
        if binary and REAL not in seen:
            raise ValueError(f"a binary MLP needs {REAL!r} among the trained classes {seen}")
        self.attributes = not binary
        self.classes = [REAL, AI] if binary else list(seen)
        x, y = _seen_rows(emb, labels, seen)
        self.net = nn.Sequential(
            nn.Linear(emb.shape[1], self.cfg.hidden),
            nn.ReLU(),
            nn.Dropout(self.cfg.dropout),
            nn.Linear(self.cfg.hidden, 1 if binary else len(seen)),
        ).to(emb.device)
        real = seen.index(REAL) if REAL in seen else -1

        def loss_fn(rows: torch.Tensor) -> torch.Tensor:
            out = self.net(x[rows])
            return balanced_bce(out[:, 0], y[rows] != real) if binary else F.cross_entropy(out, y[rows])

        losses = _train_minibatches(self.net, loss_fn, len(y), self.cfg, emb.device)
        return {"mlp_loss_first": losses[0], "mlp_loss_last": losses[-1]}

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        # Binary: columns (real, ai) = (-logit/2, logit/2): argmax and the AI margin are the
        # logit's, and "real" has evidence of its own (the negated logit) to explain.
        return torch.cat([-out / 2, out / 2], dim=1) if out.shape[1] == 1 else out

    def modules(self) -> list[nn.Module]:
        return [self.net]


_HEADS = {"knn": KnnHead, "centroid": CentroidHead, "comparator": ComparatorHead, "mlp": MlpHead}


def build_head(name: str, cfg: HeadConfig) -> EmbeddingHead:
    """The classifier ``name`` (one of :data:`CLASSIFIERS`)."""
    if name not in _HEADS:
        raise ValueError(f"unknown embedding classifier {name!r}; use one of {CLASSIFIERS}")
    return _HEADS[name](cfg)
