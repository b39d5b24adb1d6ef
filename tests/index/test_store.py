"""The store on both engines (Qdrant Edge, the embedded default; qdrant-client's local mode, the
server's stand-in): ids, counts, deletes, exact and HNSW searches against numpy, metadata and
revisions, the model-version and dimension guards, the one-process lock, aliases, snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from synthray.index import Reference, StoreConfig, StoreError, open_store, point_id
from synthray.index.store import CALIBRATION, REVISION

ENGINES = ["edge", "client-local"]


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


def _cfg(tmp_path, engine: str, **kw) -> StoreConfig:
    return StoreConfig(path=str(tmp_path / "q"), engine=engine, **kw)


def _refs(n: int, generator: str, origin: str = "trained", start: int = 0) -> list[Reference]:
    return [
        Reference(
            generator=generator,
            is_real=generator == "real",
            content_hash=f"{generator}-{start + i:04d}",
            split="train",
            origin=origin,
        )
        for i in range(n)
    ]


def _unit(rng, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_upsert_is_idempotent_and_ids_are_deterministic(tmp_path, engine):
    rng = np.random.default_rng(0)
    refs = _refs(20, "a")
    with open_store(_cfg(tmp_path, engine, upsert_batch=7), "v1", 8) as store:  # several requests per upsert
        ids = store.upsert(_unit(rng, 20, 8), refs)
        assert ids == [point_id("v1", r.content_hash) for r in refs]
        again = store.upsert(_unit(rng, 20, 8), refs)  # same images, new vectors: overwritten
        assert again == ids and store.count() == 20
        assert store.existing(ids[:5] + [point_id("v1", "never-seen")]) == set(ids[:5])
        assert store.stored_labels(ids[:1]) == {ids[0]: ("a", "trained")}
    assert point_id("v2", "a-0000") != point_id("v1", "a-0000")  # ids are per model version


def test_counts_by_origin_delete_generator_and_calibration_points(tmp_path, engine):
    rng = np.random.default_rng(1)
    with open_store(_cfg(tmp_path, engine), "v1", 4) as store:
        store.upsert(_unit(rng, 5, 4), _refs(5, "real"))
        store.upsert(_unit(rng, 3, 4), _refs(3, "gan"))
        store.upsert(_unit(rng, 4, 4), _refs(4, "gan", origin="enrolled", start=100))
        store.upsert(_unit(rng, 2, 4), _refs(2, "new", origin="enrolled"))
        store.upsert(_unit(rng, 6, 4), _refs(6, "real", origin=CALIBRATION))  # same hashes as the references
        assert store.counts() == {
            "gan": {"trained": 3, "enrolled": 4},
            "new": {"trained": 0, "enrolled": 2},
            "real": {"trained": 5, "enrolled": 0},
        }
        assert store.count() == 14 and store.total_points() == 20 and len(store.calibration_vectors()) == 6
        assert store.delete_generator("gan", origin="enrolled") == 4
        assert store.counts()["gan"] == {"trained": 3, "enrolled": 0}
        assert store.delete_generator("gan") == 3
        assert store.delete_generator("gan") == 0
        assert store.delete_generator("real") == 5 and len(store.calibration_vectors()) == 6  # never the calibration
        assert "gan" not in store.counts() and store.count() == 2
        with pytest.raises(ValueError, match="origin"):
            store.upsert(_unit(rng, 1, 4), [Reference("x", False, "h", origin="scraped")])


@pytest.mark.parametrize("exact_max", [100_000, 0])  # numpy over the cached matrix; the engine's HNSW
def test_search_and_class_hits_match_exact_numpy(tmp_path, engine, exact_max):
    rng = np.random.default_rng(2)
    refs = _refs(200, "a") + _refs(100, "b")
    vecs = _unit(rng, 300, 16)
    queries = _unit(rng, 25, 16)
    with open_store(_cfg(tmp_path, engine, exact_max=exact_max, hnsw_ef=512), "v1", 16) as store:
        ids = store.upsert(vecs, refs)
        store.upsert(_unit(rng, 5, 16), _refs(5, "real", origin=CALIBRATION))  # never a neighbour
        found = store.search(queries, k=7)
        hits = store.class_hits(queries, k=5)
        both = store.query(queries, k=5)  # one product for both: the same answers
        assert both[0] == hits and [[h.id for h in r] for r in both[1]] == [[h.id for h in r[:5]] for r in found]
    sims = queries @ vecs.T
    labels = np.array([r.generator for r in refs])
    for q in range(len(queries)):
        order = np.argsort(-sims[q], kind="stable")[:7]
        assert [h.id for h in found[q]] == [ids[j] for j in order]
        assert np.allclose([h.similarity for h in found[q]], sims[q, order], atol=1e-5)
        for name in ("a", "b"):
            assert np.allclose(hits[q][name], np.sort(sims[q, labels == name])[::-1][:5], atol=1e-5)


def test_metadata_merges_none_removes_and_writes_bump_the_revision(tmp_path, engine):
    with open_store(_cfg(tmp_path, engine), "v1", 4) as store:
        r0 = store.metadata()[REVISION]
        store.set_metadata({"thresholds": {"ai_threshold": 0.5}, "classes": ["a"]})
        store.set_metadata({"classes": ["a", "b"]})
        meta = store.metadata()
        assert meta["model_version"] == "v1" and meta["thresholds"] == {"ai_threshold": 0.5}
        assert meta["classes"] == ["a", "b"] and meta[REVISION] == r0 + 2
        store.set_metadata({"thresholds": None})  # a rebuild without calibration drops stale thresholds
        assert "thresholds" not in store.metadata()
        store.upsert(np.eye(4, dtype=np.float32)[:1], _refs(1, "a"))
        assert store.metadata()[REVISION] == r0 + 4


def test_other_model_version_and_other_dimension_are_refused(tmp_path, engine):
    cfg = _cfg(tmp_path, engine, collection="refs")  # an explicit name: the version is still checked
    with open_store(cfg, "v1", 8) as store:
        store.upsert(np.eye(8, dtype=np.float32)[:2], _refs(2, "a"))
        with pytest.raises(ValueError, match=r"\(2, 8\) vectors"):
            store.upsert(np.zeros((2, 4), dtype=np.float32), _refs(2, "a"))
        with pytest.raises(ValueError, match="non-finite"):
            store.upsert(np.full((1, 8), np.nan, dtype=np.float32), _refs(1, "a"))
        with pytest.raises(ValueError, match=r"\(N, 8\)"):
            store.search(np.zeros((1, 4), dtype=np.float32), 3)
    with pytest.raises(StoreError, match=r"model version 'v1', not 'v2'.*cannot be compared"):
        open_store(cfg, "v2", 8)
    with pytest.raises(StoreError, match="dimension 8, encoder gives 16"):
        open_store(cfg, "v1", 16)
    with pytest.raises(StoreError, match="no collection .* build the index"):
        open_store(_cfg(tmp_path, engine), "v3", 8, create=False)
    with open_store(cfg, "v1", 8) as store:  # the refusals left the store intact and unlocked
        assert store.count() == 2


def test_second_process_cannot_open_an_embedded_store(tmp_path, engine):
    cfg = _cfg(tmp_path, engine)
    script = textwrap.dedent(f"""
        import json
        from synthray.index import StoreConfig, StoreError, open_store
        try:
            open_store(StoreConfig(path={cfg.path!r}, engine={engine!r}), "v1", 4).close()
        except StoreError as exc:
            print(json.dumps({{"error": str(exc)}}))
        else:
            print(json.dumps({{"error": None}}))
    """)
    with open_store(cfg, "v1", 4) as store:
        store.upsert(np.eye(4, dtype=np.float32)[:1], _refs(1, "a"))
        held = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert held.returncode == 0, held.stderr[-2000:]
    error = json.loads(held.stdout.strip().splitlines()[-1])["error"]
    assert error and "open in another process" in error and "Qdrant server" in error
    # Once the owner closes it, another process may open it.
    free = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert json.loads(free.stdout.strip().splitlines()[-1])["error"] is None, free.stderr[-2000:]


def test_edge_is_the_embedded_default_and_persists(tmp_path):
    from synthray.index.edge_store import EdgeStore

    rng = np.random.default_rng(3)
    vecs = _unit(rng, 10, 8)
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 8) as store:
        assert isinstance(store, EdgeStore)
        store.upsert(vecs, _refs(10, "a"))
        store.set_metadata({"thresholds": {"ai_threshold": 0.1}})
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 8, create=False) as store:
        assert store.count() == 10 and store.metadata()["thresholds"] == {"ai_threshold": 0.1}
        got, _ = store.vectors("a")
        assert np.allclose(np.sort(got, axis=0), np.sort(vecs, axis=0), atol=1e-6)


def test_edge_snapshot_restores_into_a_fresh_store_with_the_same_answers(tmp_path):
    from synthray.index.edge_store import restore_snapshot

    rng = np.random.default_rng(4)
    queries = _unit(rng, 10, 16)
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 16) as store:
        store.upsert(_unit(rng, 60, 16), _refs(40, "a") + _refs(20, "b"))
        store.set_metadata({"thresholds": {"ai_threshold": 0.2}})
        archive = store.snapshot(tmp_path / "backup" / "v1.tar")
        before = ([[h.id for h in row] for row in store.search(queries, 5)], store.class_hits(queries, 3))
        store.upsert(_unit(rng, 1, 16), _refs(1, "c"))  # the shard is usable after the snapshot
    name = restore_snapshot(archive, tmp_path / "fresh")
    with open_store(StoreConfig(path=str(tmp_path / "fresh")), "v1", 16, create=False) as restored:
        assert restored.collection == name and restored.count() == 60
        assert restored.metadata()["thresholds"] == {"ai_threshold": 0.2}
        after = ([[h.id for h in row] for row in restored.search(queries, 5)], restored.class_hits(queries, 3))
    assert after[0] == before[0]
    assert all(np.allclose(a[c], b[c]) for a, b in zip(after[1], before[1]) for c in a)
    with pytest.raises(StoreError, match="exists"):
        restore_snapshot(archive, tmp_path / "fresh")


def test_alias_moves_in_one_step_and_rolls_back(tmp_path, engine):
    from synthray.index.collections import resolve_alias

    cfg = _cfg(tmp_path, engine)
    with open_store(cfg, "v1", 4) as old:
        assert old.set_alias("synthray-active") is None
    with open_store(cfg, "v2", 4) as new:
        assert new.set_alias("synthray-active") == "synthray-v1"
    assert resolve_alias(cfg, "synthray-active") == "synthray-v2"
    with open_store(cfg, "v1", 4) as old:  # roll back: move it back
        old.set_alias("synthray-active")
    assert resolve_alias(cfg, "synthray-active") == "synthray-v1"
