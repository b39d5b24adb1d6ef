"""Every enrolled image, kept content-addressed beside the store, so enrollments outlive a model.

The vector store holds embeddings of one model version. Images users enrolled must survive a
retrain: the index build for a new checkpoint re-embeds every image here and enrolls it again
(:func:`synthray.index.build.build_index`). Layout of the archive folder:

- ``images/<h[:2]>/<h>``: the uploaded bytes, named by their sha256 ``h`` (written once; a
  re-upload of the same bytes is the same file);
- ``enrollments.jsonl``: an append-only log of ``{"op": "add" | "remove", "generator", "hash",
  "name", "at"}`` lines, each flushed to disk before the store is written. The live set is its
  replay: an image is enrolled under a generator until a later ``remove`` (a deletion through
  the API, or the roll-back of a failed enrollment).

One writer appends at a time (the index owner's write lock; in a cluster, the one writer
deployment), so the log needs no further locking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

LOG_NAME = "enrollments.jsonl"


@dataclasses.dataclass(frozen=True)
class Enrolled:
    """One live enrollment."""

    generator: str
    content_hash: str
    name: str  # the file name it was uploaded as
    at: float  # when


class EnrollmentArchive:
    """The archive at ``root`` (created on first write).

    Args:
        root: the archive folder (a shared volume in a cluster: every index build reads it).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _image_path(self, content_hash: str) -> Path:
        if len(content_hash) != 64 or not all(c in "0123456789abcdef" for c in content_hash):
            raise ValueError(f"not a sha256 hex digest: {content_hash!r}")
        return self.root / "images" / content_hash[:2] / content_hash

    def _append(self, events: Iterable[dict]) -> None:
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
        if not lines:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOG_NAME
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line cut by a crash: start ours on a line of its own
                    lines = "\n" + lines
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def add(self, generator: str, items: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """Keeps images enrolled under ``generator``; returns the hashes newly enrolled.

        Args:
            generator: the generator name.
            items: ``(content_hash, file name, bytes)``; the hash must be the bytes' sha256.
        Raises:
            ValueError: a hash that does not match its bytes.
        """
        for content_hash, name, data in items:
            if hashlib.sha256(data).hexdigest() != content_hash:
                raise ValueError(f"{name}: content hash does not match its bytes")
        live = self.live()
        now = time.time()
        events, added = [], []
        for content_hash, name, data in items:
            path = self._image_path(content_hash)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            if live.get(content_hash, (None,))[0] != generator:
                events.append({"op": "add", "generator": generator, "hash": content_hash, "name": name, "at": now})
                added.append(content_hash)
        self._append(events)
        return added

    def remove(self, generator: str, hashes: Sequence[str] | None = None) -> int:
        """Ends enrollments of ``generator`` (only ``hashes`` when given); returns how many ended.
        The image files stay (another generator or a later re-enrollment may name them)."""
        live = self.live()
        chosen = [h for h, (g, _, _) in live.items() if g == generator and (hashes is None or h in set(hashes))]
        self._append({"op": "remove", "generator": generator, "hash": h, "at": time.time()} for h in chosen)
        return len(chosen)

    def live(self) -> dict[str, tuple[str, str, float]]:
        """``{hash: (generator, name, at)}`` of every live enrollment."""
        state: dict[str, tuple[str, str, float]] = {}
        path = self.root / LOG_NAME
        if not path.is_file():
            return state
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash mid-write: nothing after it was acknowledged
                    continue
                if e["op"] == "add":
                    state[e["hash"]] = (e["generator"], e.get("name", ""), float(e.get("at", 0.0)))
                elif e["op"] == "remove" and state.get(e["hash"], ("",))[0] == e["generator"]:
                    del state[e["hash"]]
        return state

    def entries(self) -> list[Enrolled]:
        """The live enrollments, oldest first."""
        return sorted(
            (Enrolled(g, h, n, at) for h, (g, n, at) in self.live().items()), key=lambda e: (e.at, e.content_hash)
        )

    def read(self, content_hash: str) -> bytes:
        """The enrolled image's bytes.

        Raises:
            FileNotFoundError: the archive lacks the file (it was deleted by hand).
        """
        return self._image_path(content_hash).read_bytes()
