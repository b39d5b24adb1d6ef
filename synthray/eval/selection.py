"""What one evaluation reads: the protocol resolved against the checkpoint and the shards, and
the rows of each role (test images, in-memory references, the index's references, enrollment
samples), chosen from the label columns before any image is read."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from synthray.eval.config import EvalConfig
from synthray.eval.data import RowSet, available, select_rows
from synthray.eval.protocols import CheckpointInfo, Protocol, resolve_protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Selection:
    """What one evaluation reads: the protocol and the rows of each role."""

    protocol: Protocol
    files: list[str]
    test: RowSet  # the test images (capped per class)
    refs: RowSet  # reference rows of every test class that has some (in-memory kNN, sweep)
    index_counts: dict[str, int]  # references per indexed class the index build chooses
    missing_refs: list[str]  # test classes without reference rows (no closed set, no sweep)
    enroll: RowSet | None  # validation images of the novel generators, enrolled in memory


def select_evaluation(cfg: EvalConfig, embedder: Any) -> Selection:
    """The protocol and the rows of one evaluation (labels only: nothing is embedded here).

    Args:
        cfg: the evaluation config (shards, splits, per-class caps, the protocol).
        embedder: the checkpoint's embedder (its classes resolve the protocol).
    Returns:
        the :class:`Selection`.
    Raises:
        ProtocolError: the protocol does not fit the checkpoint or the shards.
    """
    from synthray.data.pipeline import find_shards
    from synthray.data.manifest import read_labels
    from synthray.index.selection import choose_rows, reference_caps

    files = find_shards(cfg.shards)
    labels = read_labels(files)
    ref_available = available(labels, cfg.reference_split)
    protocol = resolve_protocol(
        cfg.protocol, CheckpointInfo.from_embedder(embedder), available(labels, cfg.test_split), ref_available
    )
    log.info(
        "protocol %s: indexed %s, zero-shot %s, novel %s",
        protocol.name,
        list(protocol.indexed),
        list(protocol.zero_shot),
        list(protocol.novel),
    )
    classes = list(protocol.test_classes)
    with_refs = [c for c in classes if ref_available.get(c, 0) > 0]
    every_ref = set(select_rows(labels, cfg.reference_split, with_refs).content_hash)
    return Selection(
        protocol=protocol,
        files=files,
        # No test image may be its own reference (the same bytes in both splits).
        test=select_rows(labels, cfg.test_split, classes, cfg.max_test_per_class, exclude=every_ref),
        refs=select_rows(labels, cfg.reference_split, with_refs, _reference_cap(cfg)),
        index_counts={
            c: len(h)
            for c, h in choose_rows(
                labels,
                cfg.reference_split,
                protocol.indexed,
                reference_caps(protocol.indexed, cfg.per_class, cfg.real_per_class),
            ).hashes.items()
        },
        missing_refs=[c for c in classes if c not in with_refs],
        enroll=select_rows(labels, cfg.calibration_split, list(protocol.novel), cfg.enroll_per_class)
        if cfg.enroll_per_class and protocol.novel
        else None,
    )


def _reference_cap(cfg: EvalConfig) -> int | None:
    """References per class held in memory: at least the index's ``per_class`` (the closed
    set uses exactly the index's rows), else ``reference_max_per_class``."""
    index_cap = None if cfg.per_class == "all" else int(cfg.per_class)
    if cfg.reference_max_per_class is None or index_cap is None:  # either one uncapped: all of them
        return None
    return max(cfg.reference_max_per_class, index_cap)
