"""The one config system: every config validated by pydantic, built from YAML by one loader,
documented field by field, a mistake named by its key's path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from synthray.cli import main
from synthray.config import (
    SECTIONS,
    AugmentConfig,
    EvalConfig,
    IndexConfig,
    PreprocessConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    json_schema,
    to_dict,
)
from synthray.errors import ConfigError
from synthray.typed_config import nest_dotted


def _nested_configs(cls: type, seen: set[type] | None = None) -> set[type]:
    """``cls`` and every config class its fields reach."""
    import typing

    seen = seen if seen is not None else set()
    if cls in seen:
        return seen
    seen.add(cls)

    def walk(hint: object) -> None:
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            _nested_configs(hint, seen)
        for arg in getattr(hint, "__args__", ()):
            walk(arg)

    for hint in typing.get_type_hints(cls).values():
        walk(hint)
    return seen


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_field_of_every_config_is_described_in_its_schema(section):
    cls = SECTIONS[section]
    schema = json_schema(cls)
    defs = {name: d for name, d in schema.get("$defs", {}).items()}
    undescribed = []
    for c in _nested_configs(cls):
        props = (schema if c is cls else defs[c.__name__])["properties"]
        assert set(props) == {f.name for f in dataclasses.fields(c)}
        undescribed += [f"{c.__name__}.{k}" for k, v in props.items() if "$ref" not in v and not v.get("description")]
    # Nested sections are described by their own class docstring; every plain field by its own.
    assert undescribed == []
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_defaults_survive_the_round_trip_through_plain_data(section):
    cls = SECTIONS[section]
    cfg = cls()
    data = json.loads(json.dumps(to_dict(cfg)))  # what is saved beside a checkpoint or report
    assert from_dict(cls, data) == cfg


def test_yaml_types_become_the_declared_ones():
    cfg = from_dict(
        TrainConfig,
        {
            "lr": 1,  # an int where a float is declared
            "experiment": {"setting": "ES4", "held_out": ["a", "b"]},  # a YAML list for a tuple
            "preprocess": {"augment": [{"name": "hflip", "p": 0.5}]},  # a list of nested configs
        },
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.experiment.held_out == ("a", "b")
    assert cfg.preprocess.augment == [AugmentConfig(name="hflip", p=0.5)]
    ev = from_dict(EvalConfig, {"attribution": {"k": 5}, "sweep_sizes": [10, "all"]})
    assert ev.attribution is not None and ev.attribution.k == 5  # an optional section, from a mapping
    assert ev.sweep_sizes == (10, "all")


def test_a_mistake_names_the_key_path_and_lists_the_known_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"encoder": {"embed_dim": 64}, "epochs": "ten"})
    text = str(err.value)
    assert text.startswith("TrainConfig: ")
    assert "unknown config keys ['embed_dim'] in encoder; known: [" in text and "'embedding_dim'" in text
    assert "epochs: Input should be a valid integer" in text
    with pytest.raises(ConfigError, match=r"unknown config keys \['q'\] in preprocess.augment.0"):
        from_dict(TrainConfig, {"preprocess": {"augment": [{"name": "hflip", "q": 1}]}})
    # A range check of the config's own (__post_init__) reads as the same kind of message.
    with pytest.raises(ConfigError, match="split: val_fraction and test_fraction must lie in"):
        from_dict(SECTIONS["ingest"], {"split": {"val_fraction": 1.5}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(IndexConfig, ["per_class", 5])


def test_numbers_where_text_is_declared_are_their_text_and_a_union_error_is_one_line():
    # YAML and --set read ``salt: 7`` or ``run_name=2024`` as ints; the fields want text.
    assert from_dict(SECTIONS["ingest"], {"split": {"salt": 7}}).split.salt == "7"
    assert from_dict(TrainConfig, apply_overrides({}, ["run_name=2024"])).run_name == "2024"
    with pytest.raises(ConfigError) as err:
        from_dict(IndexConfig, {"per_class": [5]})
    # A value no member of ``int | str`` takes is one problem at the key, no union tags in its path.
    assert str(err.value) == (
        "IndexConfig: per_class: Input should be a valid integer or Input should be a valid string"
    )
    from synthray.methods.compare import load_compare_config

    with pytest.raises(ConfigError, match=r"unknown config keys \['nam'\] in methods.1; known: \['label', 'name'"):
        load_compare_config({"methods": ["small_cnn", {"nam": "x"}]})


def test_building_a_config_in_code_is_checked_the_same_way():
    with pytest.raises(ConfigError, match="unknown config keys \\['resolutoin'\\]"):
        PreprocessConfig(resolutoin=64)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="resolution: Input should be a valid integer"):
        PreprocessConfig(resolution="big")  # type: ignore[arg-type]
    cfg = PreprocessConfig(resolution=64)
    with pytest.raises(ConfigError, match="resolution"):
        dataclasses.replace(cfg, resolution=None)
    # ConfigError is both: callers that caught either before keep working.
    assert issubclass(ConfigError, TypeError) and issubclass(ConfigError, ValueError)


def test_overrides_and_dotted_keys_reach_nested_sections():
    data = apply_overrides({"epochs": 2, "encoder": {"backbone": "x"}}, ["encoder.embedding_dim=64", "lr=3e-4"])
    # PyYAML reads 3e-4 as a string (YAML 1.1 wants a dot); the float field still takes it.
    assert data == {"epochs": 2, "encoder": {"backbone": "x", "embedding_dim": 64}, "lr": "3e-4"}
    assert from_dict(TrainConfig, data).lr == 3e-4
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(ConfigError, match="'epochs' is not a section"):
        apply_overrides({"epochs": 2}, ["epochs.x=1"])
    # serve run's key=value arguments: values stay as given, dotted keys nest.
    assert nest_dotted({"store.path": "p", "store.url": None, "device": "cpu"}) == {
        "store": {"path": "p", "url": None},
        "device": "cpu",
    }


def test_config_command_prints_a_schema_and_a_resolved_file(tmp_path, capsys):
    assert main(["config", "schema", "index"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$defs"]["StoreConfig"]["properties"]["url"]["description"]

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3, "encoder": {"backbone": "resnet10t"}}}))
    assert main(["config", "show", "train", "--config", str(path), "--set", "lr=0.01"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["epochs"], shown["encoder"]["backbone"], shown["lr"]) == (3, "resnet10t", 0.01)
    assert shown["batch_size"] == TrainConfig().batch_size  # defaults filled in

    path.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    assert main(["config", "show", "train", "--config", str(path)]) == 2  # one line, no traceback
