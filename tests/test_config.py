"""Config: defaults, TOML file, command-line overrides, and one-line errors per field."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorecli.config import Config, build_config, config_from_json
from restorecli.errors import UsageError


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nsteps = 10\nlr = 1e-3\n[corruption]\nnoise = "blur"\n', encoding="utf-8")

    config = build_config(path, {"train": {"steps": 20}})

    assert config.train.steps == 20
    assert config.train.lr == 1e-3
    assert config.corruption.noise == "blur"
    assert config.model.preset == Config().model.preset


def test_unknown_key_names_field_and_fix(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nstepz = 10\n", encoding="utf-8")

    with pytest.raises(UsageError) as caught:
        build_config(path)

    assert "train.stepz: unknown key" in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_section_rejected():
    with pytest.raises(UsageError, match="optimizer: unknown key"):
        build_config(None, {"optimizer": {"lr": 1}})


def test_invalid_range_rejected():
    with pytest.raises(UsageError, match="salt_pepper_amount"):
        build_config(None, {"corruption": {"salt_pepper_amount": [0.3, 0.1]}})


def test_invalid_noise_kind_rejected():
    with pytest.raises(UsageError, match="corruption.noise"):
        build_config(None, {"corruption": {"noise": "speckle"}})


def test_fractions_must_fit():
    with pytest.raises(UsageError, match="equal_fraction \\+ corner_fraction"):
        build_config(None, {"objective": {"equal_fraction": 0.8, "corner_fraction": 0.5}})


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        build_config(tmp_path / "nope.toml")

    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nsteps = 1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid TOML"):
        build_config(broken)


def test_json_round_trip():
    config = build_config(None, {"train": {"steps": 7}, "objective": {"kind": "regression"}})

    assert config_from_json(config.to_json()) == config


REPO_CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))


def test_repo_has_shipped_config():
    assert "shipped.toml" in [path.name for path in REPO_CONFIGS]


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=lambda path: path.name)
def test_repo_config_loads(path):
    config = build_config(path, {})

    assert config.train.steps > 0
