"""The API contract, fuzzed: the schemathesis command line, as an API's user would run it,
generates requests from the running app's /openapi.json (examples, coverage, fuzzing and
stateful phases; bounded examples, a fixed seed, loopback) and checks every answer against the
schema: no 5xx, documented statuses and bodies, schema-valid requests accepted, invalid ones
refused, 405s with Allow, auth where declared.

The command line rather than schemathesis's pytest plugin: the plugin renames pytest's test
nodes through pytest internals (`request.node._nodeid`, gone in pytest 9.2), so it breaks
whenever pytest moves; the CLI only needs the URL. The app runs on its own index (generated
writes must not disturb the other serve tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    serve.run(
        build_app(
            {
                "checkpoint": str(tiny_model.checkpoint),
                "store": {"path": str(index.store_path)},
                "api_key_file": str(folder / "key"),
                "device": "cpu",
                "max_files": 8,
                "write_rate_per_min": 0,
                "explain_lime_samples": 10,
                "discovery": {"recompute_s": 0},
            }
        ),
        name=APP,
        route_prefix="/",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


ROOT = Path(__file__).resolve().parents[2]


def test_every_answer_matches_the_published_contract(contract_app, tmp_path, record_property):
    report = tmp_path / "schemathesis.json"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.serve.contract_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # --seed: the same requests every run (the service keeps state between them, so a failure
    # found at random might not replay; a fixed sequence does). One worker: 2 cores.
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{contract_app}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20261203",
        "--workers",
        "1",
        "--header",
        f"X-API-Key: {KEY}",
        "--request-timeout",
        "120",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    # cwd: schemathesis keeps its example database under .schemathesis/ there.
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    output = f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"schemathesis found contract failures (exit {done.returncode}):\n{output}"
    run = json.loads(report.read_text())
    record_property("schemathesis_operations", run["operations"])
    record_property("schemathesis_test_cases", run["test_cases"])
    # A run that tested nothing would also exit 0: every operation tested, a real volume of
    # generated requests, the coverage, fuzzing and stateful phases all carried out.
    assert run["operations"]["tested"] == run["operations"]["selected"] >= 13, output
    assert run["test_cases"]["generated"] >= 20 * run["operations"]["tested"], output
    assert run["failures"] == [] and run["errors"] == [], output
    assert all(run["phases"][phase]["status"] == "success" for phase in ("coverage", "fuzzing", "stateful")), output
