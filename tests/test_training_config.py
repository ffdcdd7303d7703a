"""Training configs: the shipped files load, mistakes are named, YAML and TOML agree, overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vc2_core.commands.train import parse_overrides
from vc2_core.training.config import _PATH_FIELDS, ConfigError, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "trainers" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    raw = yaml.safe_load(path.read_text())
    config = load_config(path)
    for section, name in _PATH_FIELDS:  # every path the file gives, resolved against the config's folder
        given = raw.get(section, {}).get(name)
        assert getattr(getattr(config, section), name) == (None if given is None else str(path.parent / given))
    assert Path(config.run.output_dir).is_absolute()
    assert config.optim.lr == raw.get("optim", {}).get("lr", 5e-5) and config.stage.name == raw["stage"]["name"]
    assert config_from_dict(config.to_dict()) == config  # every field survives (what a run writes to config.json)


def test_paper_settings_in_the_recipe_configs():
    stage1 = load_config(CONFIGS / "stage1_full_vc2_512.yaml")
    stage2 = load_config(CONFIGS / "stage2_spa_dir_vc2_512.yaml")
    assert (stage1.stage.name, stage1.optim.lr, stage1.run.max_steps) == ("full", 5e-5, 270_000)
    assert (stage1.videos.frames, stage1.videos.height, stage1.videos.width) == (16, 320, 512)
    assert (stage2.stage.name, stage2.optim.lr, stage2.run.max_steps) == ("spa-dir", 5e-5, 30_000)
    assert (stage2.images.height, stage2.images.width) == (512, 512)


def test_unknown_fields_and_sections_are_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"optim: unknown field 'learning_rate'; known: lr, "):
        config_from_dict({"model": {"preset": "tiny"}, "images": {"index": "x"}, "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer' \(did you mean 'optim'\?\)"):
        config_from_dict({"optimizer": {}})


def test_wrong_types_and_values_are_all_listed():
    with pytest.raises(ConfigError, match="expected an integer"):
        config_from_dict({"run": {"max_steps": "ten"}})
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": {"preset": "tiny", "checkpoint": "a.safetensors"}, "stage": {"name": "spa-dri"},
                          "optim": {"schedule": "linear"}})
    message = str(error.value)
    assert "exactly one of checkpoint" in message and "unknown stage 'spa-dri'" in message
    assert "optim.schedule" in message


def test_stage_data_requirements():
    with pytest.raises(ConfigError, match="trains on images: set images.index"):
        config_from_dict({"model": {"preset": "tiny"}, "stage": {"name": "F-Spa-DIR"}})
    with pytest.raises(ConfigError, match="trains on videos: set videos.index"):
        config_from_dict({"model": {"preset": "tiny"}, "stage": {"name": "full"}})
    config = config_from_dict({"model": {"preset": "tiny"}, "stage": {"name": "partial"}, "videos": {"index": "v"}})
    assert (config.stage.name, config.videos.index, config.images.index) == ("partial", "v", None)


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  preset: tiny\nimages:\n  index: imgs\n  ratio: 0.5\n"
                                     "videos:\n  frame_stride: [2, 3]\noptim:\n  lr: 1.0e-4\n")
    (tmp_path / "a.toml").write_text('[model]\npreset = "tiny"\n[images]\nindex = "imgs"\nratio = 0.5\n'
                                     "[videos]\nframe_stride = [2, 3]\n[optim]\nlr = 1e-4\n")
    yaml_config, toml_config = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    assert yaml_config == toml_config
    assert yaml_config.images.index == str(tmp_path / "imgs") and yaml_config.videos.frame_stride == (2, 3)


def test_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  preset: tiny\nimages:\n  index: imgs\n")
    overrides = parse_overrides(["optim.lr=1e-5", "videos.frame_stride=[1, 8]", "run.cpu=true"])
    config = load_config(tmp_path / "a.yaml", overrides)
    assert (config.optim.lr, config.videos.frame_stride, config.run.cpu) == (1e-5, (1, 8), True)
    with pytest.raises(ValueError, match="SECTION.FIELD=VALUE"):
        parse_overrides(["lr=1"])


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match=".yaml, .yml or .toml"):
        load_config(tmp_path / "c.json")
