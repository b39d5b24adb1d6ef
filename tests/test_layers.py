"""Imports go one way: data -> models -> train -> index/attribution -> discovery -> eval,
methods and the client -> the Serve app -> the demo and the command line.

Every ``import`` counts, the ones inside functions too (a lazy import is still a
dependency). Config modules (``synthray/config.py``, ``*/config.py``, ``*_config.py``) are
plain settings that any layer may read; they in turn may import only other config modules
and ``synthray.errors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lower numbers sit lower; a module may import its own layer and the ones below.
LAYERS = {
    "synthray.errors": 0,
    "synthray.lazy": 0,
    "synthray.registry": 0,
    "synthray.config": 0,
    "synthray.plots": 0,
    "synthray.data": 1,
    "synthray.losses": 2,
    "synthray.models": 2,
    "synthray.train": 3,
    "synthray.index": 4,
    "synthray.attribution": 4,
    "synthray.discovery": 5,
    "synthray.eval": 6,
    "synthray.methods": 6,
    "synthray.client": 6,
    "serve": 7,
    "synthray.demo": 8,
    "synthray.demo_service": 8,
    "synthray.cli": 8,
    "synthray.__main__": 8,
    "synthray": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    """The layer of ``module`` (its longest listed prefix), None outside the project."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def _is_config(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module == "synthray.config" or last == "config" or last.endswith("_config")


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append((node.lineno, base))
    return [(line, name) for line, name in out if name.split(".")[0] in ("synthray", "serve")]


def _project_modules() -> list[tuple[Path, str]]:
    files = sorted((ROOT / "synthray").rglob("*.py")) + sorted((ROOT / "serve").glob("*.py"))
    return [(p, _module_name(p)) for p in files]


def test_every_import_points_down_the_layers():
    upward = []
    for path, module in _project_modules():
        if _is_config(module):
            continue
        mine = _layer(module)
        assert mine is not None, f"{module} has no layer: add its package to LAYERS"
        for line, target in _imports(path, module):
            theirs = _layer(target)
            if theirs is not None and theirs > mine and not _is_config(target):
                upward.append(
                    f"{path.relative_to(ROOT)}:{line} ({module}, layer {mine}) imports {target} (layer {theirs})"
                )
    assert upward == [], "\n".join(upward)


def test_config_modules_are_leaves():
    found = []
    for path, module in _project_modules():
        if not _is_config(module):
            continue
        for line, target in _imports(path, module):
            if not (_is_config(target) or target == "synthray.errors"):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert found == [], "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule can fail: a data module importing the trainer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from synthray.train.loop import fit\n")
    assert _imports(bad, "synthray.data.bad") == [(2, "synthray.train.loop")]
    assert _layer("synthray.train.loop") > _layer("synthray.data.bad")
