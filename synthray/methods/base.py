"""What every detector method is, and what the harness gives it to train on.

A method trains from a :class:`FitContext` (class-balanced training batches of the seen
classes, reference images of every class, the device) and answers
:meth:`Method.predict` for a batch of images with a :class:`Prediction`: an is-AI score
and a label. The same harness (``compare.py``) trains and scores every method, so their
numbers are comparable.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from synthray.config import ExperimentConfig, PipelineConfig, PreprocessConfig
from synthray.data.schema import REAL
from synthray.typed_config import config_dataclass

log = logging.getLogger(__name__)

#: The label a real-vs-AI (binary) method gives every image it calls generated.
AI = "ai"
#: Head kinds of the image and embedding classifiers.
HEADS = ("binary", "multiclass")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@config_dataclass
class MethodConfig:
    """Settings every trained method has (subclasses add their own)."""

    steps: int = 200
    """optimizer steps of the main training phase"""
    batch_size: int = 64
    """images per class-balanced batch"""
    lr: float = 1e-4
    """Adam learning rate (000 and 004 use 1e-4)"""


@dataclasses.dataclass
class Prediction:
    """A method's answer for N images."""

    is_ai: np.ndarray  # (N,) float, higher = more likely generated (any monotone score; for AUC)
    labels: np.ndarray  # (N,) str: a class name, "real", or AI ("ai") for binary methods

    def __post_init__(self) -> None:
        self.is_ai = np.asarray(self.is_ai, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=object).reshape(-1)
        if len(self.is_ai) != len(self.labels):
            raise ValueError(f"{len(self.is_ai)} scores but {len(self.labels)} labels")

    @staticmethod
    def concat(parts: list["Prediction"]) -> "Prediction":
        if not parts:
            return Prediction(np.zeros(0), np.zeros(0, dtype=object))
        return Prediction(np.concatenate([p.is_ai for p in parts]), np.concatenate([p.labels for p in parts]))


def check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; use one of {HEADS}")


@dataclasses.dataclass
class FitContext:
    """The data and place a method trains in (built by the harness; see ``compare.py``).

    ``classes`` are the seen (trained) classes in label order; ``held_out`` are present in the
    data but never trained on (zero-shot). Methods that keep reference embeddings enrol
    every class (seen and held out) from the train split, as a user enrols a new generator
    with a few images; trained parts (networks, classifier heads) see seen classes only.
    """

    shards: str  # ingest output folder
    classes: list[str]  # seen classes, label order ("real" first when present)
    held_out: list[str]  # zero-shot classes (references only)
    experiment: ExperimentConfig  # the setting that chose them (SupCon runs re-plan with it)
    preprocess: PreprocessConfig  # test-time pixels: resolution, scaling, no augmentation
    pipeline: PipelineConfig  # balanced-batch settings of the training stream
    device: torch.device
    work_dir: Path  # scratch for checkpoints; shared by the methods of one comparison
    seed: int = 0
    references_per_class: int | None = None  # train images per class enrolled as references; None = all

    @property
    def reference_classes(self) -> list[str]:
        """Every class references are enrolled for: seen first, then held out."""
        return list(self.classes) + [c for c in self.held_out if c not in self.classes]

    @property
    def resolution(self) -> int:
        return int(self.preprocess.resolution)

    def train_batches(self, batch_size: int, epoch: int) -> Iterator[dict[str, Any]]:
        """Class-balanced training batches of the seen classes for one pass.

        Yields:
            {"image": (B, 3, R, R) float on ``device``, "label": (B,) int64 array into ``classes``, ...}
        """
        from synthray.data.loader import iter_balanced_local

        return iter_balanced_local(
            self.shards,
            self.classes,
            batch_size,
            self.preprocess,
            self.pipeline,
            split="train",
            seed=self.seed * 1000 + epoch,
            device=self.device,
        )

    def reference_batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        """Train-split images of every reference class, at most ``references_per_class`` each.

        Yields:
            ((B, 3, R, R) float images on ``device``, (B,) class names).
        """
        from synthray.data.loader import iter_preprocessed
        from synthray.data.preprocess import finalize_pixels

        names = self.reference_classes
        pipe = dataclasses.replace(self.pipeline, batch_size=batch_size, balance="none")
        taken = dict.fromkeys(names, 0)
        cap = self.references_per_class
        for batch in iter_preprocessed(self.shards, names, self.preprocess, pipe, split="train", seed=self.seed):
            labels = np.array([names[i] for i in batch["label"]], dtype=object)
            keep = []
            for j, name in enumerate(labels):
                if cap is None or taken[name] < cap:
                    taken[name] += 1
                    keep.append(j)
            if keep:
                yield finalize_pixels(batch["image"][keep], self.preprocess, self.device), labels[keep]

    def epochs(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Training batches pass after pass, endlessly (callers stop after their steps).

        Raises:
            ValueError: when one whole pass yields no batch (too little data for ``batch_size``).
        """
        epoch = 0
        while True:
            got = False
            for batch in self.train_batches(batch_size, epoch):
                got = True
                yield batch
            if not got:
                raise ValueError(
                    f"the train split of {self.classes} fills no batch of {batch_size}; lower batch_size or add data"
                )
            epoch += 1


def adam_steps(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    batches: Iterator[Any],
    steps: int,
    loss_of: Callable[[Any], torch.Tensor],
    what: str,
    log_every: int = 50,
) -> list[float]:
    """``steps`` Adam steps on ``loss_of(batch)``, one batch each: the loop every trained part shares.

    Args:
        params: what the optimizer updates.
        lr: Adam learning rate.
        batches: at least ``steps`` batches (fewer end the loop early).
        steps: optimizer steps.
        loss_of: batch -> scalar loss (with its graph).
        what: name in the log lines.
        log_every: steps between log lines of the mean loss (0 = none).
    Returns:
        the loss of every step.
    """
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for step, batch in zip(range(steps), batches):
        loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            log.info("%s step %d/%d: loss %.5f", what, step + 1, steps, sum(losses[-log_every:]) / log_every)
    return losses


def count_parameters(modules: list[nn.Module]) -> int:
    """Parameters of the modules a method predicts with (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


class Method(abc.ABC):
    """A detector: ``fit(ctx)`` once, then ``predict(images)`` batch by batch.

    Subclasses define ``Config`` (a dataclass, usually extending :class:`MethodConfig`) and
    are registered with :func:`~synthray.methods.registry.register_method`.

    Args:
        cfg: the method's config.
        name: the registered name it was built under (for logs and reports).
    """

    Config: type = MethodConfig
    #: Whether labels name generators (attribution) rather than only "real"/"ai".
    attributes: bool = False

    def __init__(self, cfg: Any, name: str = "") -> None:
        self.cfg = cfg
        self.name = name or type(self).__name__
        self.device = torch.device("cpu")

    @abc.abstractmethod
    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Trains on ``ctx``; returns facts about the fit (losses, seconds of shared parts)."""

    @abc.abstractmethod
    def predict(self, images: torch.Tensor) -> Prediction:
        """Scores (N, 3, R, R) float images (on the fit device); no gradients."""

    @abc.abstractmethod
    def modules(self) -> list[nn.Module]:
        """The modules predictions go through (for the parameter count)."""

    def score_fn(self, label: str) -> ScoreFn | None:
        """A differentiable ``images (N, 3, R, R) -> (N,)`` evidence for ``label``, for
        explanations; None when the method has none."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": dataclasses.asdict(self.cfg), "attributes": self.attributes}


def is_ai_from_probs(probs: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """1 - p(real) from class probabilities (1 everywhere when "real" is not a class)."""
    if REAL not in classes:
        return torch.ones(probs.shape[0], device=probs.device)
    return 1.0 - probs[:, classes.index(REAL)]
