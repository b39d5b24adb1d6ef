"""Every typed config in one import, and the loader they share.

Each concern keeps its config next to its code (``synthray/<package>/config.py``); they are
all ``@config_dataclass`` classes of :mod:`synthray.typed_config`, validated by pydantic.
YAML comes in at the entrypoints only (``load_yaml``, ``apply_overrides``, ``from_dict``);
the library takes these objects. An unknown key or a wrong value is a ``ConfigError`` so a
typo in a config file fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

from synthray.attribution.config import AttributionConfig
from synthray.data.config import (
    SPLITS,
    AugmentConfig,
    IngestConfig,
    PipelineConfig,
    PreprocessConfig,
    SplitConfig,
    SynthbenchConfig,
    ValidationConfig,
)
from synthray.demo_config import DemoConfig
from synthray.eval.config import EvalConfig, ProtocolConfig
from synthray.index.config import IndexConfig, StoreConfig
from synthray.losses.config import LossConfig
from synthray.models.config import EncoderConfig
from synthray.train.config import ExperimentConfig, TrainConfig
from synthray.typed_config import apply_overrides, config_dataclass, from_dict, json_schema, load_yaml, to_dict

#: The top-level configs by the section name their YAML files use (``synthray config schema NAME``).
SECTIONS: dict[str, type] = {
    "synthbench": SynthbenchConfig,
    "ingest": IngestConfig,
    "preprocess": PreprocessConfig,
    "pipeline": PipelineConfig,
    "train": TrainConfig,
    "index": IndexConfig,
    "attribution": AttributionConfig,
    "eval": EvalConfig,
    "demo": DemoConfig,
}

__all__ = [
    "SECTIONS",
    "SPLITS",
    "AttributionConfig",
    "AugmentConfig",
    "DemoConfig",
    "EncoderConfig",
    "EvalConfig",
    "ExperimentConfig",
    "IndexConfig",
    "IngestConfig",
    "LossConfig",
    "PipelineConfig",
    "PreprocessConfig",
    "ProtocolConfig",
    "SplitConfig",
    "StoreConfig",
    "SynthbenchConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "config_dataclass",
    "from_dict",
    "json_schema",
    "load_yaml",
    "to_dict",
]
