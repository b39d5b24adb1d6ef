"""The Qdrant store in embedded mode: ids, counts, deletes, searches against numpy, the
model-version and dimension guards, and the one-process lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from synthray.index import Reference, StoreConfig, StoreError, open_store, point_id


def _refs(n: int, generator: str, origin: str = "trained", start: int = 0) -> list[Reference]:
    return [Reference(generator=generator, is_real=generator == "real", content_hash=f"{generator}-{start + i:04d}",
                      split="train", origin=origin) for i in range(n)]


def _unit(rng, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_upsert_is_idempotent_and_ids_are_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    cfg = StoreConfig(path=str(tmp_path / "q"), upsert_batch=7)  # several requests per upsert
    refs = _refs(20, "a")
    with open_store(cfg, "v1", 8) as store:
        ids = store.upsert(_unit(rng, 20, 8), refs)
        assert ids == [point_id("v1", r.content_hash) for r in refs]
        again = store.upsert(_unit(rng, 20, 8), refs)  # same images, new vectors: overwritten
        assert again == ids and store.count() == 20
        assert store.existing(ids[:5] + [point_id("v1", "never-seen")]) == set(ids[:5])
    assert point_id("v2", "a-0000") != point_id("v1", "a-0000")  # ids are per model version


def test_counts_by_origin_and_delete_generator(tmp_path):
    rng = np.random.default_rng(1)
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 4) as store:
        store.upsert(_unit(rng, 5, 4), _refs(5, "real"))
        store.upsert(_unit(rng, 3, 4), _refs(3, "gan"))
        store.upsert(_unit(rng, 4, 4), _refs(4, "gan", origin="enrolled", start=100))
        store.upsert(_unit(rng, 2, 4), _refs(2, "new", origin="enrolled"))
        assert store.counts() == {"gan": {"trained": 3, "enrolled": 4}, "new": {"trained": 0, "enrolled": 2},
                                  "real": {"trained": 5, "enrolled": 0}}
        assert store.delete_generator("gan", origin="enrolled") == 4
        assert store.counts()["gan"] == {"trained": 3, "enrolled": 0}
        assert store.delete_generator("gan") == 3
        assert store.delete_generator("gan") == 0
        assert "gan" not in store.counts() and store.count() == 7
        with pytest.raises(ValueError, match="origin"):
            store.upsert(_unit(rng, 1, 4), [Reference("x", False, "h", origin="scraped")])


def test_search_matches_exact_numpy_neighbours(tmp_path):
    rng = np.random.default_rng(2)
    refs = _refs(300, "a")
    vecs = _unit(rng, 300, 16)
    queries = _unit(rng, 25, 16)
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 16) as store:
        ids = store.upsert(vecs, refs)
        found = store.search(queries, k=7)
    sims = queries @ vecs.T
    for q, hits in enumerate(found):
        order = np.argsort(-sims[q], kind="stable")[:7]
        assert [h.id for h in hits] == [ids[j] for j in order]
        assert np.allclose([h.similarity for h in hits], sims[q, order], atol=1e-5)


def test_metadata_merges_and_none_removes_a_key(tmp_path):
    with open_store(StoreConfig(path=str(tmp_path / "q")), "v1", 4) as store:
        store.set_metadata({"thresholds": {"min_similarity": 0.5}, "classes": ["a"]})
        store.set_metadata({"classes": ["a", "b"]})
        meta = store.metadata()
        assert meta["model_version"] == "v1" and meta["thresholds"] == {"min_similarity": 0.5}
        assert meta["classes"] == ["a", "b"]
        store.set_metadata({"thresholds": None})  # a rebuild without calibration drops stale thresholds
        assert "thresholds" not in store.metadata()


def test_other_model_version_and_other_dimension_are_refused(tmp_path):
    cfg = StoreConfig(path=str(tmp_path / "q"), collection="refs")  # an explicit name: version is checked
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
        open_store(StoreConfig(path=str(tmp_path / "q")), "v3", 8, create=False)
    with open_store(cfg, "v1", 8) as store:  # the refusals left the store intact and unlocked
        assert store.count() == 2


def test_second_process_cannot_open_an_embedded_folder(tmp_path):
    cfg = StoreConfig(path=str(tmp_path / "q"))
    script = textwrap.dedent(f"""
        import json
        from synthray.index import StoreConfig, StoreError, open_store
        try:
            open_store(StoreConfig(path={cfg.path!r}), "v1", 4)
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
