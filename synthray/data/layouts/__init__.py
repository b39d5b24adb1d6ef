"""Readers that turn a data set's folder tree into :class:`SourceRecord` s.

Each reader knows one layout as it ships (see DESIGN.md) and is registered by name::

    for record in get_layout("genimage")(Path("/data/GenImage"), SplitConfig()):
        ...

Readers do not open files. They yield every non-hidden, non-directory entry found where an
image belongs (ingest's validation decides what is an image, so a ``.txt`` in a class folder is
reported as bad, not silently skipped), labelled with the canonical generator name
(:func:`~synthray.data.generators.normalize_generator`) and a split. Files the layout has no
label for (a ``fake/`` folder where ``ai/`` and ``nature/`` belong, a loose file beside the
class folders) are handed to ``on_stray(relpath, reason, message)`` with reason
``wrong_label_folder`` or ``misplaced``; the default logs a warning. Hidden entries (names
starting with ``.``) are skipped. Traversal is sorted by name at every level, so the order
is deterministic. Sub-folders of a class folder are walked too: everything inside
``ai/`` is AI-made, however it is organised.

A reader checks the tree's shape when called (a root that does not match raises
``ValueError`` at once, naming what was expected and what was found); records and strays
then stream lazily as the returned iterator is consumed.

Splits the layout does not give are drawn by a stable hash of ``salt + relpath``
(:func:`hash_unit`), so they never change between runs or machines.
"""

from synthray.data.layouts.base import (
    STRAY_REASONS,
    LayoutReader,
    StrayHandler,
    carve_split,
    get_layout,
    hash_unit,
    list_layouts,
    register_layout,
)

# Each module registers its reader on import.
from synthray.data.layouts import cifake, folder, forensynths, genimage  # noqa: E402,F401

__all__ = [
    "STRAY_REASONS",
    "LayoutReader",
    "StrayHandler",
    "carve_split",
    "get_layout",
    "hash_unit",
    "list_layouts",
    "register_layout",
]
