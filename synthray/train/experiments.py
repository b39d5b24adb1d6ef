"""Class selection for the thesis's experiment settings (``../shared/seeds/001_*``, ch. 3.5).

- ES1: every generator, no real images (attribution among generators only).
- ES2: every generator + real.
- ES3: one generator + real (the thesis trains on ForenSynths' ProGAN and tests on GenImage).
- ES4: every class but the held-out generators, which stay unseen (zero-shot at evaluation).
- custom: an explicit class list.
"""

from __future__ import annotations

from typing import Iterable

from synthray.config import ExperimentConfig
from synthray.data.schema import REAL

SETTINGS = ("ES1", "ES2", "ES3", "ES4", "custom")


def select_classes(available: Iterable[str], exp: ExperimentConfig) -> tuple[list[str], list[str]]:
    """The classes a setting trains on, and the ones it holds out.

    Args:
        available: class names present in the data.
        exp: the experiment setting.
    Returns:
        (train classes, sorted with ``real`` first when present; held-out classes).
    Raises:
        ValueError: unknown setting, a named class absent from the data, or fewer than two
            training classes (SupCon needs negatives).
    """
    have = sorted(set(available))
    generators = [c for c in have if c != REAL]
    setting = exp.setting.upper() if exp.setting.lower() != "custom" else "custom"
    # "ES4.2" and the like name variants of ES4 (different held-out sets).
    family = setting.split(".")[0]
    if family not in SETTINGS:
        raise ValueError(f"unknown experiment setting {exp.setting!r}; use one of {SETTINGS} (ES4.x allowed)")

    def check(names: Iterable[str], what: str) -> None:
        missing = sorted(set(names) - set(have))
        if missing:
            raise ValueError(f"{what} {missing} not in the data; classes found: {have}")

    held: list[str] = []
    if family == "ES1":
        train = generators
    elif family == "ES2":
        train = have
    elif family == "ES3":
        if not exp.generator:
            raise ValueError("ES3 needs experiment.generator (the one generator trained with real)")
        check([exp.generator, REAL], "ES3 classes")
        train = [REAL, exp.generator]
        held = [g for g in generators if g != exp.generator]
    elif family == "ES4":
        if not exp.held_out:
            raise ValueError("ES4 needs experiment.held_out (generators kept out of training)")
        if REAL in exp.held_out:
            raise ValueError("ES4 holds out generators; 'real' cannot be held out")
        check(exp.held_out, "held-out generators")
        held = sorted(exp.held_out)
        train = [c for c in have if c not in held]
    else:
        if not exp.classes:
            raise ValueError("setting 'custom' needs experiment.classes")
        check(exp.classes, "classes")
        train = list(dict.fromkeys(exp.classes))
        held = [c for c in have if c not in train]
    train = sorted(train, key=lambda c: (c != REAL, c))
    if len(train) < 2:
        raise ValueError(f"{exp.setting} leaves {len(train)} training class(es) {train}; SupCon needs at least two")
    return train, held
