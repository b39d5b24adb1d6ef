"""Small files written whole or not at all, and JSON-lines records read back.

Every small file synthray writes (shard receipts and manifests, synthbench's summaries, the
checkpoint's COMPLETE marker, the training history, the Edge store's metadata) goes through
:func:`write_text_atomic`: a reader, or a crash, sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def tmp_path(final: Path) -> Path:
    # Hidden and unique per attempt: a retried task never collides with a dying one, and
    # a directory glob for *.parquet never sees half-written data.
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a hidden temporary name beside ``path``, fsyncs it, and renames it
    over ``path``: a reader (or a crash) sees the old file or the new one, never half of one.
    The one place synthray writes a small file atomically."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_jsonl(path: Path, skip_bad: bool = False) -> list[dict[str, Any]]:
    """The records of a JSON-lines file ([] when there is none); blank lines skipped.

    ``skip_bad``: also skip lines that are not JSON (a line cut by a crash), for readers that
    only show the file; records that must be exact (a training history) leave it False.
    """
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if not skip_bad:
                raise
    return out


def write_json_atomic(path: Path, data: Any, indent: int | None = 1, default: Any = None) -> None:
    """Writes JSON atomically (see :func:`write_text_atomic`).

    Args:
        path: the final file.
        data: anything ``json.dumps`` accepts.
        indent: JSON indentation; None = one line.
        default: ``json.dumps``'s fallback for other objects (None: they are an error).
    """
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=False, default=default) + "\n")
