"""Choosing reference rows from label columns: deterministic caps, duplicates, class errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from synthray.index.selection import check_classes, choose_rows, parse_cap, row_predicate


def _labels(rows):
    """rows: (generator, split, content_hash)."""
    gens, splits, hashes = zip(*rows)
    return pa.table({"generator": list(gens), "split": list(splits), "content_hash": list(hashes)})


ROWS = (
    [("a", "train", f"a{i:02d}") for i in (5, 3, 9, 1, 7)]
    + [("b", "train", f"b{i:02d}") for i in (2, 8, 4)]
    + [("a", "train", "a03")]  # the same file twice under one label: one image
    + [("a", "train", "zz"), ("b", "train", "zz")]  # the same bytes under two labels: left out
    + [("a", "val", f"v{i}") for i in range(3)]
    + [("c", "test", "c0")]
)


def test_cap_takes_the_smallest_hashes_per_class_every_time():
    labels = _labels(ROWS)
    choice = choose_rows(labels, "train", ["a", "b"], cap=2)
    assert choice.hashes == {"a": ["a01", "a03"], "b": ["b02", "b04"]}
    assert choice.available == {"a": 5, "b": 3} and choice.ambiguous == 2  # zz under a and under b
    assert not choice.complete and choice.total == 4
    shuffled = labels.take(pa.array(list(reversed(range(labels.num_rows)))))
    assert choose_rows(shuffled, "train", ["a", "b"], cap=2).hashes == choice.hashes  # row order does not matter


def test_all_and_exclude():
    labels = _labels(ROWS)
    everything = choose_rows(labels, "val", ["a"], cap=None)
    assert everything.hashes == {"a": ["v0", "v1", "v2"]} and everything.complete
    only_b = choose_rows(labels, "train", ["b"], cap=None)  # "zz" is also an "a": ambiguous for b alone too
    assert only_b.hashes == {"b": ["b02", "b04", "b08"]} and only_b.ambiguous == 1 and not only_b.complete
    val = choose_rows(labels, "val", ["a", "b"], cap=10, exclude={"v1"})
    assert val.hashes == {"a": ["v0", "v2"], "b": []} and val.excluded == 1 and not val.complete


def test_unknown_and_empty_classes_are_named():
    labels = _labels(ROWS)
    with pytest.raises(ValueError, match=r"\['nope'\] not in the shards; available in split 'train': \['a', 'b'\]"):
        check_classes(["a", "nope"], choose_rows(labels, "train", ["a", "nope"], None), labels)
    with pytest.raises(ValueError, match=r"\['c'\] have no usable images in split 'train'.*'test': 1"):
        check_classes(["a", "c"], choose_rows(labels, "train", ["a", "c"], None), labels)
    check_classes(["a", "b"], choose_rows(labels, "train", ["a", "b"], 1), labels)


@pytest.mark.parametrize("bad", [0, -3, "some", 2.5, True])
def test_bad_caps_are_refused(bad):
    with pytest.raises(ValueError, match="per_class"):
        parse_cap(bad)


def test_caps():
    assert parse_cap("all") is None and parse_cap("ALL") is None and parse_cap(50) == 50


def test_row_predicate_selects_the_parts():
    labels = _labels(ROWS)
    expr = row_predicate([("train", ["b"], None), ("val", ["a"], {"v2", "a01"})], pc.field, "isin")
    got = sorted(labels.filter(expr).column("content_hash").to_pylist())
    assert got == ["b02", "b04", "b08", "v2", "zz"]  # "a01" is in train, not val
    assert row_predicate([], pc.field, "isin") is None
