"""Carrying the enrollment archive into a new index: every archived image embedded by the new
model and enrolled again with the service's checks."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from synthray.attribution.config import AttributionConfig
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.store import BaseStore

log = logging.getLogger(__name__)


def reenroll_archive(
    store: BaseStore, embedder: Any, archive: EnrollmentArchive, attribution: AttributionConfig
) -> dict[str, Any]:
    """Enrolls every archived image into ``store`` again, embedded by this model, with the
    service's checks (:class:`~synthray.index.enrollment.Enroller`); a generator the new model
    refuses (it now looks real) is reported and stays in the archive.

    Returns:
        ``{"generators": {name: {"enrolled", "unchanged"} or {"refused": why}}, "missing": [hashes]}``.
    """
    from synthray.index.enrollment import Enroller, EnrollmentError

    entries = archive.entries()
    if not entries:
        return {"generators": {}, "missing": []}
    enroller = Enroller(store, attribution, archive=None)  # the archive already holds them
    by_generator: dict[str, list[Any]] = {}
    for e in entries:
        by_generator.setdefault(e.generator, []).append(e)
    out: dict[str, Any] = {"generators": {}, "missing": []}
    for generator, items in by_generator.items():
        data, kept = [], []
        for e in items:
            try:
                data.append(archive.read(e.content_hash))
                kept.append(e)
            except FileNotFoundError:
                out["missing"].append(e.content_hash)
        if not kept:
            continue
        vectors = np.concatenate([embedder.embed_bytes(data[s : s + 64]) for s in range(0, len(data), 64)])
        try:
            r = enroller.enroll(generator, vectors, [e.content_hash for e in kept], [e.name for e in kept])
            out["generators"][generator] = {"enrolled": r["enrolled"], "unchanged": r["unchanged"]}
        except EnrollmentError as exc:
            log.warning("archived enrollment of %s not carried into %s: %s", generator, store.collection, exc.message)
            out["generators"][generator] = {"refused": exc.message}
    if out["missing"]:
        log.warning("%d archived enrollment image(s) are missing from %s", len(out["missing"]), archive.root)
    log.info("re-enrolled archived generators into %s: %s", store.collection, out["generators"])
    return out
