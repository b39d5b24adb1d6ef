"""Model versions and the store: an enrollment survives a retrain (the new index re-embeds the
archived images), the active alias moves only when a build completes and rolls back, no
answer mixes versions, and a snapshot restores to the same answers. Real parts: shards on
disk, two trained checkpoints, Qdrant Edge, the CLI as a user runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from serve.errors import ApiError
from serve.index_owner import IndexService
from synthray.attribution import AttributionConfig, Attributor, Embedder
from synthray.config import IndexConfig, from_dict
from synthray.data.pipeline import find_shards
from synthray.index import open_store
from synthray.index.build import build_index
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.collections import resolve_alias

REPO = Path(__file__).resolve().parents[2]
FAMILY = "dots"  # held out of training: enrolled few-shot


@pytest.fixture(scope="module")
def second_model(tiny_model, tmp_path_factory):
    """The tiny model retrained from another seed: a new model version of the same classes."""
    import dataclasses

    from synthray.train.local import fit_local

    cfg = dataclasses.replace(tiny_model.train_config, seed=1, run_dir=str(tmp_path_factory.mktemp("retrain")))
    result = fit_local(cfg)
    return types.SimpleNamespace(checkpoint=result["checkpoint"], shards=tiny_model.shards)


def _images(tiny_model, split: str, generator: str) -> tuple[list[bytes], list[str]]:
    table = pa.concat_tables([pq.read_table(f) for f in find_shards(tiny_model.shards)])
    rows = table.filter(pc.and_(pc.equal(table["split"], split), pc.equal(table["generator"], generator)))
    return rows["image"].to_pylist(), rows["content_hash"].to_pylist()


def _cfg(model, store: Path, **fields) -> IndexConfig:
    return from_dict(
        IndexConfig,
        {
            "checkpoint": str(model.checkpoint),
            "shards": str(model.shards),
            "per_class": 20,
            "batch_size": 32,
            "device": "cpu",
            "calibration_per_class": 15,
            "store": {"path": str(store)},
            **fields,
        },
    )


def _named(cfg: IndexConfig, checkpoint, images: list[bytes]) -> float:
    emb = Embedder(checkpoint, device="cpu")
    with open_store(cfg.store, emb.model_version, emb.dim, create=False) as store:
        answers = Attributor(emb, store).attribute_bytes(images)
    return float(np.mean([a.label == FAMILY for a in answers]))


def test_an_enrollment_survives_a_retrain_and_the_alias_moves_only_when_the_build_completes(
    tiny_model, second_model, tmp_path
):
    store_dir = tmp_path / "index" / "qdrant"
    v1_cfg = _cfg(tiny_model, store_dir)
    v1 = build_index(v1_cfg, AttributionConfig(), use_ray=False)
    assert resolve_alias(v1_cfg.store) == v1["collection"]
    enroll_imgs, enroll_hashes = _images(tiny_model, "val", FAMILY)
    queries, _ = _images(tiny_model, "test", FAMILY)
    emb1 = Embedder(tiny_model.checkpoint, device="cpu")
    svc = IndexService(
        open_store(v1_cfg.store, emb1.model_version, emb1.dim, create=False),
        archive=EnrollmentArchive(v1_cfg.store.enrolled_root()),
    )
    out = asyncio.run(
        svc.enroll(
            FAMILY,
            emb1.embed_bytes(enroll_imgs[:20]),
            enroll_hashes[:20],
            [f"{i}.png" for i in range(20)],
            enroll_imgs[:20],
            emb1.model_version,
        )
    )
    svc.close()
    assert out["enrolled"] == 20 and out["archived"] == 20
    named_v1 = _named(v1_cfg, tiny_model.checkpoint, queries)

    # The retrained model's index, built beside the first with the archive; the baseline is a
    # fresh v2 index into which a user enrolls the same images by hand.
    v2_cfg = _cfg(second_model, store_dir)
    v2 = build_index(v2_cfg, AttributionConfig(), use_ray=False)
    assert v2["collection"] != v1["collection"]  # a new version: a new collection beside the old one
    assert v2["enrollments"]["generators"] == {FAMILY: {"enrolled": 20, "unchanged": 0}}
    assert v2["active"] == {"alias": "synthray-active", "previous": v1["collection"]}
    assert v2["counts"][FAMILY] == {"trained": 0, "enrolled": 20}
    named_v2 = _named(v2_cfg, second_model.checkpoint, queries)
    fresh = _cfg(second_model, tmp_path / "bare" / "qdrant", include_enrolled=False)
    build_index(fresh, AttributionConfig(), use_ray=False)
    named_before = _named(fresh, second_model.checkpoint, queries)
    emb2 = Embedder(second_model.checkpoint, device="cpu")
    svc = IndexService(open_store(fresh.store, emb2.model_version, emb2.dim, create=False))
    asyncio.run(
        svc.enroll(
            FAMILY,
            emb2.embed_bytes(enroll_imgs[:20]),
            enroll_hashes[:20],
            [f"{i}.png" for i in range(20)],
            None,
            emb2.model_version,
        )
    )
    svc.close()
    named_by_hand = _named(fresh, second_model.checkpoint, queries)
    print(
        f"{FAMILY} named: v1 after enrolling {named_v1:.2f}; v2 before enrolling {named_before:.2f}, enrolled "
        f"by hand {named_by_hand:.2f}, carried by the rebuild {named_v2:.2f}"
    )
    assert named_before == 0.0  # the family is not in a fresh index at all
    # The rebuild re-enrolls exactly as a user enrolling the same images would: the same answers.
    assert named_v2 == named_by_hand and named_v2 > 0.3

    # Roll back with the CLI, as an operator would; the old collection is still whole.
    cli = [sys.executable, "-m", "synthray", "index", "--set", f"store.path={store_dir}"]
    listed = subprocess.run([*cli[:4], "list", *cli[4:]], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert listed.returncode == 0, listed.stderr[-2000:]
    listing = json.loads(listed.stdout)
    assert listing["active"] == v2["collection"]
    assert {c["collection"] for c in listing["collections"]} == {v1["collection"], v2["collection"]}
    back = subprocess.run(
        [*cli[:4], "activate", v1["collection"], *cli[4:]], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert back.returncode == 0, back.stderr[-2000:]
    assert json.loads(back.stdout)["previous"] == v2["collection"]
    assert resolve_alias(v1_cfg.store) == v1["collection"]
    assert _named(v1_cfg, tiny_model.checkpoint, queries) == named_v1


def test_no_answer_mixes_model_versions(tiny_model, second_model, tmp_path):
    from serve.encoder import Encoder

    cfg = _cfg(tiny_model, tmp_path / "q")
    build_index(cfg, AttributionConfig(), use_ray=False)
    emb1, emb2 = Embedder(tiny_model.checkpoint, device="cpu"), Embedder(second_model.checkpoint, device="cpu")
    assert emb1.model_version != emb2.model_version
    imgs, hashes = _images(tiny_model, "test", FAMILY)
    svc = IndexService(open_store(cfg.store, emb1.model_version, emb1.dim, create=False))
    try:
        assert len(asyncio.run(svc.attribute(emb1.embed_bytes(imgs[:2]), emb1.model_version))) == 2
        for call in (
            svc.attribute(emb2.embed_bytes(imgs[:2]), emb2.model_version),
            svc.enroll(FAMILY, emb2.embed_bytes(imgs[:2]), hashes[:2], ["a", "b"], None, emb2.model_version),
        ):
            with pytest.raises(ApiError) as info:
                asyncio.run(call)
            assert (info.value.status, info.value.code) == (503, "model_mismatch")
        assert svc.store.counts().get(FAMILY) is None  # nothing was written
    finally:
        svc.close()
    # An encoder replica pinned to one version refuses to start with other weights.
    with pytest.raises(RuntimeError, match="refusing to start"):
        Encoder(str(second_model.checkpoint), "cpu", emb1.model_version)
    # A store of the other version is refused outright.
    with pytest.raises(Exception, match="cannot be compared"):
        open_store(
            from_dict(
                IndexConfig, {"store": {"path": str(tmp_path / "q"), "collection": f"synthray-{emb1.model_version}"}}
            ).store,
            emb2.model_version,
            emb2.dim,
            create=False,
        )


def test_a_snapshot_restores_into_a_fresh_store_with_the_same_answers(tiny_model, tmp_path):
    cfg = _cfg(tiny_model, tmp_path / "live" / "qdrant")
    build_index(cfg, AttributionConfig(), use_ray=False)
    queries, _ = _images(tiny_model, "test", "stripes")
    queries += _images(tiny_model, "test", FAMILY)[0]
    emb = Embedder(tiny_model.checkpoint, device="cpu")

    def answers(store_cfg):
        with open_store(store_cfg, emb.model_version, emb.dim, create=False) as store:
            return [a.to_dict() for a in Attributor(emb, store).attribute_bytes(queries)]

    before = answers(cfg.store)
    archive = tmp_path / "backups" / "index.tar"
    cli = [sys.executable, "-m", "synthray", "index"]
    snap = subprocess.run(
        [*cli, "snapshot", str(archive), "--set", f"store.path={cfg.store.path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert snap.returncode == 0, snap.stderr[-2000:]
    fresh = tmp_path / "fresh" / "qdrant"
    restored = subprocess.run(
        [*cli, "restore", str(archive), "--set", f"store.path={fresh}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert restored.returncode == 0, restored.stderr[-2000:]
    fresh_cfg = from_dict(IndexConfig, {"store": {"path": str(fresh)}}).store
    assert answers(fresh_cfg) == before
    again = subprocess.run(
        [*cli, "restore", str(archive), "--set", f"store.path={fresh}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert again.returncode == 1 and "exists" in again.stderr
