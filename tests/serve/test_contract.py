"""The API contract, fuzzed: schemathesis generates requests from the running app's
/openapi.json (bounded examples, loopback) and checks every answer against the schema: no
5xx, documented statuses and bodies, schema-valid requests accepted, invalid ones refused,
405s with Allow, auth where declared.

The app runs on its own index (generated writes must not disturb the other serve tests).
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.serve.helpers import build_test_index, free_port

APP = "synthray-contract"
KEY = "contract-key-1f"
EXAMPLES = int(os.environ.get("SYNTHRAY_CONTRACT_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def contract_app(ray_cluster, tiny_model, tmp_path_factory):
    from ray import serve

    from serve.app import build_app

    folder = tmp_path_factory.mktemp("contract")
    index = build_test_index(tiny_model, folder / "qdrant")
    (folder / "key").write_text(KEY)
    serve.shutdown()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"checkpoint": str(tiny_model.checkpoint), "store_path": str(index.store_path),
                         "api_key_file": str(folder / "key"), "device": "cpu", "max_files": 8,
                         "write_rate_per_min": 0, "explain_lime_samples": 10,
                         "discovery": {"recompute_s": 0}}), name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# Images as the schema's "binary" and "byte" (base64) strings and as raw image/* bodies: real
# 16x16 PNGs, so requests meant to be valid are valid (schemathesis's own samples are 1x1
# pixels, below the server's 8 px minimum). Registered for this process; only this module
# uses schemathesis. Requests meant to be invalid are still generated around them.
_IMAGES = st.integers(0, 500).map(png)
schemathesis.openapi.format("binary", _IMAGES)
schemathesis.openapi.format("byte", _IMAGES.map(lambda b: base64.b64encode(b).decode()))
schemathesis.openapi.media_type("image/png", _IMAGES, aliases=("image/*", "image/jpeg", "image/webp", "image/gif"))


@pytest.fixture(scope="module")
def api_schema(contract_app):
    schema = schemathesis.openapi.from_url(f"{contract_app}/openapi.json")
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# derandomize: the same requests every run (the service keeps state between them, so a
# failure found at random might not replay; a fixed sequence does).
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
def test_every_answer_matches_the_published_contract(case):
    case.call_and_validate(headers={"X-API-Key": KEY}, timeout=120)
