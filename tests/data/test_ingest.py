"""Ingest: shards, manifest, bad files, duplicates, resume, idempotency, Ray == no Ray."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from synthray.config import IngestConfig, SplitConfig
from synthray.data import shards
from synthray.data.ingest import ChunkTask, IngestError, ingest, plan_chunks, read_manifest, shard_paths, write_chunk
from synthray.data.layouts import list_layouts
from synthray.data.manifest import MANIFEST_NAME
from synthray.data.schema import REAL, SHARD_SCHEMA
from tests.data.imagetrees import Expected, bad_dir, make_bad_files, make_stray_files, make_tree, write_image

REPO = Path(__file__).resolve().parents[2]


def _cfg(**overrides: Any) -> IngestConfig:
    fields = {"use_ray": False, "max_rows_per_shard": 8, **overrides}
    return IngestConfig(**fields)


def _rows(out: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    return [row for path in shard_paths(out) for row in pq.read_table(path, columns=columns).to_pylist()]


def _source_paths(out: Path) -> list[str]:
    return [row["source_path"] for row in _rows(out, ["source_path"])]


def _add_cross_class_duplicate(root: Path, expected: list[Expected]) -> Expected:
    """Copies a fake image into a real class folder: same bytes, two labels."""
    fake = next(e for e in expected if e.generator != REAL)
    real = next(e for e in expected if e.generator == REAL and e.splits == fake.splits)
    rel = f"{real.relpath.rsplit('/', 1)[0]}/copied_fake{Path(fake.relpath).suffix}"
    shutil.copyfile(root / fake.relpath, root / rel)
    return Expected(rel, REAL, real.splits, real.category)


def _build(layout: str, root: Path, per_class: int = 3) -> tuple[list[Expected], dict[str, str]]:
    """A tree with good images, a cross-class duplicate, every bad kind and strays.

    Returns (expected good files, {relpath: reason} of every file that must be listed bad).
    """
    expected = make_tree(layout, root, per_class=per_class)
    duplicate = _add_cross_class_duplicate(root, expected)
    folder = bad_dir(layout, root)
    prefix = folder.relative_to(root).as_posix()
    bad = {f"{prefix}/{name}": reason for name, reason in make_bad_files(folder).items()}
    bad.update(make_stray_files(layout, root))
    return [*expected, duplicate], bad


@pytest.mark.parametrize("layout", list_layouts())
def test_ingest_every_layout(layout: str, tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    expected, bad = _build(layout, root)
    manifest = ingest(layout, root, out, _cfg())

    by_rel = {e.relpath: e for e in expected}
    rows = _rows(out)
    assert sorted(r["source_path"] for r in rows) == sorted(by_rel)
    for row in rows:
        want = by_rel[row["source_path"]]
        data = (root / row["source_path"]).read_bytes()
        assert row["generator"] == want.generator and row["is_real"] == (want.generator == REAL)
        assert row["split"] in want.splits and row["category"] == want.category
        assert row["image"] == data and row["num_bytes"] == len(data)
        assert row["content_hash"] == hashlib.sha256(data).hexdigest()
        assert (row["width"], row["height"]) == (32, 32)
        assert row["format"] == {".png": "PNG", ".jpg": "JPEG"}[Path(row["source_path"]).suffix]
        assert row["dataset"] == layout
    for path in shard_paths(out):
        assert pq.read_schema(path).remove_metadata().equals(SHARD_SCHEMA)

    # Manifest: counts, totals, shards, every bad file with its reason, the duplicate.
    counts = collections.Counter((r["generator"], r["split"]) for r in rows)
    assert {(g, s): n for g, splits in manifest["counts"].items() for s, n in splits.items()} == counts
    assert manifest["total_rows"] == len(rows)
    assert manifest["total_bytes"] == sum(r["num_bytes"] for r in rows)
    assert [s["file"] for s in manifest["shards"]] == [p.name for p in shard_paths(out)]
    assert all(s["bytes"] == (out / s["file"]).stat().st_size for s in manifest["shards"])
    assert {b["relpath"]: b["reason"] for b in manifest["bad"]} == bad
    assert manifest["num_bad"] == len(bad) and all(b["message"] for b in manifest["bad"])
    assert manifest["num_cross_class_duplicate_groups"] == 1
    group = manifest["duplicates"][0]
    assert group["cross_class"] and group["count"] == 2 and REAL in group["labels"] and len(group["labels"]) == 2
    assert manifest["layout"] == layout and manifest["config"]["max_rows_per_shard"] == 8
    assert read_manifest(out) == json.loads(json.dumps(manifest))


def test_shards_mix_classes_and_respect_caps(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_tree("genimage", root, per_class=6)
    manifest = ingest("genimage", root, tmp_path / "rows", _cfg(max_rows_per_shard=10))
    tables = [pq.read_table(p, columns=["generator", "num_bytes"]) for p in shard_paths(tmp_path / "rows")]
    assert len(tables) == 8 and all(t.num_rows <= 10 for t in tables)
    # Shuffled before sharding: no full shard is a single class (a training stream needs
    # mixing); only the short remainder shard may happen to be.
    assert all(len(set(t.column("generator").to_pylist())) >= 2 for t in tables if t.num_rows == 10)

    size = max(t.column("num_bytes").to_pylist()[0] for t in tables)
    ingest("genimage", root, tmp_path / "bytes", _cfg(shard_bytes=3 * size, max_rows_per_shard=100))
    for path in shard_paths(tmp_path / "bytes"):
        sizes = pq.read_table(path, columns=["num_bytes"]).column("num_bytes").to_pylist()
        assert len(sizes) == 1 or sum(sizes) <= 3 * size
    assert manifest["total_rows"] == 72


def test_plan_chunks() -> None:
    assert plan_chunks([5, 5, 5, 5, 5], shard_bytes=10, max_rows=100) == [(0, 2), (2, 4), (4, 5)]
    assert plan_chunks([1] * 5, shard_bytes=100, max_rows=2) == [(0, 2), (2, 4), (4, 5)]
    assert plan_chunks([50, 1, 1], shard_bytes=10, max_rows=100) == [(0, 1), (1, 3)]
    assert plan_chunks([], shard_bytes=10, max_rows=2) == []


def test_shuffle_is_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_tree("cifake", root, per_class=5)
    ingest("cifake", root, tmp_path / "a", _cfg(shuffle_seed=1))
    ingest("cifake", root, tmp_path / "b", _cfg(shuffle_seed=1))
    ingest("cifake", root, tmp_path / "c", _cfg(shuffle_seed=2))
    assert _source_paths(tmp_path / "a") == _source_paths(tmp_path / "b")
    assert _source_paths(tmp_path / "a") != _source_paths(tmp_path / "c")


def _snapshot(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME}


def test_rerun_writes_nothing_new(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    _build("forensynths", root)
    first = ingest("forensynths", root, out, _cfg())
    before = _snapshot(out)
    second = ingest("forensynths", root, out, _cfg())
    assert _snapshot(out) == before
    assert second["run"]["new_shards"] == [] and second["run"]["ingested_files"] == 0
    for key in ("total_rows", "shards", "counts", "bad", "duplicates"):
        assert second[key] == first[key], key


def test_new_input_files_go_into_new_shards(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    make_tree("folder", root, per_class=4)
    first = ingest("folder", root, out, _cfg())
    before = _snapshot(out)
    for i in range(5):
        write_image(root / "new-gen" / f"n{i}.png", seed=900 + i)
    second = ingest("folder", root, out, _cfg())
    assert {k: v for k, v in _snapshot(out).items() if k in before} == before
    assert second["run"]["ingested_files"] == 5 and second["run"]["new_shards"]
    assert second["total_rows"] == first["total_rows"] + 5
    paths = _source_paths(out)
    assert len(paths) == len(set(paths))
    assert sum(second["counts"]["new-gen"].values()) == 5


def test_resume_after_interruption(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _build("genimage", root)
    clean = ingest("genimage", root, tmp_path / "clean", _cfg())
    out = tmp_path / "out"

    def killed_after_first_shard(task: ChunkTask) -> dict[str, Any]:
        if task.index >= 1:
            # A half-written shard, then the process "dies" (not an Exception: nothing
            # catches it, exactly like a kill between two shards).
            (out / f".{shards.shard_name(task.index)[:-8]}.deadbeef.tmp").write_bytes(b"PAR1 half")
            raise KeyboardInterrupt
        return write_chunk(task)

    with pytest.raises(KeyboardInterrupt):
        ingest("genimage", root, out, _cfg(), chunk_writer=killed_after_first_shard)
    assert [p.name for p in shard_paths(out)] == ["part-00000.parquet"]
    # A shard that was renamed into place but whose receipt never got written.
    shutil.copyfile(out / "part-00000.parquet", out / "part-00005.parquet")

    resumed = ingest("genimage", root, out, _cfg())
    assert sorted(resumed["run"]["discarded"]) == [".part-00001.deadbeef.tmp", "part-00005.parquet"]
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    paths = _source_paths(out)
    assert len(paths) == len(set(paths))
    assert sorted(paths) == sorted(_source_paths(tmp_path / "clean"))
    for key in ("total_rows", "counts", "bad", "num_duplicate_groups"):
        assert resumed[key] == clean[key], key


def test_lost_receipt_means_shard_is_redone(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    _build("cifake", root)
    first = ingest("cifake", root, out, _cfg())
    (out / shards.receipt_name(0)).unlink()
    second = ingest("cifake", root, out, _cfg())
    assert "part-00000.parquet" in second["run"]["discarded"]
    assert second["run"]["new_shards"] and second["run"]["ingested_files"] > 0
    paths = _source_paths(out)
    assert len(paths) == len(set(paths)) == first["total_rows"] == second["total_rows"]
    assert second["bad"] == first["bad"]


def test_failed_chunk_is_loud_and_redone(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    _build("folder", root)

    def fails_on_second(task: ChunkTask) -> dict[str, Any]:
        if task.index == 1:
            raise RuntimeError("disk on fire")
        return write_chunk(task)

    with pytest.raises(IngestError, match="part-00001.parquet: RuntimeError: disk on fire") as info:
        ingest("folder", root, out, _cfg(), chunk_writer=fails_on_second)
    partial = read_manifest(out)
    assert partial == json.loads(json.dumps(info.value.manifest))
    assert partial["run"]["failed_shards"][0]["shard"] == "part-00001.parquet"
    assert len(partial["shards"]) >= 1

    complete = ingest("folder", root, out, _cfg())
    assert complete["total_rows"] == ingest("folder", root, tmp_path / "clean", _cfg())["total_rows"]
    paths = _source_paths(out)
    assert len(paths) == len(set(paths))


def test_chunk_of_only_bad_files_gets_a_receipt(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    write_image(root / "good" / "a.png", seed=1)
    bad = make_bad_files(root / "junk")
    manifest = ingest("folder", root, out, _cfg(max_rows_per_shard=1))
    receipts = shards.read_receipts(out)
    assert len(receipts) == len(bad) + 1
    assert sum(r["file"] is None for r in receipts.values()) == len(bad)
    assert manifest["total_rows"] == 1 and len(manifest["shards"]) == 1 and manifest["num_bad"] == len(bad)
    assert ingest("folder", root, out, _cfg(max_rows_per_shard=1))["run"]["new_shards"] == []


def test_refuses_inconsistent_output(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    make_tree("folder", root, per_class=2)
    ingest("folder", root, out, _cfg())
    with pytest.raises(ValueError, match="split="):
        ingest("folder", root, out, _cfg(split=SplitConfig(salt="other")))
    with pytest.raises(ValueError, match="inside the input"):
        ingest("folder", root, root / "shards", _cfg())
    with pytest.raises(ValueError, match="unknown layout"):
        ingest("nope", root, tmp_path / "x", _cfg())
    with pytest.raises(ValueError, match="num_workers"):
        ingest("folder", root, tmp_path / "x", _cfg(num_workers=0))


def test_reader_helpers_on_empty_output(tmp_path: Path) -> None:
    assert shard_paths(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path)


def test_job_entrypoint(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    make_tree("folder", root, per_class=3)
    config = tmp_path / "ingest.yaml"
    config.write_text("max_rows_per_shard: 4\nsplit:\n  salt: job\n", encoding="utf-8")
    # As a job runs it: the script from the repository root (it is `synthray ingest`).
    done = subprocess.run(
        [sys.executable, "jobs/ingest.py", "folder", str(root), str(out), "--config", str(config), "--no-ray"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest["config"]["max_rows_per_shard"] == 4 and manifest["config"]["split"]["salt"] == "job"
    assert manifest["config"]["use_ray"] is False and all(s["rows"] <= 4 for s in manifest["shards"])


def test_ray_matches_local_and_fails_loudly(ray_cluster, tmp_path: Path) -> None:
    root = tmp_path / "in"
    _build("genimage", root, per_class=4)
    local = ingest("genimage", root, tmp_path / "local", _cfg())
    remote = ingest("genimage", root, tmp_path / "ray", _cfg(use_ray=True, num_workers=2))
    assert ray_cluster.is_initialized()  # an existing cluster is used, not shut down
    assert remote["run"]["used_ray"] and remote["run"]["num_workers"] == 2
    assert [p.name for p in shard_paths(tmp_path / "ray")] == [p.name for p in shard_paths(tmp_path / "local")]
    for a, b in zip(shard_paths(tmp_path / "local"), shard_paths(tmp_path / "ray")):
        assert pq.read_table(a).equals(pq.read_table(b))
    for key in ("total_rows", "counts", "shards", "bad", "duplicates"):
        assert remote[key] == local[key], key

    # A chunk whose task raises, and one whose worker process dies: both named, the rest
    # written, and the next run completes the set. Closures, so Ray ships them by value.
    def raises(task: ChunkTask) -> dict[str, Any]:
        if task.index == 2:
            raise RuntimeError("bad chunk")
        return write_chunk(task)

    def dies(task: ChunkTask) -> dict[str, Any]:
        if task.index == 1:
            os._exit(3)  # the worker process dies mid-chunk
        return write_chunk(task)

    for name, writer in (("raises", raises), ("dies", dies)):
        out = tmp_path / name
        with pytest.raises(IngestError, match="part-0000[12]"):
            ingest("genimage", root, out, _cfg(use_ray=True, num_workers=2), chunk_writer=writer)
        assert ingest("genimage", root, out, _cfg(use_ray=True, num_workers=2))["total_rows"] == local["total_rows"]
        assert len(set(_source_paths(out))) == local["total_rows"]
