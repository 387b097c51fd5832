"""TrainingSettings: the typed, frozen settings of one model block, and the schema's trainer keys."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from equihash.io import InputError
from equihash.train.settings import TrainingSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
BLOCK = CONFIG["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]


def test_the_fields_are_the_schema_trainer_keys_in_order():
    assert [field.name for field in dataclasses.fields(TrainingSettings)] == SCHEMA["x-fragments"]["trainer_keys"]
    trainer = SCHEMA["x-fragments"]["trainer"]
    for field in dataclasses.fields(TrainingSettings):
        if field.name == "objective":
            continue
        kind = trainer[field.name].get("type", "string")  # the enum of device: a string
        assert {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}[kind] == field.type, field.name


def test_built_once_from_a_block_typed_and_frozen():
    settings = TrainingSettings.from_block({**BLOCK, "clip_value": 10, "learning_rate": 1})
    assert settings.clip_value == 10.0 and isinstance(settings.clip_value, float)
    assert settings.learning_rate == 1.0 and isinstance(settings.learning_rate, float)
    assert settings.rows_per_step == BLOCK["batch_size"] * BLOCK["batches_per_step"] == 256
    assert settings.as_dict() == {**BLOCK, "clip_value": 10.0, "learning_rate": 1.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 3
    with pytest.raises(TypeError):
        settings.objective["shannon_weight"] = 1.0  # read-only
    assert settings.replace(steps=3).steps == 3 and settings.steps == BLOCK["steps"]


def test_a_missing_or_unknown_key_is_named():
    block = {key: value for key, value in BLOCK.items() if key != "eval_every"}
    with pytest.raises(InputError, match=r"tasks.X.models.Y lacks eval_every \(a model block holds exactly seed, "):
        TrainingSettings.from_block(block, "tasks.X.models.Y")
    with pytest.raises(InputError, match=r"has unknown keys lr, speed"):
        TrainingSettings.from_block({**BLOCK, "lr": 1, "speed": 2})
    with pytest.raises(InputError, match=r"lacks steps, batch_size, .*checkpoint_every, objective"):
        TrainingSettings.from_block(CONFIG["tasks"]["MnistMosaic"]["models"]["pHash"])  # not a training's block
