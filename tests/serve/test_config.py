"""serve/config.yaml and the typed app builder, checked without starting anything."""

from __future__ import annotations

import importlib
from pathlib import Path

import pydantic
import pytest
import yaml

from serve.app import AppArgs, build_app

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"


def test_config_file_is_a_valid_serve_config_whose_args_are_app_args():
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(doc)
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app"
    module, _, attr = app.import_path.partition(":")
    assert getattr(importlib.import_module(module), attr) is build_app  # importable from the repo root
    args = AppArgs.model_validate(app.args)
    assert args.store_url is None and args.index_replicas == 1 and args.api_key_env == "SYNTHRAY_API_KEY"


def test_builder_wires_three_deployments_with_the_batching_in_user_config():
    app = build_app({"checkpoint": "ckpt", "max_batch_size": 4, "batch_wait_timeout_s": 0.05})
    ingress = app._bound_deployment
    assert ingress.name == "Ingress"
    encoder, index = ingress.init_args[0], ingress.init_args[1]
    assert (encoder._bound_deployment.name, index._bound_deployment.name) == ("Encoder", "IndexOwner")
    assert encoder._bound_deployment.user_config == {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}
    assert index._bound_deployment.num_replicas == 1


@pytest.mark.parametrize("args, message", [
    ({"checkpoint": "c", "index_replicas": 2}, "needs a Qdrant server"),
    ({"checkpoint": "c", "max_batch_size": 32, "max_ongoing_requests": 8}, "batches could never fill"),
    ({"checkpoint": "c", "max_file": 3}, "Extra inputs are not permitted"),
    ({"store_path": "x"}, "checkpoint"),
    ({"checkpoint": "c", "max_bytes": 0}, "greater than 0"),
])
def test_bad_app_args_are_refused_before_anything_starts(args, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        build_app(args)


def test_a_qdrant_server_lets_the_index_owner_scale_out():
    app = build_app({"checkpoint": "c", "store_url": "http://qdrant:6333", "index_replicas": 3})
    assert app._bound_deployment.init_args[1]._bound_deployment.num_replicas == 3
