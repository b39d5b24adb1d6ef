"""``--set key=value`` overrides on a config mapping (dotted keys reach nested sections)."""

from __future__ import annotations

import copy
from typing import Any, Iterable

import yaml


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with each ``a.b.c=value`` set (value parsed as YAML).

    Raises:
        ValueError: on an item without ``=``.
    """
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return out
