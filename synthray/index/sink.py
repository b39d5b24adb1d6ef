"""The driver's end of an index build's embedding stream: references into the store as they
arrive, calibration queries kept for later. The driver is the only process that opens the store
(embedded Qdrant lets one process own a storage folder), so every write goes through here."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from synthray.index.store import BaseStore, references_from_rows

log = logging.getLogger(__name__)

#: Seconds between progress lines.
PROGRESS_EVERY_S = 5.0


class ReferenceSink:
    """The driver's end of the stream: reference rows go to the store as they arrive,
    calibration rows are kept (vectors + true class) until every reference is written.

    Args:
        store: the open store (owned by this process).
        ref_split: split of the reference rows.
        missing: content hashes of references still to write.
        cal_split: split of the calibration rows.
        cal_hashes: content hashes of the calibration queries.
    """

    def __init__(
        self, store: BaseStore, ref_split: str, missing: set[str], cal_split: str, cal_hashes: set[str]
    ) -> None:
        self.store = store
        self.ref_split, self.missing = ref_split, set(missing)
        self.cal_split, self.cal_left = cal_split, set(cal_hashes)
        self.total = len(self.missing) + len(self.cal_left)
        self.added = 0
        self.rows = 0
        self.write_s = 0.0
        self.cal_vectors: list[np.ndarray] = []
        self.cal_labels: list[str] = []
        self.cal_hashes: list[str] = []
        self.start = time.perf_counter()
        self._last_log = self.start

    def consume(self, batch: dict[str, Any]) -> None:
        """Takes one embedded batch (label columns + ``embedding``)."""
        hashes = [str(h) for h in batch["content_hash"]]
        splits = [str(s) for s in batch["split"]]
        emb = np.asarray(batch["embedding"], dtype=np.float32)
        ref_rows, cal_rows = [], []
        for i, (h, s) in enumerate(zip(hashes, splits)):
            # A hash is taken once: duplicate rows (the same file ingested twice) add nothing.
            if s == self.ref_split and h in self.missing:
                self.missing.discard(h)
                ref_rows.append(i)
            elif s == self.cal_split and h in self.cal_left:
                self.cal_left.discard(h)
                cal_rows.append(i)
        if ref_rows:
            cols = {
                k: [batch[k][i] for i in ref_rows]
                for k in ("content_hash", "generator", "is_real", "split", "dataset", "source_path")
            }
            t0 = time.perf_counter()
            self.store.upsert(emb[ref_rows], references_from_rows(cols))
            self.write_s += time.perf_counter() - t0
            self.added += len(ref_rows)
        for i in cal_rows:
            self.cal_vectors.append(emb[i])
            self.cal_labels.append(str(batch["generator"][i]))
            self.cal_hashes.append(hashes[i])
        self.rows += len(ref_rows) + len(cal_rows)
        now = time.perf_counter()
        if now - self._last_log >= PROGRESS_EVERY_S or self.rows == self.total:
            self._last_log = now
            log.info(
                "index: %d/%d images embedded (%d references written, %d calibration queries), %.1f images/s",
                self.rows,
                self.total,
                self.added,
                len(self.cal_labels),
                self.rows / max(now - self.start, 1e-9),
            )
