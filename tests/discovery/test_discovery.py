"""Discovery on the index owner (no Ray, no HTTP): the inbox, grouping, one-call enrollment
and feedback, on a real embedded Qdrant Edge store and the synthetic space of ``space.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections import Counter

import numpy as np
import pytest

from serve.errors import ApiError
from serve.index_owner import IndexService
from synthray.discovery.config import DiscoveryConfig
from synthray.discovery.inbox import Inbox, inbox_collection
from synthray.index.edge_store import EdgeStore
from synthray.index.enrolled import EnrollmentArchive
from tests.discovery.space import DIM, VERSION, calibrated_store, images, stray

NEW = "gan-new"


def open_service(path, cfg: DiscoveryConfig | None = None, archive: bool = False) -> IndexService:
    cfg = cfg or DiscoveryConfig(recompute_s=0)
    store = calibrated_store(path / "q") if not (path / "q").exists() else EdgeStore(_cfg(path), VERSION, DIM)
    inbox = Inbox(
        EdgeStore(dataclasses.replace(store.cfg, collection=inbox_collection(store.collection)), VERSION, DIM),
        cfg,
        path / "inbox-images",
    )
    return IndexService(
        store, archive=EnrollmentArchive(path / "enrolled") if archive else None, inbox=inbox, discovery=cfg
    )


def _cfg(path):
    from synthray.index import StoreConfig

    return StoreConfig(path=str(path / "q"))


@pytest.fixture
def service(tmp_path):
    svc = open_service(tmp_path)
    yield svc
    svc.close()


def run(coro):
    return asyncio.run(coro)


async def one_by_one(svc: IndexService, vectors: np.ndarray, hashes: list[str], images=None) -> list[str]:
    """Sends images one request each, as live traffic does; returns the labels."""
    labels = []
    for i in range(len(vectors)):
        a = await svc.attribute(vectors[i : i + 1], None, hashes[i : i + 1], images[i : i + 1] if images else None)
        labels.append(a[0]["label"])
    await svc.flush_inbox()
    return labels


def share(labels: list[str], label: str) -> float:
    return sum(x == label for x in labels) / len(labels)


async def traffic(svc: IndexService) -> dict[str, list[str]]:
    """Unknown traffic: 60 images of the new family among one-offs, another small new family,
    and ordinary real and known-generator images."""
    sent = {
        "family": images(NEW, 60),
        "stray": stray(30),
        "other": images("gan-other", 12),
        "real": images("real", 30, start=5000),
        "gan-a": images("gan-a", 20, start=5000),
    }
    return {name: await one_by_one(svc, v, h) for name, (v, h) in sent.items()}


def holding(svc: IndexService, hashes: list[str]) -> tuple[str, int, int]:
    """The discovery holding most of ``hashes``: (id, how many of them, its size)."""
    best = max(svc.discoveries.current.values(), key=lambda d: len(set(d.members) & set(hashes)))
    return best.id, len(set(best.members) & set(hashes)), best.size


def test_sixty_images_of_a_new_family_become_one_discovery_and_one_call_names_them(service, record_property):
    family = images(NEW, 60)[1]
    later_v, _ = images(NEW, 40, start=100)  # further images of the family, never sent before
    real_v, _ = images("real", 40, start=7000)

    # Baseline, measured here: nothing names the family, nothing has gathered it.
    named_before = share([a["label"] for a in run(service.attribute(later_v))], NEW)
    real_before = share([a["label"] for a in run(service.attribute(real_v))], "real")
    assert run(service.list_discoveries(refresh=True))["discoveries"] == []

    labels = run(traffic(service))
    assert share(labels["family"], "unknown") == 1.0 and share(labels["real"], "real") >= 0.8

    listing = run(service.list_discoveries(refresh=True))
    did, held, size = holding(service, family)
    record_property("discovery", {"held": held, "size": size, "discoveries": len(listing["discoveries"])})
    assert held >= 0.8 * 60 and (size - held) <= 0.1 * size, (held, size)
    entry = next(d for d in listing["discoveries"] if d["id"] == did)
    assert entry["size"] == size and entry["cohesion"] > 0.5 and entry["nearest_class"].startswith("gan-")
    assert entry["first_seen"] <= entry["last_seen"] and len(entry["examples"]) == 5

    out = run(service.enroll_discovery(did, NEW))
    assert (out["generator"], out["source"], out["already_enrolled"]) == (NEW, "embeddings", False)
    assert out["enrolled"] == size and out["counts"] == {"trained": 0, "enrolled": size}

    named_after = share([a["label"] for a in run(service.attribute(later_v))], NEW)
    real_after = share([a["label"] for a in run(service.attribute(real_v))], "real")
    record_property(
        "named", {"before": named_before, "after": named_after, "real_before": real_before, "real_after": real_after}
    )
    assert named_before == 0.0 and named_after >= 0.9, named_after
    assert real_after >= real_before - 0.05, (real_before, real_after)

    # The members left the inbox; the id now tells what became of it.
    assert run(service.get_discovery(did))["status"] == "enrolled"
    assert all(did != d["id"] for d in run(service.list_discoveries(refresh=True))["discoveries"])
    assert not run(service._on_inbox(service.inbox.get, family))


def test_enrolling_twice_is_idempotent_and_bad_requests_are_refused(service):
    run(traffic(service))
    run(service.list_discoveries(refresh=True))
    did, _, _ = holding(service, images(NEW, 60)[1])
    other, _, _ = holding(service, images("gan-other", 12)[1])
    assert other != did

    first = run(service.enroll_discovery(did, NEW))
    refs = service.store.count()
    again = run(service.enroll_discovery(did, NEW))
    assert again["already_enrolled"] is True and again["enrolled"] == first["enrolled"]
    assert service.store.count() == refs  # nothing written twice

    cases = [
        (lambda: service.enroll_discovery(did, "another-name"), 409, "already_enrolled"),
        (lambda: service.enroll_discovery("d9999", "x"), 404, "unknown_discovery"),
        (lambda: service.get_discovery("d9999"), 404, "unknown_discovery"),
        (lambda: service.enroll_discovery(other, "gan-a"), 409, "trained_generator"),
    ]
    for call, status, code in cases:
        with pytest.raises(ApiError) as info:
            run(call())
        assert (info.value.status, info.value.code) == (status, code)
    assert service.store.count() == refs  # the refusals wrote nothing
    assert run(service.get_discovery(other))["status"] == "open"


def test_ids_stay_while_a_group_persists_and_the_inbox_survives_a_restart(tmp_path):
    svc = open_service(tmp_path)
    try:
        run(traffic(svc))
        run(svc.list_discoveries(refresh=True))
        did, held, _ = holding(svc, images(NEW, 60)[1])
        v, h = images(NEW, 20, start=60)  # the family keeps arriving
        run(one_by_one(svc, v, h))
        run(svc.regroup())
        grown, held_now, _ = holding(svc, images(NEW, 80)[1])
        assert grown == did and held_now > held
        before = {d["id"]: d["size"] for d in run(svc.list_discoveries())["discoveries"]}
        inbox_size = svc.inbox.count()
    finally:
        svc.close()

    svc = open_service(tmp_path)  # a restart: the same folders, new objects
    try:
        listing = run(svc.list_discoveries())
        assert {d["id"]: d["size"] for d in listing["discoveries"]} == before
        assert listing["inbox"]["inbox"] == inbox_size
        run(svc.regroup())  # regrouped after the restart, the ids hold
        assert holding(svc, images(NEW, 80)[1])[0] == did
        assert run(svc.enroll_discovery(did, NEW))["enrolled"] >= 0.8 * 80
    finally:
        svc.close()


def test_feedback_round_trips_and_enrolls_only_when_asked(service):
    unknown_v, unknown_h = images("gan-fb", 10)
    run(one_by_one(service, unknown_v, unknown_h))  # answered unknown: in the inbox
    known_v, known_h = images("gan-a", 10, start=9000)
    answered = [a["label"] for a in run(service.attribute(known_v, None, known_h))]  # remembered
    named = [h for h, a in zip(known_h, answered) if a == "gan-a"][:2]  # answered gan-a: not in the inbox
    assert len(named) == 2, answered
    refs, inbox_before = service.store.count(), service.inbox.count()

    out = run(service.add_feedback("gan-fb", unknown_h[:8]))
    assert out["stored"] == 8 and {i["answered"] for i in out["images"]} == {"unknown"}
    out = run(service.add_feedback("gan-b", named, note="customer report"))
    assert [i["answered"] for i in out["images"]] == ["gan-a", "gan-a"]
    uploaded_v, uploaded_h = images("real", 3, start=9100)
    out = run(service.add_feedback("real", uploaded_h, vectors=uploaded_v, names=["a.jpg", "b.jpg", "c.jpg"]))
    assert out["stored"] == 3

    listed = run(service.list_feedback())
    assert listed["counts"] == {"gan-fb": 8, "gan-b": 2, "real": 3}
    row = next(r for r in listed["feedback"] if r["label"] == "gan-b")
    assert row["answered"] == "gan-a" and row["note"] == "customer report"
    assert service.store.count() == refs  # a correction alone changes no reference
    assert service.inbox.count() == inbox_before - 8  # labelled images left the unknown inbox

    with pytest.raises(ApiError) as info:
        run(service.add_feedback("gan-fb", ["0" * 64]))
    assert (info.value.status, info.value.code) == (404, "unseen_image")
    with pytest.raises(ApiError) as info:
        run(service.enroll_feedback("gan-zzz"))
    assert (info.value.status, info.value.code) == (404, "no_feedback")

    before = share([a["label"] for a in run(service.attribute(images("gan-fb", 20, start=50)[0]))], "gan-fb")
    out = run(service.enroll_feedback("gan-fb"))
    assert (out["enrolled"], out["counts"]) == (8, {"trained": 0, "enrolled": 8})
    after = share([a["label"] for a in run(service.attribute(images("gan-fb", 20, start=50)[0]))], "gan-fb")
    assert before == 0.0 and after >= 0.9, after
    out = run(service.enroll_feedback("real"))
    assert out["enrolled"] == 3 and out["counts"]["enrolled"] == 3
    assert run(service.list_feedback())["counts"] == {"gan-b": 2}


def test_an_inbox_failure_never_fails_an_answer_and_overload_drops_records(service):
    class Broken:
        def __getattr__(self, name):
            raise OSError("disk full")

    inbox = service.inbox
    v, h = images("gan-x", 5)
    service.inbox = Broken()
    labels = run(one_by_one(service, v, h))
    assert labels == ["unknown"] * 5 and service.record_failures == 5
    service.inbox = inbox

    async def burst() -> None:
        service.discovery_cfg = dataclasses.replace(service.discovery_cfg, max_pending=1)
        answers = [{"label": "unknown", "confidence": 0.0}] * 1
        for i in range(4):  # four answers while the first recording is still queued
            service.observe(v[i : i + 1], h[i : i + 1], answers)
        await service.flush_inbox()

    run(burst())
    assert service.dropped == 3 and service.inbox.count() == 1


def test_the_inbox_is_bounded_and_drops_the_oldest(tmp_path):
    svc = open_service(tmp_path, DiscoveryConfig(capacity=20, recompute_s=0))
    try:
        v, h = stray(30, seed=3)
        for i in range(30):
            svc.inbox.record(v[i : i + 1], h[i : i + 1], [{"label": "unknown", "confidence": 0.0}], now=1000.0 + i)
        assert svc.inbox.count() <= 20
        _, payloads = svc.inbox.entries()
        assert h[29] in {p["content_hash"] for p in payloads} and h[0] not in {p["content_hash"] for p in payloads}
    finally:
        svc.close()


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_kept_images_give_thumbnails_an_archived_enrollment_and_expire(tmp_path):
    import hashlib

    svc = open_service(tmp_path, DiscoveryConfig(keep_images=True, recompute_s=0, min_cluster_size=5), archive=True)
    try:
        data = [_png(i) for i in range(12)]
        hashes = [hashlib.sha256(b).hexdigest() for b in data]
        v, _ = images("gan-kept", 12)
        run(one_by_one(svc, v, hashes, data))
        listing = run(svc.list_discoveries(refresh=True))
        d = max(listing["discoveries"], key=lambda d: d["size"])
        assert d["kept_images"] == d["size"] and d["thumbnails"]
        assert all(t.startswith("data:image/jpeg;base64,") for t in d["thumbnails"].values())
        out = run(svc.enroll_discovery(d["id"], "gan-kept"))
        assert out["source"] == "images"
        archived = {e.content_hash for e in svc.enroller.archive.entries()}
        assert archived <= set(hashes) and len(archived) == d["size"]  # the next model re-embeds them
        assert svc.inbox.purge_images(now=1e12) > 0 and svc.inbox.image(hashes[0]) is None
    finally:
        svc.close()


def test_attributions_while_a_discovery_is_enrolled_lose_nothing(service):
    run(traffic(service))
    run(service.list_discoveries(refresh=True))
    did, _, size = holding(service, images(NEW, 60)[1])
    refs = service.store.count()
    queries, _ = images("gan-b", 8, start=3000)

    async def both():
        reads = [service.attribute(queries) for _ in range(40)]
        return await asyncio.gather(service.enroll_discovery(did, NEW), *reads)

    enrolled, *answers = run(both())
    assert len(answers) == 40 and all(len(a) == 8 for a in answers)
    assert all(Counter(x["label"] for x in a)["gan-b"] >= 6 for a in answers)
    assert service.store.count() == refs + enrolled["enrolled"] == refs + size
