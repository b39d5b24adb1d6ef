"""The evaluation's index: build the protocol's indexed classes, or reuse a store that matches.

A store matches when it holds exactly the protocol's indexed classes (no other class, no
enrolled references, no more references per class than ``per_class`` chooses) under the
configured attribution rule; a store that only lacks references or calibration needs a
build, which adds to it without changing what is already there.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from synthray.attribution.config import AttributionConfig
from synthray.eval.config import EvalConfig
from synthray.eval.protocols import Protocol
from synthray.index.config import IndexConfig, StoreConfig

log = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """The evaluation cannot run as configured (the message says what to change)."""


def store_config(cfg: EvalConfig) -> tuple[StoreConfig, bool]:
    """The store to use, and whether it is the evaluation's private one (``<out>/index``)."""
    if cfg.store.url is None and not cfg.store.path:
        return dataclasses.replace(cfg.store, path=str(Path(cfg.out) / "index")), True
    return cfg.store, False


def _index_mismatch(
    store_cfg: StoreConfig, embedder: Any, expected: dict[str, int], attribution: AttributionConfig | None
) -> tuple[str | None, str | None]:
    """(why the store cannot serve as is and only needs a build, why it cannot serve at all)."""
    from synthray.config import to_dict
    from synthray.index.store import StoreError, open_store

    try:
        store = open_store(store_cfg, embedder.model_version, embedder.dim, create=False)
    except StoreError as exc:
        if "no collection" in str(exc):
            return "no index for this model version yet", None
        raise
    with store:
        counts = store.counts()
        meta = store.metadata()
    foreign = sorted(set(counts) - set(expected))
    enrolled = sorted(c for c, n in counts.items() if n.get("enrolled"))
    extra = sorted(c for c, n in counts.items() if c in expected and n.get("trained", 0) > expected[c])
    if foreign or enrolled or extra:
        return None, (
            f"it holds classes {foreign} outside the protocol's {sorted(expected)}"
            if foreign
            else f"it holds enrolled references of {enrolled}"
            if enrolled
            else f"it holds more references of {extra} than per_class chooses"
        )
    if attribution is not None and meta.get("attribution") != to_dict(attribution):
        return None, f"its rule {meta.get('attribution')} differs from the configured {to_dict(attribution)}"
    short = sorted(c for c, n in expected.items() if counts.get(c, {}).get("trained", 0) < n)
    if short:
        return f"references of {short} missing", None
    if not meta.get("thresholds"):
        return "no calibrated thresholds", None
    return None, None


def _ray_initialized() -> bool:
    try:
        import ray
    except ImportError:  # the GPU benchmark machine has no Ray; use_ray=False works there
        return False
    return ray.is_initialized()


def prepare_index(cfg: EvalConfig, protocol: Protocol, embedder: Any, expected: dict[str, int]) -> dict[str, Any]:
    """Builds the index of ``protocol.indexed`` (``build_index``) unless a matching one exists.

    A private index (``<out>/index``) that does not match is deleted and rebuilt; a
    configured store is only added to (missing references, calibration), never changed
    in a way that would alter what its other users get: that is an :class:`EvalError`.
    """
    from synthray.index.build import build_index

    store_cfg, private = store_config(cfg)
    build_reason, conflict = _index_mismatch(store_cfg, embedder, expected, cfg.attribution)
    if conflict and not private:
        raise EvalError(
            f"the index at {store_cfg.url or store_cfg.path} cannot be used for {protocol.name}: "
            f"{conflict}; point eval.store at a fresh folder (or leave store.path empty for a private "
            "index under the run folder)"
        )
    if conflict:
        log.info("private index does not match (%s): rebuilding it", conflict)
        shutil.rmtree(store_cfg.path, ignore_errors=True)
        build_reason = conflict
    if build_reason is None:
        log.info("reusing the index at %s", store_cfg.url or store_cfg.path)
        return {"reused": True, "store": store_cfg.url or str(Path(store_cfg.path).resolve())}
    log.info("building the index (%s)", build_reason)
    icfg = IndexConfig(
        checkpoint=str(embedder.checkpoint),
        shards=cfg.shards,
        split=cfg.reference_split,
        per_class=cfg.per_class,
        real_per_class=cfg.real_per_class,
        classes=tuple(protocol.indexed),
        batch_size=cfg.batch_size,
        device=cfg.device,
        calibration_split=cfg.calibration_split,
        calibration_per_class=cfg.calibration_per_class,
        calibration_real=cfg.calibration_real,
        store=store_cfg,
    )
    ray_was_up = _ray_initialized()
    try:
        summary = build_index(icfg, attribution=cfg.attribution, use_ray=cfg.use_ray)
    finally:
        if cfg.use_ray and not ray_was_up and _ray_initialized():
            import ray

            ray.shutdown()  # build_index started it for this evaluation: stop what was started here
    return {"reused": False, "reason": build_reason, **summary}
