"""synthbench: the built-in, deterministic benchmark (see DESIGN.md).

``build_synthbench(out, cfg)`` writes ``<out>/<label>/<label>_NNNNN.png`` for ``real`` (crops of
the photographs scikit-image, scikit-learn and matplotlib ship) and for every registered
generator family (a small torch network of its own architecture, fitted briefly on real crops),
plus ``<out>/synthbench.json``. ``trivial_baseline(root)`` reports how far colour statistics
alone get on any labelled folder tree; ``fingerprint_probe(root)`` how far a residual spectrum
gets.

Importing this package registers the families (``families/``), as timm's ``models/`` does.
"""

from synthray.data.synthbench import families  # noqa: F401  (registers the families)
from synthray.data.synthbench.base import GeneratorFamily
from synthray.data.synthbench.baseline import trivial_baseline
from synthray.data.synthbench.build import DEFAULT_HELD_OUT, SUMMARY_NAME, build_synthbench, resolve_config
from synthray.data.synthbench.classes import image_name
from synthray.data.synthbench.photos import Photo, find_photos
from synthray.data.synthbench.probe import fingerprint_probe
from synthray.data.synthbench.registry import create_family, get_family, list_families, register_family

__all__ = [
    "DEFAULT_HELD_OUT",
    "SUMMARY_NAME",
    "GeneratorFamily",
    "Photo",
    "build_synthbench",
    "create_family",
    "find_photos",
    "fingerprint_probe",
    "get_family",
    "image_name",
    "list_families",
    "register_family",
    "resolve_config",
    "trivial_baseline",
]
