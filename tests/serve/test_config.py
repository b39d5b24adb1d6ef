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
    assert args.store.url is None and args.index_replicas == 1 and args.api_key_env == "SYNTHRAY_API_KEY"


def test_builder_wires_three_deployments_and_pins_the_checkpoint(tiny_model):
    from synthray.attribution.embedder import resolve_checkpoint
    from synthray.train.checkpoint import checkpoint_version

    run_folder = Path(tiny_model.checkpoint).parents[1]  # a run folder: resolved once, here
    app = build_app({"checkpoint": str(run_folder), "max_batch_size": 4, "batch_wait_timeout_s": 0.05})
    ingress = app._bound_deployment
    assert ingress.name == "Ingress"
    encoder, index = ingress.init_args[0], ingress.init_args[1]
    assert (encoder._bound_deployment.name, index._bound_deployment.name) == ("Encoder", "IndexOwner")
    assert encoder._bound_deployment.user_config == {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}
    assert index._bound_deployment.num_replicas == 1
    pinned = resolve_checkpoint(run_folder).resolve()
    # Every encoder replica gets the resolved folder and the version it must find there.
    assert encoder._bound_deployment.init_args == (str(pinned), "auto", checkpoint_version(pinned))
    assert ingress.init_args[7] is index  # embedded: the one owner also takes the writes


def test_without_a_checkpoint_the_app_serves_the_active_collection(tiny_model, tmp_path):
    from synthray.attribution import AttributionConfig
    from synthray.index import IndexConfig, StoreConfig, StoreError
    from synthray.index.build import build_index

    store = tmp_path / "qdrant"
    with pytest.raises(StoreError, match="no active collection"):
        build_app({"store.path": str(store)})  # serve run's key=value form
    cfg = IndexConfig(
        checkpoint=str(tiny_model.checkpoint),
        shards=str(tiny_model.shards),
        per_class=5,
        calibration_per_class=3,
        device="cpu",
        store=StoreConfig(path=str(store)),
    )
    summary = build_index(cfg, AttributionConfig(), use_ray=False)
    checkpoint, version, collection = AppArgs(store=StoreConfig(path=str(store))).pinned()
    assert (checkpoint, version, collection) == (summary["checkpoint"], summary["model_version"], summary["collection"])


@pytest.mark.parametrize(
    "args, message",
    [
        ({"checkpoint": "c", "index_replicas": 2}, "needs a Qdrant server"),
        ({"checkpoint": "c", "max_batch_size": 32, "max_ongoing_requests": 8}, "batches could never fill"),
        ({"checkpoint": "c", "max_file": 3}, "Extra inputs are not permitted"),
        ({"checkpoint": "c", "max_bytes": 0}, "greater than 0"),
        ({"checkpoint": "c", "store": {"pth": "x"}}, "Unexpected keyword argument"),
        ({"checkpoint": "c", "store.url": "http://q:6333", "discovery.capacity": "many"}, "valid integer"),
    ],
)
def test_bad_app_args_are_refused_before_anything_starts(args, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        build_app(args)


def test_app_args_name_moved_keys_and_take_empty_sections_as_defaults():
    from serve.local import validated_args
    from synthray.errors import ConfigError

    # The flat store keys of earlier configs fail with where each one went.
    with pytest.raises(pydantic.ValidationError, match="store_path is now store.path"):
        AppArgs.model_validate({"checkpoint": "c", "store_path": "runs/x"})
    # A section whose keys are all commented out in YAML is null: its defaults, as before
    # (attribution: the rule stored with the index; {} too).
    args = AppArgs.model_validate({"checkpoint": "c", "discovery": None, "attribution": {}})
    assert args.attribution is None and args.section("attribution") is None
    assert args.discovery == AppArgs(checkpoint="c").discovery
    # synthray serve reports a mistake as the other configs do: one line naming the key.
    with pytest.raises(ConfigError) as err:
        validated_args({"checkpoint": "c", "store": {"pth": "x"}, "max_bytes": 0})
    assert str(err.value).startswith("AppArgs: unknown config keys ['pth'] in store; known: [")
    assert str(err.value).endswith("; max_bytes: Input should be greater than 0") and "\n" not in str(err.value)


def test_a_qdrant_server_lets_the_readers_scale_out_behind_one_writer(tiny_model):
    # as ``serve run serve.app:build_app checkpoint=... store.url=... index_replicas=3`` passes them
    app = build_app(
        {"checkpoint": str(tiny_model.checkpoint), "store.url": "http://qdrant:6333", "index_replicas": "3"}
    )
    reader, writer = app._bound_deployment.init_args[1], app._bound_deployment.init_args[7]
    assert (reader._bound_deployment.name, reader._bound_deployment.num_replicas) == ("IndexReader", 3)
    assert (writer._bound_deployment.name, writer._bound_deployment.num_replicas) == ("IndexWriter", 1)
    assert reader._bound_deployment.init_args[-2] == "reader" and writer._bound_deployment.init_args[-2] == "writer"
