"""The enrollment archive: content-addressed images and the append-only log that says which
are enrolled under which generator."""

from __future__ import annotations

import hashlib

import pytest

from synthray.index.enrolled import LOG_NAME, EnrollmentArchive


def _item(tag: str) -> tuple[str, str, bytes]:
    data = f"image bytes {tag}".encode()
    return hashlib.sha256(data).hexdigest(), f"{tag}.png", data


def test_add_is_idempotent_keeps_bytes_and_remove_ends_only_that_generator(tmp_path):
    archive = EnrollmentArchive(tmp_path / "enrolled")
    a, b, c = _item("a"), _item("b"), _item("c")
    assert archive.add("gen-x", [a, b]) == [a[0], b[0]]
    assert archive.add("gen-x", [a, b]) == []  # re-uploads change nothing
    assert archive.add("gen-y", [c]) == [c[0]]
    assert archive.read(a[0]) == a[2]
    assert {e.content_hash: e.generator for e in archive.entries()} == {a[0]: "gen-x", b[0]: "gen-x", c[0]: "gen-y"}
    assert archive.remove("gen-x", [a[0]]) == 1
    assert archive.remove("gen-y", [b[0]]) == 0  # b is gen-x's: not touched
    assert sorted(e.content_hash for e in archive.entries()) == sorted([b[0], c[0]])
    assert archive.remove("gen-x") == 1 and [e.generator for e in archive.entries()] == ["gen-y"]
    assert archive.read(a[0]) == a[2]  # files stay: a later re-enrollment finds them
    # A fresh object on the same folder sees the same state (it is the log's replay).
    assert [e.content_hash for e in EnrollmentArchive(tmp_path / "enrolled").entries()] == [c[0]]


def test_a_hash_that_does_not_match_its_bytes_is_refused_and_nothing_is_logged(tmp_path):
    archive = EnrollmentArchive(tmp_path / "enrolled")
    good = _item("good")
    with pytest.raises(ValueError, match="does not match"):
        archive.add("gen-x", [good, (good[0], "liar.png", b"other bytes")])
    assert archive.entries() == []
    with pytest.raises(ValueError, match="sha256"):
        archive.read("../../etc/passwd")


def test_a_line_cut_by_a_crash_is_ignored_and_later_lines_still_count(tmp_path):
    archive = EnrollmentArchive(tmp_path / "enrolled")
    a, b = _item("a"), _item("b")
    archive.add("gen-x", [a])
    with open(tmp_path / "enrolled" / LOG_NAME, "a", encoding="utf-8") as fh:
        fh.write('{"op": "add", "generator": "gen-x", "ha')  # the process died mid-write
    archive2 = EnrollmentArchive(tmp_path / "enrolled")
    assert [e.content_hash for e in archive2.entries()] == [a[0]]
    # The next append starts on its own line, so the cut line never swallows it.
    archive2.add("gen-x", [b])
    assert sorted(e.content_hash for e in EnrollmentArchive(tmp_path / "enrolled").entries()) == sorted([a[0], b[0]])
