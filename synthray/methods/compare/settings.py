"""What a comparison runs: the methods (names or :class:`MethodSpec`), the data and protocol,
the explanation figure, and the resume switch (:class:`CompareConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from synthray.config import ExperimentConfig, PipelineConfig, PreprocessConfig, from_dict
from synthray.methods.explain_config import ExplainConfig
from synthray.methods.registry import list_methods
from synthray.typed_config import config_dataclass

#: What `synthray compare` runs when no method list is given: one of each family.
DEFAULT_METHODS = (
    "supcon_knn",
    "supcon_centroid",
    "supcon_comparator",
    "supcon_mlp",
    "euclidean_knn",
    "small_cnn",
    "resnet50_sigmoid",
    "resnet50_transfer",
    "resnet50_fractal_combined",
    "cnn_autoencoder",
)


@config_dataclass
class MethodSpec:
    """One method of a comparison."""

    name: str
    """registered method (see synthray.methods.list_methods())"""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """its own config fields"""
    label: str | None = None
    """row name; None = name (set it to run one method twice with other params)"""

    @property
    def row(self) -> str:
        return self.label or self.name


def _default_experiment() -> ExperimentConfig:
    from synthray.data.synthbench.build import DEFAULT_HELD_OUT

    return ExperimentConfig(setting="ES4", held_out=DEFAULT_HELD_OUT)


@config_dataclass
class ExplainFigureConfig:
    """The explanation figure of a comparison."""

    images: int = 2
    """test images explained per method (0 = no figure); a seen and a zero-shot one first"""
    kinds: tuple[str, ...] = ("saliency", "lime")
    """explanation maps drawn per image: "saliency" and/or "lime" """
    lime: ExplainConfig = dataclasses.field(default_factory=lambda: ExplainConfig(n_samples=150, n_segments=30))


@config_dataclass
class CompareConfig:
    """A side-by-side comparison of detector methods."""

    shards: str = "runs/demo/shards"
    """ingest output folder"""
    out: str = "runs/compare"
    """where the table, JSON and figures go (and the methods' scratch)"""
    methods: list[str | MethodSpec] = dataclasses.field(default_factory=lambda: list(DEFAULT_METHODS))
    """names or MethodSpec dicts"""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Settings given to every method whose config has the field (e.g. backbone, steps, batch_size, lr); a method's own
    params win.
    """
    experiment: ExperimentConfig = dataclasses.field(default_factory=_default_experiment)
    """Which classes train; the rest of the data's classes are zero-shot. Default: ES4 with the built-in benchmark's
    held-out families.
    """
    preprocess: PreprocessConfig = dataclasses.field(default_factory=lambda: PreprocessConfig(resolution=64))
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    references_per_class: int | None = None
    """train images per class enrolled as references; None = all"""
    test_per_class: int | None = None
    """test images per class scored; None = all"""
    predict_batch_size: int = 128
    """test images per predict() call"""
    explain: ExplainFigureConfig = dataclasses.field(default_factory=ExplainFigureConfig)
    seed: int = 0
    """seeds every method's training and the test-set draw"""
    keep_going: bool = True
    """False: the first failing method stops the comparison"""
    resume: bool = True
    """Reuse a method's row from an earlier compare.json in ``out`` when the method, its resolved config, the data and
    the test set are the same (a stopped comparison goes on where it stopped; a changed method is re-run). False: run
    everything again.
    """

    def __post_init__(self) -> None:
        # Validation made each entry a name or a MethodSpec; the rest of the code sees specs.
        specs = [m if isinstance(m, MethodSpec) else MethodSpec(m) for m in self.methods]
        rows = [s.row for s in specs]
        dupes = sorted({r for r in rows if rows.count(r) > 1})
        if dupes:
            raise ValueError(f"methods {dupes} appear twice; give one of them a distinct label")
        known = set(list_methods())
        unknown = [s.name for s in specs if s.name not in known]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {sorted(known)}")
        if not specs:
            raise ValueError("no method to compare")
        self.methods = [*specs]

    @property
    def specs(self) -> list[MethodSpec]:
        """The methods, each a :class:`MethodSpec` (validation made every name one)."""
        return cast("list[MethodSpec]", self.methods)  # __post_init__ made every entry one


def load_compare_config(data: dict[str, Any]) -> CompareConfig:
    """A :class:`CompareConfig` from YAML data (a ``compare:`` section or the fields themselves)."""
    return from_dict(CompareConfig, data.get("compare", data) if isinstance(data, dict) else data)
