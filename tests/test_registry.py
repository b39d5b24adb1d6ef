"""The shared registry: registration, lookup, duplicates, lazily imported built-ins."""

from __future__ import annotations

import pytest

from synthray.registry import Registry


def test_registry_register_get_names_and_duplicates():
    reg: Registry[int] = Registry("widget")
    assert reg.register("b")(2) == 2
    reg.register("a")(1)
    assert reg.names() == ["a", "b"] and reg.get("a") == 1
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        reg.register("a")(3)
    with pytest.raises(ValueError, match=r"unknown widget 'c'; known: \['a', 'b'\]"):
        reg.get("c")


def test_builtins_are_imported_on_first_lookup():
    reg: Registry[object] = Registry("module", ("json",))
    assert reg.names() == []  # importing json registers nothing, but the import ran cleanly
    with pytest.raises(ModuleNotFoundError):
        Registry("x", ("synthray_no_such_module",)).names()
