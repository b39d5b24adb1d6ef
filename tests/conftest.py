"""Shared fixtures: one local Ray cluster for the whole session, stopped at the end."""

from __future__ import annotations

import os

import pytest

# Keep Ray quiet and small on the 2-core CI machine; nothing here reaches the network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs; tests that need Ray take this fixture."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # always a fresh cluster of our own, never one a developer left running
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 1024 * 1024,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
