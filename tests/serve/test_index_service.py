"""The index owner's logic on a real embedded Qdrant store, without Ray.

Vectors are synthetic clusters (one per class) so the expected answers are known exactly.
The one fault injected (a store whose write dies half-way) stands for a disk or server
failure, which cannot be caused on purpose otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from serve.errors import ApiError
from serve.index_owner import IndexService
from synthray.index import Reference, StoreConfig
from synthray.index.edge_store import EdgeStore

DIM, VERSION = 16, "test-v1"
TRAINED = ("real", "gan-a", "gan-b")


def cluster(seed: int, n: int, spread: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=DIM)
    x = centre / np.linalg.norm(centre) + spread * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def hashes(tag: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def open_store(path, cls=EdgeStore, upsert_batch: int = 256) -> EdgeStore:
    return cls(StoreConfig(path=str(path), upsert_batch=upsert_batch), VERSION, DIM)


@pytest.fixture
def service(tmp_path):
    store = open_store(tmp_path / "q")
    for i, g in enumerate(TRAINED):
        store.upsert(cluster(i, 12), [Reference(g, g == "real", h) for h in hashes(g, 12)])
    svc = IndexService(store)
    yield svc
    svc.close()


def run(coro):
    return asyncio.run(coro)


def test_enrolled_generator_is_attributed_and_reenrolling_adds_nothing(service):
    new = cluster(10, 8)
    out = run(service.enroll("gan-new", new, hashes("new", 8), [f"{i}.png" for i in range(8)]))
    assert (out["enrolled"], out["unchanged"], out["rejected"]) == (8, 0, [])
    assert out["counts"] == {"trained": 0, "enrolled": 8}
    labels = [a["label"] for a in run(service.attribute(cluster(10, 3)))]
    assert labels == ["gan-new"] * 3  # no thresholds stored: closed-set answers
    again = run(service.enroll("gan-new", new, hashes("new", 8), [f"{i}.png" for i in range(8)]))
    assert (again["enrolled"], again["unchanged"], again["counts"]["enrolled"]) == (0, 8, 8)
    assert service.store.count() == 36 + 8


def test_duplicates_and_images_of_other_generators_are_refused_not_relabelled(service):
    trained_hash = hashes("gan-a", 1)[0]
    vecs = cluster(11, 3)
    out = run(
        service.enroll(
            "gan-x", vecs, [hashes("x", 1)[0], hashes("x", 1)[0], trained_hash], ["x.png", "x-copy.png", "stolen.png"]
        )
    )
    assert out["enrolled"] == 1
    assert {r["file"]: r["reason"] for r in out["rejected"]} == {
        "x-copy.png": "duplicate",
        "stolen.png": "indexed_elsewhere",
    }
    assert "gan-a" in [r for r in out["rejected"] if r["file"] == "stolen.png"][0]["message"]
    assert run(service.generators())["gan-a"] == {"trained": 12, "enrolled": 0}  # still gan-a's


class DyingStore(EdgeStore):
    """Writes the first half of an upsert, then fails as a full disk would."""

    def upsert(self, vectors, refs):
        half = len(refs) // 2
        super().upsert(vectors[:half], refs[:half])
        raise OSError("No space left on device")


def test_a_failed_write_leaves_the_index_as_it_was(tmp_path):
    store = open_store(tmp_path / "q")
    store.upsert(cluster(0, 5), [Reference("gan-a", False, h) for h in hashes("a", 5)])
    store.close()
    svc = IndexService(open_store(tmp_path / "q"))
    run(svc.enroll("gan-y", cluster(1, 4), hashes("y", 4), list("abcd")))
    before = svc.store.vectors()[1]
    svc.close()

    svc = IndexService(open_store(tmp_path / "q", cls=DyingStore))
    # Two already-enrolled images (unchanged) and six new ones, of which the store writes three.
    with pytest.raises(ApiError) as info:
        run(svc.enroll("gan-y", cluster(1, 8), hashes("y", 4)[:2] + hashes("y-more", 6), list("abcdefgh")))
    assert (info.value.status, info.value.code) == (500, "enrollment_failed")
    after = svc.store.vectors()[1]
    svc.close()
    key = lambda p: (p["generator"], p["content_hash"], p["origin"])  # noqa: E731
    assert sorted(map(key, after)) == sorted(map(key, before))


def test_concurrent_enrollments_and_queries_keep_the_index_exact(service):
    async def scenario():
        jobs = []
        for round_ in range(2):  # every generator enrolled twice at once: the second adds nothing
            for g in ("c1", "c2", "c3"):
                seed = {"c1": 20, "c2": 21, "c3": 22}[g]
                jobs.append(service.enroll(g, cluster(seed, 10), hashes(g, 10), [f"{g}-{i}" for i in range(10)]))
        queries = [service.attribute(cluster(20 + q % 3, 4)) for q in range(12)]
        return await asyncio.gather(*jobs, *queries)

    results = run(scenario())
    enrolls, answers = results[:6], results[6:]
    assert sorted(r["enrolled"] for r in enrolls) == [0, 0, 0, 10, 10, 10]
    assert all(r["enrolled"] + r["unchanged"] == 10 and not r["rejected"] for r in enrolls)
    assert all(len(a) == 4 for a in answers)
    counts = run(service.generators())
    assert {g: counts[g] for g in ("c1", "c2", "c3")} == {g: {"trained": 0, "enrolled": 10} for g in ("c1", "c2", "c3")}
    assert service.store.count() == 36 + 30


def test_delete_removes_only_enrolled_references(service):
    run(service.enroll("gan-a", cluster(30, 3), hashes("more-a", 3), ["1", "2", "3"]))
    run(service.enroll("solo", cluster(31, 2), hashes("solo", 2), ["1", "2"]))
    assert run(service.delete_generator("gan-a")) == {"deleted": 3, "counts": {"trained": 12, "enrolled": 0}}
    assert run(service.delete_generator("solo"))["deleted"] == 2
    assert "solo" not in run(service.generators())
    for name, status, code in (
        ("gan-b", 409, "trained_generator"),
        ("solo", 404, "unknown_generator"),
        ("never", 404, "unknown_generator"),
    ):
        with pytest.raises(ApiError) as info:
            run(service.delete_generator(name))
        assert (info.value.status, info.value.code) == (status, code)
    assert service.store.count() == 36


def test_close_releases_the_embedded_folder(tmp_path):
    svc = IndexService(open_store(tmp_path / "q"))
    svc.close()
    svc.close()  # twice is harmless (Serve may call __del__ and then the interpreter again)
    reopened = open_store(tmp_path / "q")
    assert reopened.count() == 0
    reopened.close()


def _calibrated(tmp_path):
    """Trained clusters, thresholds calibrated on held-back members, real calibration points kept."""
    from synthray.attribution.rule import calibrate, class_scores
    from synthray.index.store import CALIBRATION

    store = open_store(tmp_path / "cal")
    for i, g in enumerate(TRAINED):
        store.upsert(cluster(i, 30, 0.3)[:20], [Reference(g, g == "real", h) for h in hashes(g, 20)])
    val = {g: cluster(i, 30, 0.3)[20:] for i, g in enumerate(TRAINED)}
    q = np.concatenate(list(val.values()))
    truth = [g for g, v in val.items() for _ in v]
    t = calibrate(class_scores(store.class_hits(q, 5)), truth, 0.1, 0.1, 5)
    store.set_metadata({"thresholds": t.to_dict(), "attribution": {"k": 5}})
    store.upsert(val["real"], [Reference("real", True, h, origin=CALIBRATION) for h in hashes("cal", 10)])
    return store


def test_enrollment_is_calibrated_refuses_real_looking_sets_and_delete_undoes_it(tmp_path):
    svc = IndexService(_calibrated(tmp_path))
    try:
        assert len(svc.store.calibration_vectors()) == 10
        # "samples" that are real photographs: refused, nothing written
        with pytest.raises(ApiError) as info:
            run(svc.enroll("fake-gan", cluster(0, 8, 0.3), hashes("realish", 8), list("abcdefgh")))
        assert (info.value.status, info.value.code) == (409, "looks_real")
        assert "fake-gan" not in run(svc.generators())
        # a new generator: calibrated from its own samples, stored with the index
        out = run(svc.enroll("gan-new", cluster(40, 12, 0.3), hashes("new", 12), [f"{i}" for i in range(12)]))
        cal = out["calibration"]
        assert out["enrolled"] == 12 and cal["samples"] == 12 and cal["looks_real"] <= 0.5
        assert cal["real_fpr_after"] <= cal["real_fpr_before"] + svc.cfg.max_fpr_increase + 1e-9
        stored = svc.store.metadata()["thresholds"]
        assert stored["acceptance"]["gan-new"] == pytest.approx(cal["acceptance"])
        labels = [a["label"] for a in run(svc.attribute(cluster(40, 6, 0.3)))]
        assert labels.count("gan-new") >= 5, labels
        real_labels = [a["label"] for a in run(svc.attribute(cluster(0, 20, 0.3)))]
        assert real_labels.count("real") >= 15, real_labels  # the enrollment did not take real images
        # the calibration points are never neighbours, never counted as references
        assert all(
            n["origin"] != "calibration" for a in run(svc.attribute(cluster(0, 5, 0.3))) for n in a["neighbours"]
        )
        assert run(svc.generators())["real"] == {"trained": 20, "enrolled": 0}
        run(svc.delete_generator("gan-new"))
        assert "gan-new" not in svc.store.metadata()["thresholds"]["acceptance"]
    finally:
        svc.close()


class _EncoderHandle:
    """Stands in for the encoder's Serve handle: the standby asks it only for the model
    version and embedding size (a real kill and failover are in tests/serve/test_soak.py)."""

    class _Describe:
        async def _answer(self) -> dict:
            return {"model_version": VERSION, "dim": DIM}

        def remote(self):
            return self._answer()

    describe = _Describe()


def test_the_standby_takes_the_store_only_when_the_owner_let_go_and_gives_it_back(tmp_path):
    from serve.standby import IndexStandby

    owner = open_store(tmp_path / "q")
    owner.upsert(cluster(0, 5), [Reference("gan-a", False, h) for h in hashes("a", 5)])
    owner_service = IndexService(owner)

    async def scenario() -> None:
        standby = IndexStandby.__new__(IndexStandby)  # its constructor is async, as Serve runs it
        await standby.__init__(_EncoderHandle(), {"path": str(tmp_path / "q")}, None, VERSION, {"recompute_s": 0.05})
        with pytest.raises(ApiError) as held:  # the owner holds the folder: the standby stays idle
            await standby.generators()
        assert held.value.code == "standby_idle" and not standby.holds_store()
        assert await standby.acquire() is False and not standby.holds_store()  # an answer, not an error
        owner_service.close()  # the owner's process is gone
        assert await standby.generators() == {"gan-a": {"trained": 5, "enrolled": 0}}
        out = await standby.enroll("gan-new", cluster(3, 4), hashes("new", 4), [f"{i}.png" for i in range(4)])
        assert out["enrolled"] == 4 and standby.holds_store()
        # Holding the store, it regroups the discovery inbox on the owner's schedule.
        first = (await standby.list_discoveries())["computed_at"]
        await asyncio.sleep(0.3)
        assert (await standby.list_discoveries())["computed_at"] > first
        schedule = standby._service._regrouping
        assert await standby.release() is True and not standby.holds_store()
        await asyncio.sleep(0.05)
        assert schedule is not None and schedule.cancelled()  # the schedule went with the store
        again = IndexService(open_store(tmp_path / "q"))  # the owner's replacement opens it
        try:
            assert await again.generators() == {
                "gan-a": {"trained": 5, "enrolled": 0},
                "gan-new": {"trained": 0, "enrolled": 4},
            }
        finally:
            again.close()
        assert await standby.release() is False  # nothing held: nothing to give back

    run(scenario())
