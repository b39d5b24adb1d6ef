"""Few-shot enrollment and its undo, as one writer does them (no Ray, no HTTP).

The Serve app's index owner runs these under its write lock; the index build runs them to
re-enroll the archived images for a new model version. Both get the same checks:

- an image already stored under this generator is left as it is (re-uploads change
  nothing); one stored under another generator is refused rather than relabelled;
- a set of a generator that mostly answers "real" is refused (photographs an operator
  labelled real through feedback are enrolled as ``real`` without that check); a new generator's acceptance (leave-one-out
  over its samples) and is-AI threshold (raised until the stored real calibration
  photographs are flagged no more often than before) are calibrated and stored with it;
- all or nothing: the images go to the archive (:mod:`synthray.index.enrolled`) and the
  store, and a failure of either removes exactly what this call added.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from synthray.attribution.attributor import THRESHOLDS_KEY, stored_rule
from synthray.attribution.config import AttributionConfig
from synthray.attribution.rule import EnrollmentRefused, Thresholds, check_enrollment, class_scores, decide
from synthray.data.schema import REAL
from synthray.index.enrolled import EnrollmentArchive
from synthray.index.store import REVISION, BaseStore, Reference, point_id

log = logging.getLogger(__name__)

#: Payload ``split``/``dataset`` of enrolled references (they come from no data set split).
ENROLLED = "enrolled"


class EnrollmentError(Exception):
    """An enrollment or deletion refused, with the HTTP status the service answers it with.

    Args:
        status: 404 (no such generator), 409 (looks real / trained generator), 500 (the write failed).
        code: machine-readable kind (``looks_real``, ``trained_generator``, ...).
        message: what happened and what to do.
        details: JSON-able extras.
    """

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class Enroller:
    """Writes enrollments into one opened store (the caller serialises calls).

    Args:
        store: the opened store.
        attribution: the rule; None = the one stored with the index.
        archive: where enrolled images are kept for the next model version; None = not kept
            (the enrollment then lasts as long as this collection).
    """

    def __init__(
        self, store: BaseStore, attribution: AttributionConfig | None = None, archive: EnrollmentArchive | None = None
    ) -> None:
        self.store = store
        self.archive = archive
        self._override = attribution
        self._revision = -1
        self._calibration: np.ndarray | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Re-reads the rule when another writer changed the collection; True when it did."""
        meta = self.store.metadata()
        revision = int(meta.get(REVISION, 0))
        if revision == self._revision:
            return False
        self.cfg, self.thresholds = stored_rule(meta, self._override)
        self._revision = revision
        return True

    def enroll(
        self,
        generator: str,
        vectors: np.ndarray,
        hashes: Sequence[str],
        names: Sequence[str],
        images: Sequence[bytes] | None = None,
    ) -> dict[str, Any]:
        """Adds images of ``generator`` as enrolled references, all or nothing.

        Args:
            generator: canonical generator name (validated by the caller).
            vectors: (N, D) embeddings of the images.
            hashes: their sha256 content hashes (the point ids derive from them).
            names: their file names (reported back, kept as ``source_path``).
            images: the encoded bytes, kept in the archive (None: not archived).
        Returns:
            ``{"enrolled", "unchanged", "rejected", "counts", "calibration", "archived"}``.
        Raises:
            EnrollmentError: 409 ``looks_real``; 500 ``enrollment_failed`` (rolled back).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        hashes, names = list(hashes), list(names)
        if not (len(vectors) == len(hashes) == len(names)) or (images is not None and len(images) != len(hashes)):
            raise ValueError(
                f"{len(vectors)} vectors, {len(hashes)} hashes, {len(names)} names"
                + (f", {len(images)} images" if images is not None else "")
            )
        self.refresh()
        ids = [point_id(self.store.model_version, h) for h in hashes]
        stored = self.store.stored_labels(ids)
        new, kept, unchanged, rejected = [], [], 0, []
        first_seen: dict[str, int] = {}
        for i, (pid, name) in enumerate(zip(ids, names)):
            if pid in first_seen:
                rejected.append(
                    {
                        "file": name,
                        "reason": "duplicate",
                        "message": f"same content as {names[first_seen[pid]]} in this request",
                    }
                )
                continue
            first_seen[pid] = i
            if pid not in stored:
                new.append(i)
                kept.append(i)
            elif stored[pid][0] == generator:
                unchanged += 1
                kept.append(i)
            else:
                rejected.append(
                    {
                        "file": name,
                        "reason": "indexed_elsewhere",
                        "message": f"this image is already in the index as {stored[pid][0]!r} "
                        f"({stored[pid][1]}); an image can belong to one generator only",
                    }
                )
        check, archived = None, []
        if new:
            check, thresholds = self._check(generator, vectors[new])
            now = time.time()
            refs = [
                Reference(
                    generator=generator,
                    is_real=generator == REAL,
                    content_hash=hashes[i],
                    split=ENROLLED,
                    dataset=ENROLLED,
                    source_path=names[i],
                    origin="enrolled",
                    added_at=now,
                )
                for i in new
            ]
            try:
                if self.archive is not None and images is not None:
                    # The archive first: an image in the store is always one the next model re-embeds.
                    archived = self.archive.add(generator, [(hashes[i], names[i], images[i]) for i in kept])
                self.store.upsert(vectors[new], refs)
                if thresholds is not None:
                    self.store.set_metadata({THRESHOLDS_KEY: thresholds.to_dict()})
            except Exception as exc:
                self._roll_back(generator, [ids[i] for i in new], archived, exc)
                raise EnrollmentError(
                    500,
                    "enrollment_failed",
                    f"the index refused the write ({type(exc).__name__}: {exc}); nothing was enrolled, try again",
                ) from exc
            self.thresholds = thresholds if thresholds is not None else self.thresholds
            self._revision = int(self.store.metadata().get(REVISION, 0))
        elif kept and self.archive is not None and images is not None:
            # Enrolled before images were archived: keep them now (the store is unchanged).
            archived = self.archive.add(generator, [(hashes[i], names[i], images[i]) for i in kept])
        counts = self.store.counts().get(generator, {"trained": 0, "enrolled": 0})
        log.info(
            "enrolled %d new images of %s (%d unchanged, %d rejected)", len(new), generator, unchanged, len(rejected)
        )
        return {
            "enrolled": len(new),
            "unchanged": unchanged,
            "rejected": rejected,
            "counts": counts,
            "calibration": check.to_dict() if check is not None else None,
            "archived": len(archived),
        }

    def _check(self, generator: str, new_vectors: np.ndarray) -> tuple[Any, Thresholds | None]:
        """The enrollment check of ``generator`` with ``new_vectors`` added, and the thresholds
        to store with it (None when the index is uncalibrated or the generator is a trained one,
        whose thresholds come from its validation images)."""
        if self.thresholds is None:
            # Nothing calibrated to judge "looks real" or a threshold against (readyz says so).
            log.warning("enrolling %s into an uncalibrated index: no check against real photographs", generator)
            return None, None
        if generator == REAL:
            # Photographs an operator labelled real (feedback): more real references can only
            # lower the false-positive rate, and "looks real" is what they are meant to be.
            return None, None
        k = self.cfg.k
        t = self.thresholds
        existing, payloads = self.store.vectors(generator)
        if any(p.get("origin") == "trained" for p in payloads):
            # More images of a trained generator: no new calibration, but still never "real" ones.
            sample_scores = class_scores(self.store.class_hits(new_vectors, k))
            if np.mean([lab == REAL for lab in decide(sample_scores, t).labels]) > self.cfg.max_looks_real:
                raise EnrollmentError(
                    409,
                    "looks_real",
                    f"most samples of {generator!r} are answered 'real' by the index; nothing was enrolled",
                )
            return None, None
        # Every sample of the generator (earlier enrollments too), scored against the index without it.
        samples = np.concatenate([existing, new_vectors]) if len(existing) else new_vectors
        hits = self.store.class_hits(samples, k)
        for h in hits:
            h.pop(generator, None)
        sample_scores = class_scores(hits)
        if self._calibration is None:
            self._calibration = self.store.calibration_vectors()
        real = self._calibration
        real_scores = class_scores(self.store.class_hits(real, k)) if len(real) else None
        try:
            check = check_enrollment(
                generator,
                samples,
                sample_scores,
                real_scores,
                (real.astype(np.float64) @ samples.astype(np.float64).T) if len(real) else None,
                t,
                k,
                self.cfg.unknown_rate,
                self.cfg.max_fpr_increase,
                self.cfg.max_looks_real,
            )
        except EnrollmentRefused as exc:
            raise EnrollmentError(409, "looks_real", str(exc)) from exc
        updated = Thresholds.from_dict(t.to_dict())
        updated.acceptance[generator] = check.acceptance
        if check.threshold > updated.ai_threshold:
            updated.class_thresholds[generator] = check.threshold
        else:
            updated.class_thresholds.pop(generator, None)
        for warning in check.warnings:
            log.warning("enrolling %s: %s", generator, warning)
        return check, updated

    def _roll_back(self, generator: str, new_ids: list[str], archived: list[str], cause: BaseException) -> None:
        """Deletes the points and archive entries a failed write may have added."""
        try:
            self.store.delete(new_ids)
            if archived and self.archive is not None:
                self.archive.remove(generator, archived)
            log.warning("enrollment failed (%s); removed the %d points it had started to add", cause, len(new_ids))
        except Exception:  # noqa: BLE001 - report the original failure; this one is logged
            log.exception(
                "enrollment failed (%s) and its roll-back failed too: %d points may remain", cause, len(new_ids)
            )

    def delete(self, generator: str) -> dict[str, Any]:
        """Deletes a generator's enrolled references (trained ones stay: rebuild the index for
        those) and ends their enrollment in the archive.

        Returns:
            ``{"deleted": n, "counts": what remains {"trained", "enrolled"}}``.
        Raises:
            EnrollmentError: 404 ``unknown_generator``; 409 ``trained_generator``.
        """
        self.refresh()
        counts = self.store.counts().get(generator)
        if counts is None:
            raise EnrollmentError(404, "unknown_generator", f"no generator {generator!r} in the index")
        if counts["enrolled"] == 0:
            raise EnrollmentError(
                409,
                "trained_generator",
                f"{generator!r} has only trained references ({counts['trained']}), which come from "
                "the index build: rebuild the index without it to remove them; only enrolled "
                "samples can be deleted through the API",
                counts=counts,
            )
        if self.archive is not None:
            # The archive first: a crash between the two leaves points the next build drops,
            # never an archived enrollment the user deleted coming back.
            self.archive.remove(generator)
        deleted = self.store.delete_generator(generator, origin="enrolled")
        if self.thresholds is not None and counts["trained"] == 0:
            updated = Thresholds.from_dict(self.thresholds.to_dict())
            updated.acceptance.pop(generator, None)
            updated.class_thresholds.pop(generator, None)
            self.store.set_metadata({THRESHOLDS_KEY: updated.to_dict()})
            self.thresholds = updated
        self._revision = int(self.store.metadata().get(REVISION, 0))
        log.info("deleted %d enrolled references of %s", deleted, generator)
        return {"deleted": deleted, "counts": {"trained": counts["trained"], "enrolled": 0}}
