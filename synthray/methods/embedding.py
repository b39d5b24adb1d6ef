"""Contrastive encoders + a classifier on their embeddings (001, 000).

The encoder trains with the project's SupCon core (:func:`synthray.train.local.fit_local`:
the same loop, loss registry and checkpoints as ``synthray train``), then every reference
image is embedded and a classifier from ``embedding_heads.py`` is fitted on the frozen
embeddings. Methods with the same encoder settings share one trained encoder within a
comparison (it is keyed by its training config); each still reports the encoder's training
time as its own.

- ``supcon_knn`` (001): SupCon (temperature 0.1), EfficientNet-B0 + projection head, kNN k=11.
- ``supcon_centroid``, ``supcon_comparator`` (001 ablations): same encoder, nearest centroid /
  the centroid-pair feed-forward comparator.
- ``euclidean_knn`` (001 ablation): the Euclidean-distance margin loss (siamese: every pair of
  the batch through the one shared-weight encoder), kNN.
- ``supcon_mlp`` (000): SupCon (temperature 0.05) on ResNet-50 + projection head, lr 1e-4, then
  000's MLP on the frozen embeddings.
- ``supcon_mlp_nohead`` (000 ablation): the same without the projection head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from synthray.config import TrainConfig, to_dict
from synthray.losses.config import LossConfig
from synthray.methods.base import FitContext, Method, MethodConfig, Prediction, ScoreFn
from synthray.methods.embedding_heads import CLASSIFIERS, EmbeddingHead, HeadConfig, build_head
from synthray.methods.registry import register_method
from synthray.models.config import EncoderConfig
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)

FIT_RECORD = "fit.json"  # beside an encoder run: its checkpoint and training seconds


@config_dataclass
class EmbeddingConfig(MethodConfig):
    """A contrastive encoder and the classifier on its embeddings."""

    lr: float = 1e-3
    """peak AdamW learning rate of the encoder (the project's training default)"""
    backbone: str = "efficientnet_b0"
    """timm name (001: EfficientNet-B0; 000: ResNet-50)"""
    weights_path: str | None = None
    """local pretrained backbone weights; None = random init"""
    embedding_dim: int = 128
    """001 and 000: 128"""
    head_layers: int = 2
    """projection-head depth; 0 = none (000's ablation)"""
    loss: str = "supcon"
    """registered loss: "supcon" | "euclidean" """
    temperature: float = 0.1
    """SupCon temperature (001: 0.1; 000: 0.05)"""
    margin: float = 1.0
    """Euclidean loss margin (001 kept 1)"""
    steps_per_epoch: int = 50
    """encoder steps between validations/checkpoints"""
    classifier: str = "knn"
    """knn | centroid | comparator | mlp"""
    classifier_config: HeadConfig = dataclasses.field(default_factory=HeadConfig)


_000 = {"backbone": "resnet50", "temperature": 0.05, "lr": 1e-4, "classifier": "mlp"}


@register_method(
    "supcon_mlp_nohead", "000 ablation: SupCon encoder without projection head + MLP", head_layers=0, **_000
)
@register_method("supcon_mlp", "000: SupCon (ResNet-50, temperature 0.05) + MLP on frozen embeddings", **_000)
@register_method(
    "euclidean_knn", "001 ablation: Euclidean-margin (siamese) contrastive encoder + kNN", loss="euclidean"
)
@register_method(
    "supcon_comparator",
    "001 ablation: SupCon encoder + centroid/anchor feed-forward comparator",
    classifier="comparator",
)
@register_method("supcon_centroid", "001 ablation: SupCon encoder + nearest class centroid", classifier="centroid")
@register_method("supcon_knn", "001: SupCon encoder (EfficientNet-B0) + kNN (k=11) over enrolled references")
class EmbeddingMethod(Method):
    """A contrastive encoder with a classifier on its embeddings."""

    Config = EmbeddingConfig

    def __init__(self, cfg: EmbeddingConfig, name: str = "") -> None:
        super().__init__(cfg, name)
        if cfg.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {cfg.classifier!r}; use one of {CLASSIFIERS}")
        self.head: EmbeddingHead = build_head(cfg.classifier, cfg.classifier_config)
        self.encoder: nn.Module | None = None

    @property
    def attributes(self) -> bool:  # type: ignore[override]
        return self.head.attributes if self.cfg.classifier == "mlp" else True

    def train_config(self, ctx: FitContext) -> TrainConfig:
        """The SupCon run that trains this method's encoder (keyed by everything but its name)."""
        per_epoch = max(1, min(self.cfg.steps, self.cfg.steps_per_epoch))
        epochs = max(1, math.ceil(self.cfg.steps / per_epoch))
        cfg = TrainConfig(
            shards=str(ctx.shards),
            run_dir=str(ctx.work_dir / "encoders"),
            run_name="",
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            lr=self.cfg.lr,
            warmup_epochs=0.1 * epochs,
            steps_per_epoch=per_epoch,
            val_batches=2,
            knn_val_per_class=10,
            checkpoints_to_keep=1,
            seed=ctx.seed,
            experiment=ctx.experiment,
            encoder=EncoderConfig(
                backbone=self.cfg.backbone,
                weights_path=self.cfg.weights_path,
                pretrained=self.cfg.weights_path is not None,
                embedding_dim=self.cfg.embedding_dim,
                head_layers=self.cfg.head_layers,
            ),
            loss=LossConfig(name=self.cfg.loss, temperature=self.cfg.temperature, margin=self.cfg.margin),
            preprocess=ctx.preprocess,
            pipeline=ctx.pipeline,
        )
        key = hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
        return dataclasses.replace(cfg, run_name=f"{self.cfg.loss}-{key}")

    def _fit_encoder(self, ctx: FitContext) -> tuple[nn.Module, dict[str, Any]]:
        from synthray.models import build_encoder
        from synthray.train.checkpoint import load_checkpoint
        from synthray.train.local import fit_local
        from synthray.train.plan import run_path

        cfg = self.train_config(ctx)
        record_path = run_path(cfg) / FIT_RECORD
        info: dict[str, Any] = {"encoder_run": cfg.run_name}
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            info.update(encoder_reused=True, shared_s=record["seconds"])
            log.info("%s: reusing encoder %s (trained in %.1f s)", self.name, cfg.run_name, record["seconds"])
        else:
            t0 = time.perf_counter()
            result = fit_local(cfg, device=ctx.device)
            if result["classes"] != list(ctx.classes):
                raise ValueError(
                    f"encoder trained on {result['classes']}, the comparison's seen classes are {ctx.classes}"
                )
            record = {
                "checkpoint": result["checkpoint"],
                "seconds": round(time.perf_counter() - t0, 2),
                "metrics": result["metrics"],
            }
            record_path.write_text(json.dumps(record, indent=2, default=str))
            info.update(encoder_reused=False)
        info["encoder_val_knn_acc"] = record["metrics"].get("val_knn_acc")
        model = build_encoder(cfg.encoder)
        model.load_state_dict(load_checkpoint(record["checkpoint"])["model"])
        return model.to(ctx.device).eval(), info

    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Trains (or reuses) the encoder, embeds the references, fits the classifier."""
        self.device = ctx.device
        self.encoder, info = self._fit_encoder(ctx)
        embs, labels = [], []
        with torch.no_grad():
            for x, names in ctx.reference_batches():
                embs.append(self.encoder(x).float())
                labels.append(names)
        if not embs:
            raise ValueError(f"no reference images in the train split of {ctx.reference_classes}")
        emb, lab = torch.cat(embs), np.concatenate(labels)
        torch.manual_seed(ctx.seed)
        info.update(self.head.fit(emb, lab, list(ctx.classes), ctx.reference_classes))
        return info

    def _require_fit(self) -> nn.Module:
        if self.encoder is None:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        return self.encoder

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        z = self._require_fit()(images.to(self.device)).float()
        return self.head.predict(z)

    def modules(self) -> list[nn.Module]:
        return [self._require_fit(), *self.head.modules()]

    def score_fn(self, label: str) -> ScoreFn:
        encoder = self._require_fit()
        return lambda x: self.head.score(encoder(x).float(), label)
