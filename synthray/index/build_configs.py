"""An index build's configs (:class:`IndexConfig`, :class:`AttributionConfig`) from YAML data
and ``--set`` overrides."""

from __future__ import annotations

from typing import Any, Sequence

from synthray.attribution.config import AttributionConfig
from synthray.errors import ConfigError
from synthray.index.config import IndexConfig
from synthray.typed_config import apply_overrides, from_dict


def index_configs(data: dict[str, Any], overrides: Sequence[str] = ()) -> tuple[IndexConfig, AttributionConfig]:
    """The build's configs from a YAML mapping and ``--set key=value`` overrides.

    Args:
        data: a mapping with ``index:`` and/or ``attribution:`` sections (a mapping with
            neither is read as the index section alone).
        overrides: ``key=value`` items; keys starting with ``attribution.`` set the rule,
            others (with or without an ``index.`` prefix) set :class:`IndexConfig` fields.
    Raises:
        TypeError: an unknown key; ValueError: a malformed override or value.
    """
    if "index" in data or "attribution" in data:
        unknown = sorted(set(data) - {"index", "attribution"})
        if unknown:
            raise ConfigError(f"index config: unknown sections {unknown}; expected index: and attribution:")
        sections = {"index": data.get("index") or {}, "attribution": data.get("attribution") or {}}
    else:
        sections = {"index": dict(data), "attribution": {}}
    keyed = [o if o.startswith(("index.", "attribution.")) else f"index.{o}" for o in overrides]
    sections = apply_overrides(sections, keyed)
    return from_dict(IndexConfig, sections["index"]), from_dict(AttributionConfig, sections["attribution"])
