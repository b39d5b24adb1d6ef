"""The short soak: mixed load on the real app while an Encoder and the IndexOwner replica are
killed and the app is redeployed with a new config (benchmarks/soak.py, shortened), then its
checks: no client-visible error, every acknowledged enrollment stored once, one model version
in every answer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from tests.serve.helpers import build_test_index, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak  # noqa: E402  (benchmarks/ is not a package)

APP = "synthray-soak"


@pytest.mark.timeout(900)
def test_replica_kills_under_mixed_load_lose_no_answer_and_no_enrollment(
    ray_cluster, tiny_model, tmp_path, record_property
):
    from ray import serve

    from serve.app import build_app

    index = build_test_index(tiny_model, tmp_path / "qdrant")
    (tmp_path / "key").write_text(soak.KEY)
    serve.shutdown()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = {
            "checkpoint": str(tiny_model.checkpoint),
            "store": {"path": str(index.store_path)},
            "api_key_file": str(tmp_path / "key"),
            "device": "cpu",
            "encoder_replicas": 2,
            "encoder_cpus": 0.4,
            "write_rate_per_min": 0,
        }
        serve.run(build_app(args), name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        queries = [q for c in index.classes for q in index.queries[c]]
        dots = [p.read_bytes() for p in index.held_out["dots"]]
        # Each client enrolls 8 dots of its own, and enrolls and deletes 6 others.
        load = soak.Load(
            url, queries, [dots[8 * i : 8 * i + 8] for i in range(6)], [dots[48 + 6 * i : 54 + 6 * i] for i in range(6)]
        )
        # A rolling update too: the same app redeployed with other encoder settings (new
        # Encoder replicas replace the old ones, which finish their requests first).
        redeploy = {**args, "encoder_cpus": 0.35, "max_batch_size": 8}
        observed = load.run(
            6,
            60.0,
            APP,
            [
                soak.Kill(12.0, "Encoder"),
                soak.Kill(27.0, "IndexOwner"),
                soak.Kill(
                    42.0,
                    "config redeployed under load",
                    lambda: serve.run(build_app(redeploy), name=APP, route_prefix="/"),
                ),
            ],
        )
        counts = {g["name"]: g for g in requests.get(f"{url}/v1/generators", timeout=60).json()["generators"]}
        result = soak.summarize(load, observed, counts, index.model_version)
        record_property("soak", soak.table(result))
        assert [r["fault"] for r in result["faults"]] == [
            "Encoder replica killed",
            "IndexOwner replica killed",
            "config redeployed under load",
        ]
        assert result["by_op"]["attribute"] > 50 and result["by_op"].get("enroll", 0) > 5
        assert result["errors"] == 0, soak.table(result)
        assert result["client_errors"] == 0, soak.table(result)
        assert result["enrolled_generators"] == 6, soak.table(result)
        assert not result["mixed_versions"] and not result["enrolled_mismatch"], soak.table(result)
    finally:
        serve.shutdown()
