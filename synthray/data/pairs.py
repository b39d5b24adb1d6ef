"""Batches of source groups: real images next to the fakes made from them (after DRCT).

An encoder that may tell real from fake by what an image shows will: a few training
photographs are easy to memorise, and every test photograph then looks "not real". DRCT
(Chen et al., ICML 2024) trains on a real image together with its generator reconstruction,
so content explains nothing and only the generator's traces separate the two. Here a *group*
is a real image and the fakes made from it (the shard column ``group``; synthbench writes
such pairs). A batch takes ``batch_size // classes_per_batch`` groups and the same ``classes_per_batch - 1``
generators from each: every class has its positives for SupCon, and every fake has its own
source image in the batch as a negative.

Ingest keeps a group's rows next to each other in the shards, so a buffer of a few groups'
worth of rows is enough. Rows without a group, and classes a group lacks, are filled from other
groups (still positives, no longer pairs).
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from synthray.data.balanced import Row, _collate, labelled_rows

log = logging.getLogger(__name__)


class PairBatcher:
    """Regroups rows into batches of source groups.

    Args:
        batch_size: rows per output batch.
        num_classes: classes in the stream (int labels in [0, num_classes)).
        real_label: the label of real images (every group's source).
        samples_per_class: rows of each class per batch at the least (>= 2): the batch is shared evenly
            among its classes, so with few classes it holds more source groups.
        classes_per_batch: classes per batch, the real class included; None = as many as fit.
        label_key / group_key: the label and group columns.
        max_buffer: rows held before a batch is forced out; None = 16 batches.
        drop_last: drop the final short batch.
        seed: RNG seed for the choice of generators; None = fresh randomness.
    """

    def __init__(
        self,
        batch_size: int,
        num_classes: int,
        real_label: int,
        samples_per_class: int = 4,
        classes_per_batch: int | None = None,
        label_key: str = "label",
        group_key: str = "group",
        max_buffer: int | None = None,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        if num_classes < 2 or not 0 <= real_label < num_classes:
            raise ValueError(f"need >= 2 classes and a real label among them, got {num_classes}, {real_label}")
        if samples_per_class < 2 or batch_size < 2 * samples_per_class:
            raise ValueError(
                f"need samples_per_class >= 2 and batch_size >= 2 * samples_per_class, got "
                f"{samples_per_class}, {batch_size}"
            )
        fit = min(num_classes, batch_size // samples_per_class)
        self.classes_per_batch = fit if classes_per_batch is None else min(classes_per_batch, fit)
        if self.classes_per_batch < 2:
            raise ValueError("a pair batch needs the real class and at least one generator")
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.real_label = real_label
        # Groups (so rows per class) in a batch: the batch shared evenly among its classes, at
        # least samples_per_class; with few classes a batch holds more groups, not fewer rows.
        self.groups_per_batch = max(samples_per_class, batch_size // self.classes_per_batch)
        self.label_key, self.group_key = label_key, group_key
        self.max_buffer = max_buffer if max_buffer is not None else 16 * batch_size
        self.drop_last = drop_last
        self.rng = np.random.default_rng(seed)
        self.paired_rows = 0  # fake rows emitted beside their own source image
        self.rows_out = 0
        self.evicted_rows = 0  # rows dropped for want of a partner (an ungrouped stream)

    def __call__(self, batches: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Consumes column batches (with ``label`` and ``group`` columns), yields pair batches."""
        # group -> label -> rows; insertion order is arrival order (oldest first).
        groups: dict[str, dict[int, collections.deque[Row]]] = {}
        held = 0
        for batch in batches:
            for label, row in labelled_rows(batch, self.label_key, self.num_classes):
                key = str(row.get(self.group_key) or "") or f"\0{id(row)}"
                groups.setdefault(key, collections.defaultdict(collections.deque))[label].append(row)
                held += 1
            while True:
                picked = self._pick(groups, force=held > self.max_buffer)
                if picked is None:
                    break
                held = sum(len(q) for g in groups.values() for q in g.values())
                yield _collate(picked)
            if held > 2 * self.max_buffer:
                held = self._evict(groups)
        while True:
            picked = self._pick(groups, force=True)
            if picked is None or (self.drop_last and len(picked) < self.batch_size):
                break
            yield _collate(picked)

    def _evict(self, groups: dict[str, dict[int, collections.deque[Row]]]) -> int:
        """Drops the oldest groups that cannot make a pair (no source, or no fake) until the
        buffer is back at its bound; returns the rows still held. Only a stream that is not
        grouped (ingest keeps groups together) gets here."""
        held = sum(len(q) for g in groups.values() for q in g.values())
        dropped = 0
        for k in [k for k, g in groups.items() if not self._complete(g)]:
            if held <= self.max_buffer:
                break
            n = sum(len(q) for q in groups.pop(k).values())
            held -= n
            dropped += n
        if dropped:
            self.evicted_rows += dropped
            log.warning(
                "pair batching dropped %d rows that found no partner within %d buffered rows (is the stream grouped?)",
                dropped,
                self.max_buffer,
            )
        return held

    def _complete(self, group: Mapping[int, collections.deque[Row]]) -> bool:
        return bool(group.get(self.real_label)) and any(q for lab, q in group.items() if lab != self.real_label)

    def _pick(self, groups: dict[str, dict[int, collections.deque[Row]]], force: bool) -> list[Row] | None:
        """One batch taken out of the buffer, or None if none is ready."""
        ready = [k for k, g in groups.items() if self._complete(g)]
        # Wait for twice the groups a batch needs: the generators then overlap well.
        if not ready or (not force and len(ready) < 2 * self.groups_per_batch):
            return None
        chosen = ready[: self.groups_per_batch]  # oldest first: keeps the buffer bounded
        coverage: collections.Counter[int] = collections.Counter()
        for k in chosen:
            coverage.update(lab for lab, q in groups[k].items() if q and lab != self.real_label)
        labels = sorted(coverage, key=lambda lab: (-coverage[lab], self.rng.random()))
        labels = labels[: self.classes_per_batch - 1]
        per_class = self.batch_size // (len(labels) + 1)
        picked: list[Row] = []
        for k in chosen[:per_class]:
            group = groups[k]
            picked.append(group[self.real_label][0])  # the source stays while its fakes last
            for lab in labels:
                if group.get(lab):
                    picked.append(group[lab].popleft())
                    self.paired_rows += 1
        # Classes short of per_class rows (a group lacked them): fill from other groups.
        counts = collections.Counter(int(r[self.label_key]) for r in picked)
        others = [k for k in groups if k not in chosen]
        for lab in labels:
            for k in others:
                if counts[lab] >= per_class:
                    break
                if groups[k].get(lab):
                    picked.append(groups[k][lab].popleft())
                    counts[lab] += 1
        for k in list(groups):
            group = groups[k]
            if not any(q for lab, q in group.items() if lab != self.real_label) and (
                k in chosen or not any(group.values())
            ):
                del groups[k]  # no fakes left: its source has served them all
        # A forced pick at the end of the stream may find nothing usable left.
        if not picked:
            return None
        self.rows_out += len(picked)
        self.rng.shuffle(picked)  # type: ignore[arg-type]
        return picked

    @property
    def paired_share(self) -> float:
        """Share of emitted rows that were fakes beside their own source (a health figure)."""
        return self.paired_rows / self.rows_out if self.rows_out else 0.0


def make_batcher(
    pipeline: Any,
    num_classes: int,
    batch_size: int,
    real_label: int | None,
    drop_last: bool,
    seed: int | None,
) -> Any:
    """The batcher ``pipeline.pairs`` asks for: :class:`PairBatcher` (when the classes include
    real), else :class:`~synthray.data.balanced.BalancedBatcher`.

    Args:
        pipeline: a :class:`~synthray.config.PipelineConfig`.
        num_classes: classes in the label space.
        batch_size: rows per batch.
        real_label: the real class's label, None when it is not trained (then no pairs).
        drop_last: drop a final short batch.
        seed: the batcher's RNG seed.
    """
    from synthray.data.balanced import BalancedBatcher

    if pipeline.pairs and real_label is not None:
        return PairBatcher(
            batch_size,
            num_classes,
            real_label,
            samples_per_class=pipeline.samples_per_class,
            classes_per_batch=pipeline.classes_per_batch,
            drop_last=drop_last,
            seed=seed,
        )
    if pipeline.pairs:
        log.warning("pipeline.pairs is on but the real class is not trained: class-balanced batches instead")
    return BalancedBatcher(
        batch_size=batch_size,
        num_classes=num_classes,
        samples_per_class=pipeline.samples_per_class,
        classes_per_batch=pipeline.classes_per_batch,
        drop_last=drop_last,
        seed=seed,
    )
