"""The typed app builder: ``serve run serve.app:build_app`` / ``serve/config.yaml``.

Three deployments (after Ray's ``serve/doc_code/app_builder.py``)::

    HTTP -> Ingress (FastAPI) --embed--> Encoder (@serve.batch)
                              --search/enroll/delete--> IndexOwner (the store)

The IndexOwner is the only process that opens an embedded store (a folder one process may
open): one replica reads and writes. Against a Qdrant server, IndexReader replicas scale out
and one IndexWriter takes every write. The checkpoint is pinned when the app is built.
"""

# No ``from __future__ import annotations`` here: Serve reads the builder's parameter
# annotation as a class to validate the arguments into AppArgs, and a string would not do.

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application

from serve.encoder import Encoder
from serve.index_owner import IndexOwner
from serve.ingress import Ingress
from serve.standby import IndexStandby
from synthray.attribution.config import AttributionConfig
from synthray.discovery.config import DiscoveryConfig
from synthray.index.config import StoreConfig
from synthray.typed_config import from_dict, nest_dotted, to_dict


#: AppArgs' flat store keys before it nested StoreConfig, and where each went.
_STORE_KEYS_BEFORE = {
    "store_path": "path",
    "store_url": "url",
    "store_api_key_env": "api_key_env",
    "store_engine": "engine",
    "collection": "collection",
    "enrolled_dir": "enrolled_dir",
}


class AppArgs(BaseModel):
    """Arguments of the synthray Serve app (``args:`` in serve/config.yaml, ``key=value`` on ``serve run``)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Optional[str] = Field(
        None,
        description="checkpoint folder, or a training run folder (its newest "
        "good checkpoint, resolved once when the app is built, so every replica loads "
        "the same weights); None = the checkpoint the active collection was built with",
    )
    store: StoreConfig = Field(
        default_factory=StoreConfig,
        description="the vector store: path (embedded Qdrant Edge folder) or url (a Qdrant server, then "
        "index_replicas may be > 1), collection (or alias; default synthray-<model version>, with no checkpoint "
        "the active alias), enrolled_dir (archive of enrolled images a new model re-embeds; a shared volume in a "
        "cluster), api_key_env, engine; on `serve run`'s command line as store.path=... (dotted keys)",
    )
    create_index: bool = Field(False, description="create an empty collection when none exists (pure few-shot use)")
    device: str = Field("auto", description="encoder device: auto | cpu | cuda")
    api_key_env: str = Field("SYNTHRAY_API_KEY", description="env var holding the API key for writes")
    api_key_file: Optional[str] = Field(None, description="file holding the API key (a mounted secret); wins")
    read_requires_key: bool = Field(False, description="attribute and list need the key too")
    max_bytes: int = Field(32 * 1024 * 1024, gt=0, description="request body cap in bytes (413 beyond)")
    # 40 MP covers every camera and generator output; decoding more costs >120 MB per image.
    max_pixels: int = Field(40_000_000, gt=0, description="pixels an image header may claim (decompression bombs)")
    max_files: int = Field(100, gt=0, description="images per request (enrollment sends ~50)")
    max_explain: int = Field(4, ge=1, description="images per request that ?explain= may be asked for")
    explain_lime_samples: int = Field(150, ge=10, le=1000, description="LIME occluded views per image by default")
    max_batch_size: int = Field(16, ge=1, description="encoder dynamic batch size (1 = batching off)")
    # 0: a batch is what queued while the encoder was busy. Waiting to fill costs a lone request
    # the whole wait (benchmarks/bench_serve.py, 2 cores, resnet10t: p50 56 ms at concurrency 1
    # with 10 ms, 43 ms with 0) and bought no throughput under load beyond the runs' spread.
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="how long a batch waits to fill (0: it takes what queued while the encoder was busy)"
    )
    encoder_replicas: int = Field(1, ge=1)
    index_replicas: int = Field(
        1, ge=1, description="index reader replicas against a server (writes go to one writer); 1 when embedded"
    )
    ingress_replicas: int = Field(1, ge=1)
    index_standby: bool = Field(
        True,
        description="embedded store: a warm standby process takes the store over "
        "when the index owner is lost, until the owner's replacement has started",
    )
    encoder_cpus: float = Field(0.5, ge=0)
    encoder_gpus: float = Field(0, ge=0)
    index_cpus: float = Field(0.25, ge=0)
    ingress_cpus: float = Field(0.25, ge=0)
    max_ongoing_requests: int = Field(64, ge=1, description="per replica; >= max_batch_size so batches can fill")
    # Overload and faults (the ingress sends a call again when a replica dies under it).
    max_queued_requests: int = Field(
        256,
        ge=-1,
        description="requests queued per caller and deployment beyond "
        "max_ongoing_requests; more are answered 503 with Retry-After (-1: no bound)",
    )
    ingress_max_connections: int = Field(
        2048,
        ge=1,
        description="requests an ingress replica holds at once (it is "
        "asynchronous: a waiting request costs little); it admits "
        "max_ongoing_requests + max_queued_requests of them to the API and answers "
        "the rest 503 overloaded at once, in the API's JSON error shape",
    )
    retry_after_s: float = Field(1.0, gt=0, description="the Retry-After of a 503 (overload, a replica lost)")
    retry_deadline_s: float = Field(
        10.0,
        ge=0,
        description="how long a call that is safe to repeat is sent again while replicas die or restart, before a 503",
    )
    health_check_period_s: float = Field(2.0, gt=0, description="how often Serve checks each replica")
    graceful_shutdown_timeout_s: float = Field(
        20.0, ge=0, description="how long a stopping replica may finish its requests (redeploys, scale-down, SIGTERM)"
    )
    write_rate_per_min: float = Field(
        120.0, ge=0, description="writes per minute per API key (0: unlimited); more are 429 with Retry-After"
    )
    write_burst: int = Field(30, ge=1, description="writes a key may make at once")
    attribution: Optional[AttributionConfig] = Field(
        None,
        description="an attribution rule replacing the index's stored one as a whole (fields left out take "
        "AttributionConfig's defaults, not the index's); None or {} = the index's rule",
    )
    discovery: DiscoveryConfig = Field(
        default_factory=DiscoveryConfig,
        description="the inbox of unknown answers (capacity, keep_images, retention_s, recompute_s, ...)",
    )

    @model_validator(mode="before")
    @classmethod
    def _dotted_keys(cls, data: Any) -> Any:
        # ``serve run serve.app:build_app store.path=...`` passes flat keys only: a dotted key
        # reaches a nested section, as ``--set`` does for the other configs.
        if not isinstance(data, dict):
            return data
        renamed = sorted(k for k in data if k in _STORE_KEYS_BEFORE)
        if renamed:
            raise ValueError(
                "the store's settings moved into store: "
                + ", ".join(f"{k} is now store.{_STORE_KEYS_BEFORE[k]}" for k in renamed)
                + " (in YAML: store: {path: ...})"
            )
        data = nest_dotted(data)
        # An empty section (its keys all commented out in YAML) means its defaults, as before:
        # discovery's own defaults, and the index's stored rule for attribution.
        if data.get("discovery") is None:
            data.pop("discovery", None)
        if data.get("attribution") in ({}, None):
            data["attribution"] = None
        return data

    @model_validator(mode="after")
    def _one_owner_when_embedded(self) -> "AppArgs":
        if self.store.url is None and self.index_replicas != 1:
            raise ValueError(
                f"index_replicas={self.index_replicas} needs a Qdrant server (store.url): an embedded "
                "store can be opened by one process only"
            )
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < max_batch_size "
                f"({self.max_batch_size}): batches could never fill"
            )
        return self

    def serving_options(self) -> dict[str, Any]:
        """Deployment options every deployment shares: queue bounds, health checks, draining."""
        return {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }

    def store_config(self) -> dict[str, Any]:
        """``StoreConfig`` fields; a relative path is taken from where the app is built (the repo root)."""
        enrolled = os.path.abspath(self.store.enrolled_dir) if self.store.enrolled_dir else None
        return to_dict(dataclasses.replace(self.store, path=os.path.abspath(self.store.path), enrolled_dir=enrolled))

    def section(self, name: str) -> Optional[dict[str, Any]]:
        """A nested config as plain data for the replicas (``attribution`` or ``discovery``; None when unset)."""
        value = getattr(self, name)
        return None if value is None else to_dict(value)

    def pinned(self) -> tuple[str, str, Optional[str]]:
        """``(checkpoint folder, model version, collection)`` the app serves, resolved once here.

        A run folder resolves to its newest good checkpoint now, not in each replica: a replica
        started after a retrain must not load newer weights than the index was built with.
        Without a checkpoint, the active alias names the collection and the collection names
        the checkpoint it was built with.

        Raises:
            CheckpointError / StoreError: nothing to pin.
        """
        from synthray.attribution.embedder import resolve_checkpoint
        from synthray.index.collections import active_collection
        from synthray.index.errors import StoreError
        from synthray.train.checkpoint import checkpoint_version

        if self.checkpoint is not None:
            folder = resolve_checkpoint(self.checkpoint).resolve()
            return str(folder), checkpoint_version(folder), self.store.collection
        cfg = from_dict(StoreConfig, self.store_config())
        collection, meta = active_collection(cfg)
        if not meta.get("checkpoint"):
            raise StoreError(f"collection {collection!r} records no checkpoint: pass checkpoint=")
        folder = Path(meta["checkpoint"])
        version = checkpoint_version(folder)
        if version != meta.get("model_version"):
            raise StoreError(
                f"collection {collection!r} holds model version {meta.get('model_version')}, its "
                f"checkpoint {folder} holds {version}"
            )
        return str(folder), version, collection


def build_app(args: AppArgs) -> Application:
    """The synthray app, deployments sized and wired from ``args``.

    Args:
        args: :class:`AppArgs` (Serve validates a dict into it; a dict works here too).
    Returns:
        the bound application (``serve.run(build_app(...))``).
    """
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    checkpoint, version, collection = args.pinned()
    store = {**args.store_config(), "collection": collection}
    encoder = (
        serve.deployment(Encoder)
        .options(
            num_replicas=args.encoder_replicas,
            **args.serving_options(),
            ray_actor_options={"num_cpus": args.encoder_cpus, "num_gpus": args.encoder_gpus},
            user_config={"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s},
        )
        .bind(checkpoint, args.device, version)
    )
    owner = serve.deployment(IndexOwner)
    standby = None
    if args.store.url is None:
        # Embedded: one process may open the store, so one owner reads and writes; the
        # standby (no CPUs reserved: it idles while the owner lives) stands in when it is lost.
        if args.index_standby:
            standby = (
                serve.deployment(IndexStandby)
                .options(
                    num_replicas=1,
                    **args.serving_options(),
                    ray_actor_options={"num_cpus": 0},
                )
                .bind(encoder, store, args.section("attribution"), version, args.section("discovery"))
            )
        index = owner.options(
            num_replicas=1,
            **args.serving_options(),
            ray_actor_options={"num_cpus": args.index_cpus},
        ).bind(
            encoder,
            store,
            args.create_index,
            args.section("attribution"),
            version,
            "owner",
            args.section("discovery"),
            standby,
        )
        writer = index
    else:
        # A server: readers scale out, every write goes through one writer (one lock, one archive).
        index = owner.options(
            name="IndexReader",
            num_replicas=args.index_replicas,
            **args.serving_options(),
            ray_actor_options={"num_cpus": args.index_cpus},
        ).bind(encoder, store, False, args.section("attribution"), version, "reader", args.section("discovery"))
        writer = owner.options(
            name="IndexWriter",
            num_replicas=1,
            **args.serving_options(),
            ray_actor_options={"num_cpus": args.index_cpus},
        ).bind(
            encoder, store, args.create_index, args.section("attribution"), version, "writer", args.section("discovery")
        )
    limits = {"max_bytes": args.max_bytes, "max_pixels": args.max_pixels, "max_files": args.max_files}
    admitted = 0 if args.max_queued_requests < 0 else args.max_ongoing_requests + args.max_queued_requests
    resilience = {
        "retry_deadline_s": args.retry_deadline_s,
        "retry_after_s": args.retry_after_s,
        "write_rate_per_min": args.write_rate_per_min,
        "write_burst": args.write_burst,
        "max_in_flight": admitted,
    }
    # The ingress holds many more requests than it admits, so overload is answered by the API
    # (JSON 503); the proxy's own refusal (plain text 503 with Retry-After) only beyond that.
    # The proxy's queue bound too: its router queues requests while it picks a replica, so a
    # burst arriving at once would overflow a short queue however idle the ingress is.
    connections = max(args.ingress_max_connections, admitted + 16)
    ingress_options = {
        **args.serving_options(),
        "max_ongoing_requests": connections,
        "max_queued_requests": -1 if admitted == 0 else connections,
    }
    return (
        serve.deployment(Ingress)
        .options(
            num_replicas=args.ingress_replicas,
            ray_actor_options={"num_cpus": args.ingress_cpus},
            **ingress_options,
            backpressure_config={"status_code": 503, "retry_after_s": args.retry_after_s},
        )
        .bind(
            encoder,
            index,
            limits,
            args.api_key_env,
            args.api_key_file,
            args.read_requires_key,
            {"max_images": args.max_explain, "lime_samples": args.explain_lime_samples},
            writer,
            args.section("discovery"),
            resilience,
            standby,
        )
    )
