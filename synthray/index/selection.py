"""Which shard rows become references (or calibration queries): chosen from the label
columns alone, so no image bytes are read to decide.

The choice is deterministic: per class, the distinct content hashes sorted, the first
``cap`` kept. A re-run (or a resumed run) therefore picks exactly the same rows, and the
deterministic point ids (model version, content hash) tell which of them are stored.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from synthray.data.schema import REAL

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Choice:
    """Rows chosen from one split: content hashes per class."""

    split: str
    hashes: dict[str, list[str]]  # class -> chosen content hashes, ascending
    available: dict[str, int]  # class -> distinct images of that class in the split
    ambiguous: int = 0  # (image, class) pairs left out: the same bytes also carry another label
    excluded: int = 0  # images left out because the caller excluded their hashes

    @property
    def total(self) -> int:
        return sum(len(h) for h in self.hashes.values())

    @property
    def complete(self) -> bool:
        """Every image of these classes in the split is chosen (a class predicate selects
        the same rows as a content-hash list, and is far cheaper to push into the scan)."""
        return (
            self.ambiguous == 0
            and self.excluded == 0
            and all(len(self.hashes[c]) == self.available[c] for c in self.hashes)
        )

    def all_hashes(self) -> set[str]:
        return {h for hs in self.hashes.values() for h in hs}


def parse_cap(per_class: int | str | None) -> int | None:
    """``per_class`` as a row cap: an int >= 1, or None for "all".

    Raises:
        ValueError: anything else (0, negatives, other strings).
    """
    if per_class is None or (isinstance(per_class, str) and per_class.strip().lower() == "all"):
        return None
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1 or 'all', got {per_class!r}")
    return per_class


def reference_caps(
    classes: Sequence[str], per_class: int | str | None, real_per_class: int | str | None = None
) -> dict[str, int | None]:
    """References per class: ``per_class`` each, real ``real_per_class`` (None = 4 x per_class:
    real is the most varied class, and its references must cover photographs, not one scene).

    Raises:
        ValueError: a malformed cap (see :func:`parse_cap`).
    """
    cap = parse_cap(per_class)
    if real_per_class is None:
        real = None if cap is None else REAL_FACTOR * cap
    else:
        real = parse_cap(real_per_class)
    return {c: (real if c == REAL else cap) for c in classes}


#: Real references per generator reference when ``real_per_class`` is not given.
REAL_FACTOR = 4


def choose_rows(
    labels: pa.Table,
    split: str,
    classes: Sequence[str],
    cap: int | None | Mapping[str, int | None],
    exclude: Iterable[str] = (),
) -> Choice:
    """The rows of ``classes`` in ``split`` to use, at most ``cap`` per class.

    Args:
        labels: shard label columns (``generator``, ``split``, ``content_hash``).
        split: the split chosen from.
        classes: the classes wanted.
        cap: images per class; None = all; a mapping gives a class its own cap (missing = all).
        exclude: content hashes never chosen (e.g. references, when choosing queries).
    Returns:
        the :class:`Choice`; classes with no rows get an empty list (callers decide
        whether that is an error). Images whose bytes appear under two labels in the
        split are left out (a reference cannot vote for two classes) with a warning.
    """
    in_split = labels.filter(pc.field("split") == split).select(["content_hash", "generator"])
    # Distinct (image, label) pairs of the whole split: the same bytes under two labels are
    # ambiguous even when only one of the labels is indexed.
    pairs = in_split.group_by(["content_hash", "generator"]).aggregate([])
    per_hash = pairs.group_by("content_hash").aggregate([("generator", "count")])
    ambiguous_all = pa.array(
        per_hash.filter(pc.field("generator_count") > 1).column("content_hash").to_pylist(), type=pa.string()
    )
    pairs = pairs.filter(pc.field("generator").isin(list(classes)))
    ambiguous = pairs.filter(pc.field("content_hash").isin(ambiguous_all)).num_rows
    if ambiguous:
        log.warning(
            "%d image(s) of classes %s in split %r also carry another class label (same bytes); left out",
            ambiguous,
            list(classes),
            split,
        )
        pairs = pairs.filter(~pc.field("content_hash").isin(ambiguous_all))
    excluded_hashes = pa.array(sorted(set(exclude)), type=pa.string())
    excluded = 0
    if len(excluded_hashes):
        kept = pairs.filter(pc.invert(pc.is_in(pairs.column("content_hash"), value_set=excluded_hashes)))
        excluded, pairs = pairs.num_rows - kept.num_rows, kept
    hashes: dict[str, list[str]] = {}
    available: dict[str, int] = {}
    gens = pairs.column("generator")
    for c in classes:
        found = sorted(pairs.filter(pc.equal(gens, c)).column("content_hash").to_pylist())
        available[c] = len(found)
        c_cap = cap.get(c) if isinstance(cap, Mapping) else cap
        hashes[c] = found if c_cap is None else found[:c_cap]
    return Choice(split=split, hashes=hashes, available=available, ambiguous=ambiguous, excluded=excluded)


def shard_classes(labels: pa.Table) -> dict[str, dict[str, int]]:
    """Rows per class and split: {generator: {split: n}} (for error messages)."""
    out: dict[str, dict[str, int]] = {}
    if labels.num_rows:
        grouped = labels.group_by(["generator", "split"]).aggregate([("content_hash", "count")])
        for row in grouped.to_pylist():
            out.setdefault(row["generator"], {})[row["split"]] = row["content_hash_count"]
    return dict(sorted(out.items()))


def check_classes(classes: Iterable[str], choice: Choice, labels: pa.Table) -> None:
    """Every requested class exists in the shards and has rows in the chosen split.

    Raises:
        ValueError: naming the unknown or empty classes and the classes that are there.
    """
    present = shard_classes(labels)
    unknown = [c for c in classes if c not in present]
    in_split = sorted(c for c, splits in present.items() if splits.get(choice.split))
    if unknown:
        raise ValueError(f"class(es) {unknown} not in the shards; available in split {choice.split!r}: {in_split}")
    empty = [c for c in classes if choice.available.get(c, 0) == 0]
    if empty:
        raise ValueError(
            f"class(es) {empty} have no usable images in split {choice.split!r} "
            f"(rows per split: { {c: present[c] for c in empty} }); available there: {in_split}"
        )


def row_predicate(parts: Sequence[tuple[str, Sequence[str], set[str] | None]], col: Any, is_in: str) -> Any:
    """An OR over ``(split, classes, hashes)`` parts as a pyarrow or Ray Data expression.

    Args:
        parts: per part, its split, its classes, and the content hashes to keep (None =
            every row of those classes in that split).
        col: the column constructor (``pyarrow.compute.field`` or ``ray.data.expressions.col``).
        is_in: the name of the membership method (``isin`` for pyarrow, ``is_in`` for Ray).
    Returns:
        the expression, or None when ``parts`` is empty.
    """
    expr = None
    for split, classes, hashes in parts:
        member = (
            getattr(col("generator"), is_in)(sorted(classes))
            if hashes is None
            else getattr(col("content_hash"), is_in)(sorted(hashes))
        )
        term = (col("split") == split) & member
        expr = term if expr is None else (expr | term)
    return expr
