"""Class-balanced batches from a stream of rows.

SupCon learns from the positives and negatives inside one batch (Khosla et al. 2020),
so a batch that happens to hold two classes teaches little. This regroups any stream
of row batches (Ray Data's ``iter_batches``, a plain loop over shards) into batches of
exactly ``batch_size`` rows that draw ``samples_per_class`` rows from each of
``classes_per_batch`` classes. It needs no Ray, and each Ray Train worker runs its own
over its dataset shard.

Bounded memory: it holds at most ``max_buffer`` rows. Shards are written class-mixed
(ingest shuffles before sharding), so a small buffer is enough; if the stream is
ordered by class anyway, it emits the best batches it can rather than stall, and says so.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

log = logging.getLogger(__name__)

Row = dict[str, Any]


class BalancedBatcher:
    """Regroups rows into class-balanced batches.

    Args:
        batch_size: rows per output batch.
        num_classes: classes in the stream (labels are ints in [0, num_classes)).
        samples_per_class: rows of each chosen class per batch (>= 2, or SupCon has no positive).
        classes_per_batch: distinct classes per batch; None takes as many as fit
            (min(num_classes, batch_size // samples_per_class)).
        label_key: the column holding integer labels.
        max_buffer: rows held before a batch is forced out; None = 8 batches.
        drop_last: drop the final short batch at the end of the stream.
        seed: RNG seed for the tie-breaks between classes; None = fresh randomness.
    """

    def __init__(
        self,
        batch_size: int,
        num_classes: int,
        samples_per_class: int = 4,
        classes_per_batch: int | None = None,
        label_key: str = "label",
        max_buffer: int | None = None,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if samples_per_class < 1 or batch_size < samples_per_class:
            raise ValueError(
                f"need 1 <= samples_per_class <= batch_size, got samples_per_class={samples_per_class}, "
                f"batch_size={batch_size}"
            )
        fit = min(num_classes, batch_size // samples_per_class)
        self.classes_per_batch = fit if classes_per_batch is None else classes_per_batch
        if not 1 <= self.classes_per_batch <= num_classes:
            raise ValueError(f"classes_per_batch must lie in [1, {num_classes}], got {classes_per_batch}")
        if self.classes_per_batch * samples_per_class > batch_size:
            raise ValueError(
                f"classes_per_batch * samples_per_class = {self.classes_per_batch * samples_per_class} "
                f"exceeds batch_size {batch_size}"
            )
        self.batch_size = batch_size
        self.num_classes = num_classes
        # Share the batch evenly among the chosen classes; the remainder goes to the
        # classes with the most rows waiting.
        self.per_class = batch_size // self.classes_per_batch
        self.label_key = label_key
        self.max_buffer = max_buffer if max_buffer is not None else 8 * batch_size
        if self.max_buffer < batch_size:
            raise ValueError(f"max_buffer ({self.max_buffer}) must hold at least one batch ({batch_size})")
        self.drop_last = drop_last
        self.rng = np.random.default_rng(seed)
        self.forced_batches = 0  # batches emitted short of full balance (buffer pressure / stream end)

    def __call__(self, batches: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Consumes column batches and yields balanced column batches.

        Args:
            batches: dicts of equal-length columns (numpy arrays, torch tensors or lists),
                one of them ``label_key``.
        Yields:
            dicts with the same columns, ``batch_size`` rows each (the last may be short
            unless ``drop_last``).
        """
        buffers: dict[int, collections.deque[Row]] = collections.defaultdict(collections.deque)
        held = 0
        for batch in batches:
            for label, row in labelled_rows(batch, self.label_key, self.num_classes):
                buffers[label].append(row)
                held += 1
            while True:
                picked = self._pick(buffers, require_balance=held <= self.max_buffer)
                if picked is None:
                    break
                held -= self.batch_size
                yield _collate(picked)
        # End of stream: emit what is left, as balanced as it can be.
        while held > 0:
            if held < self.batch_size and self.drop_last:
                break
            picked = self._pick(buffers, require_balance=False, limit=min(held, self.batch_size))
            assert picked is not None
            held -= len(picked)
            yield _collate(picked)

    def _pick(
        self,
        buffers: dict[int, collections.deque[Row]],
        require_balance: bool,
        limit: int | None = None,
    ) -> list[Row] | None:
        """Takes one batch out of the buffers, or None if a balanced one is not there yet."""
        size = self.batch_size if limit is None else limit
        ready = [c for c, q in buffers.items() if len(q) >= self.per_class]
        if require_balance and len(ready) < self.classes_per_batch:
            return None
        if sum(len(q) for q in buffers.values()) < size:
            return None
        if not require_balance:
            self.forced_batches += 1
            if self.forced_batches == 1 and limit is None:
                log.warning(
                    "class-balanced batching is short of classes (buffer full): the input stream "
                    "is not class-mixed enough; emitting less balanced batches"
                )
        # Fullest classes first keeps the buffer bounded; random jitter breaks ties so no
        # class is always preferred.
        order = sorted(buffers, key=lambda c: (-len(buffers[c]), self.rng.random()))
        chosen = order[: self.classes_per_batch]
        picked: list[Row] = []
        for c in chosen:
            take = min(self.per_class, len(buffers[c]), size - len(picked))
            picked.extend(buffers[c].popleft() for _ in range(take))
        # Remainder (batch_size not divisible, or short classes): one row at a time from the
        # fullest classes in turn, so no class takes the whole remainder.
        while len(picked) < size:
            before = len(picked)
            for c in order:
                if len(picked) < size and buffers[c]:
                    picked.append(buffers[c].popleft())
            if len(picked) == before:
                break
        for c in [c for c, q in buffers.items() if not q]:
            del buffers[c]
        self.rng.shuffle(picked)  # type: ignore[arg-type]
        return picked


def labelled_rows(batch: Mapping[str, Any], label_key: str, num_classes: int) -> Iterator[tuple[int, Row]]:
    """``(label, row)`` for every row of a column batch; a label outside the classes is an error."""
    for row in _rows(batch):
        label = int(row[label_key])
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} outside [0, {num_classes})")
        yield label, row


def _rows(batch: Mapping[str, Any]) -> Iterator[Row]:
    keys = list(batch)
    if not keys:
        return
    n = len(batch[keys[0]])
    for k in keys:
        if len(batch[k]) != n:
            raise ValueError(f"column {k!r} has {len(batch[k])} rows, expected {n}")
    for i in range(n):
        yield {k: batch[k][i] for k in keys}


def _collate(rows: list[Row]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        first = vals[0]
        if type(first).__module__ == "torch":
            import torch

            out[k] = torch.stack(vals)
        elif isinstance(first, np.ndarray):
            out[k] = np.stack(vals)
        elif isinstance(first, (np.generic, int, float, bool, str)):
            out[k] = np.asarray(vals)
        else:  # bytes and other objects: keep them as they are
            out[k] = np.asarray(vals, dtype=object)
    return out
