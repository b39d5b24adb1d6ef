"""The one config system: typed dataclasses validated by pydantic, loaded from YAML.

Every config is a ``@config_dataclass``: a standard dataclass (``dataclasses.fields``,
``asdict`` and ``replace`` work, STYLE.md item 4) that pydantic validates whether it is
built in code or from a YAML mapping. Each field's description is the docstring under it,
so ``json_schema`` documents every key. Mistakes (an unknown key, a value of the wrong
type, a failed range check) are one :class:`~synthray.errors.ConfigError` naming the key's
path, e.g. ``TrainConfig: encoder.embed_dim: Input should be a valid integer``.

The entrypoints read YAML (``load_yaml``), apply ``--set a.b=c`` overrides
(``apply_overrides``) and build the config (``from_dict``); the resolved config is saved
beside every output (``to_dict``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar, cast, dataclass_transform, overload

import pydantic
import pydantic.dataclasses
import yaml

from synthray.errors import ConfigError

T = TypeVar("T")

# Unknown keys fail (a typo must not fall back to a default silently); the docstring under a
# field is its description in the JSON schema. A number where a string is declared is taken
# as its text: YAML reads ``salt: 7`` or ``--set run_name=2024`` as ints.
_PYDANTIC = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True, coerce_numbers_to_str=True)


@overload
def config_dataclass(cls: type[T], /) -> type[T]: ...
@overload
def config_dataclass(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, pydantic.Field))
def config_dataclass(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """Makes ``cls`` a validated config dataclass (use bare, or with ``frozen=True``).

    Building one with a wrong key or value raises ``ConfigError`` (a ``TypeError`` and a
    ``ValueError``) whose message names the field, instead of pydantic's longer report.
    """

    def wrap(c: type[T]) -> type[T]:
        made = pydantic.dataclasses.dataclass(c, config=_PYDANTIC, frozen=frozen)
        validated_init = made.__init__

        @functools.wraps(validated_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                validated_init(self, *args, **kwargs)
            except pydantic.ValidationError as err:
                raise ConfigError(explain(made, err)) from None

        made.__init__ = __init__  # type: ignore[method-assign]
        return cast("type[T]", made)

    return wrap if cls is None else wrap(cls)


_ADAPTERS: dict[Any, pydantic.TypeAdapter] = {}


def _adapter(cls: Any) -> pydantic.TypeAdapter:
    # Building an adapter compiles a validator; one per class serves every later call.
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = pydantic.TypeAdapter(cls)
    return _ADAPTERS[cls]


def explain(cls: type, err: pydantic.ValidationError) -> str:
    """One readable line per problem of ``err``, each naming the key's dotted path (a value
    that fits none of a union's types is one problem, its alternatives joined by "or")."""
    unknown: dict[str, list[str]] = {}
    problems: dict[str, list[str]] = {}
    for e in err.errors(include_url=False):
        loc = _key_path(cls, e["loc"])
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            unknown.setdefault(".".join(loc[:-1]), []).append(loc[-1])
            continue
        msg = e["msg"].removeprefix("Value error, ")
        seen = problems.setdefault(".".join(loc), [])
        if msg not in seen:
            seen.append(msg)
    lines = []
    for section, keys in unknown.items():
        known = sorted(_fields(_section_class(cls, section)))
        where = f" in {section}" if section else ""
        lines.append(f"unknown config keys {sorted(keys)}{where}; known: {known}")
    lines += [f"{where}: {' or '.join(msgs)}" if where else " or ".join(msgs) for where, msgs in problems.items()]
    return f"{cls.__name__}: " + "; ".join(lines)


# How pydantic names the member of a union a value was tried against ("int", "str",
# "list[...]", a class name): a step of an error's location that is no key of the config.
_UNION_TAG = re.compile(r"^(int|str|float|bool|bytes|none|[a-z-]+\[.*\]|[A-Z]\w*)$")


def _key_path(cls: type, loc: Iterable[int | str]) -> list[str]:
    """An error location as the config's key path: union member tags dropped."""
    out: list[str] = []
    current: type | None = cls
    for step in loc:
        if isinstance(step, int):
            out.append(str(step))
            continue
        fields = _fields(current) if current is not None else {}
        if step not in fields and _UNION_TAG.match(step):
            continue
        out.append(step)
        current = _dataclass_in(fields.get(step))
    return out


def _fields(cls: type) -> dict[str, Any]:
    """A config class's fields and their types (a dataclass, or a pydantic model such as AppArgs)."""
    import typing

    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    try:
        return dict(typing.get_type_hints(cls))
    except Exception:  # a hint that does not resolve only costs the message its key list
        return {f.name: f.type for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _section_class(cls: type, section: str) -> type:
    """The config class reached from ``cls`` by the dotted path ``section`` (list indices skipped)."""
    for name in section.split("."):
        if not name or name.isdigit():
            continue
        found = _dataclass_in(_fields(cls).get(name))
        if found is None:
            return cls
        cls = found
    return cls


def _dataclass_in(hint: Any) -> type | None:
    """The config class inside a hint such as ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, pydantic.BaseModel)):
        return hint
    for arg in getattr(hint, "__args__", ()):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def from_dict(cls: type[T], data: Mapping[str, Any] | T | None) -> T:
    """Builds config ``cls`` from a mapping (nested sections become nested configs).

    Args:
        cls: a config dataclass.
        data: keys are field names, missing keys take the field default; None = all defaults;
            an instance of ``cls`` is returned as it is.
    Returns:
        an instance of ``cls``.
    Raises:
        ConfigError: on an unknown key or a value the field does not accept.
    """
    if isinstance(data, cls):
        return data
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(dict(data or {}))
    except pydantic.ValidationError as err:
        raise ConfigError(explain(cls, err)) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (saved beside every output)."""
    return _adapter(type(cfg)).dump_python(cfg, mode="json")


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of config ``cls``: every key, its type, default and description."""
    return _adapter(cls).json_schema()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping; an empty file is an empty mapping."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with each ``a.b.c=value`` set (the value parsed as YAML).

    Raises:
        ConfigError: on an item without ``=``, or a dotted path through a non-section.
    """
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        _set_dotted(out, key, yaml.safe_load(raw), item)
    return out


def nest_dotted(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every ``a.b`` key moved into section ``a`` as ``b`` (values as they are).

    Raises:
        ConfigError: on a dotted path through a value that is not a section.
    """
    out = copy.deepcopy({k: v for k, v in data.items() if "." not in str(k)})
    for key, value in data.items():
        if "." in str(key):
            _set_dotted(out, str(key), value, str(key))
    return out


def _set_dotted(out: dict[str, Any], key: str, value: Any, item: str) -> None:
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value
