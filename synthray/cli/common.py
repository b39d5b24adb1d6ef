"""What every ``synthray`` command shares: its section of a YAML file in, its result out."""

from __future__ import annotations

import json
import sys
from typing import Any

from synthray.config import load_yaml


def emit(result: Any, one_line_per_key: bool = False) -> None:
    """The command's result (not status) goes to stdout as JSON, for people and scripts.

    ``one_line_per_key``: each top-level entry on one line (a long summary stays a screen
    long; still one JSON document).
    """
    if one_line_per_key and isinstance(result, dict):
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in result.items())
        sys.stdout.write("{\n" + body + "\n}\n")
        return
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


def yaml_section(path: str | None, section: str) -> dict[str, Any]:
    """The ``section`` of the YAML file at ``path`` ({} without a file).

    Args:
        path: a YAML file, or None / "" for none.
        section: the top-level key of the concern (``ingest``, ``train``, ...).

    Returns:
        The section's mapping, or the whole file where it has no such key.
    """
    if not path:
        return {}
    data = load_yaml(path)
    # A config file may hold several concerns (ingest:, preprocess:, pipeline:) or just one.
    return data.get(section, {}) if section in data else data
