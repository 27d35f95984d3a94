"""Configuration: one pydantic model, readable errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nngpt_ray.config import Config, load_config
from nngpt_ray.failures import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"


def test_local_preset_equals_the_defaults():
    assert load_config(CONFIGS / "local.yaml") == Config()


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_validates(preset):
    import importlib.util

    if "quantization: 4bit" in preset.read_text() and importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match=r"learner.quantization 4bit needs bitsandbytes"):
            load_config(preset)  # where QLoRA cannot work, the preset says so at load, in one line
        return
    load_config(preset)


def test_qlora_on_cpu_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"learner.quantization 4bit needs a GPU"):
        load_config(None, ["learner.quantization=4bit"])


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  evry_k: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'learner.evry_k' \(did you mean 'every_k'\?\)"):
        load_config(path)


def test_unknown_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lerner: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'lerner'.*learner"):
        load_config(path)


def test_bad_value_names_the_field_path():
    with pytest.raises(ConfigError, match=r"'trainers.count': Input should be greater than or equal to 1 \(got 0\)"):
        load_config(None, ["trainers.count=0"])


def test_overrides_are_typed():
    cfg = load_config(None, ["loop.cycles=7", "data.resize=16", "llm.model=null"])
    assert cfg.loop.cycles == 7 and cfg.data.resize == 16 and cfg.llm.model is None


@pytest.mark.parametrize("text, words", [("a: [", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping")])
def test_broken_files(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_yaml():
    cfg = load_config(None, ["loop.cycles=2"])
    assert Config.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


def test_unknown_seed_family_names_the_available_ones():
    with pytest.raises(ConfigError, match=r"'task.families'.*unknown seed family resnett; available: convnext, "):
        load_config(None, ["task.families=[resnet, resnett]"])
    assert load_config(None, ["task.families=[resnet]"]).task.families == ["resnet"]
