"""The calibrated rule's parameters, stored in the index's metadata beside the references they
were calibrated on (see :mod:`synthray.attribution.rule` for how they are used)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Mapping

from synthray.errors import ConfigError


@dataclasses.dataclass
class Thresholds:
    """The calibrated rule (stored in the index's metadata)."""

    ai_threshold: float = 0.0  # t: the is-AI margin at or above which an image is flagged
    class_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)  # t_c > t of enrolled generators
    acceptance: dict[str, float] = dataclasses.field(default_factory=dict)  # min s_c to be named c (else unknown)
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)  # how they were chosen, what was measured

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Thresholds":
        d = copy.deepcopy(dict(d or {}))  # never share nested dicts with a cached metadata read
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"Thresholds: unknown keys {sorted(unknown)} (an index calibrated by an older "
                "synthray: rebuild it with `synthray index`)"
            )
        return cls(**d)

    def threshold_of(self, generator: str) -> float:
        return max(self.ai_threshold, self.class_thresholds.get(generator, self.ai_threshold))
