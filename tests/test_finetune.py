"""Finetune: a generator becomes a restorer with zero-initialised y channels and the null-class label."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_CONFIG, run_cli
from restorecli.checkpoint import load_checkpoint, model_for
from restorecli.config import build_config
from restorecli.errors import UsageError
from restorecli.finetuning import check_fits, restorer_settings, restorer_weights

BACKBONES = ("DiT-T/4", "UNet-T")


def generator_config(preset: str):
    return build_config(None, {"task": "generate", "model": {"preset": preset}})


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter random values, so that zero-initialised layers do not hide a difference."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("preset", BACKBONES)
def test_widened_restorer_matches_generator(preset):
    settings = generator_config(preset)
    generator = randomised(model_for(settings), seed=1)
    restorer = model_for(build_config(None, restorer_settings(settings, None)))
    restorer.load_state_dict(restorer_weights(generator.state_dict(), restorer, "gen.safetensors"))
    restorer.eval()

    draw = torch.Generator().manual_seed(2)
    z = torch.randn((3, 1, 28, 28), generator=draw)  # (N, C, H, W)
    y = torch.rand((3, 1, 28, 28), generator=draw)
    r, t = torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.7, 0.5])
    null = torch.full((3,), generator.num_classes)
    with torch.no_grad():
        expected = generator(z, r, t, labels=null)
        restored = restorer(z, r, t, cond=y)
        other_y = restorer(z, r, t, cond=1 - y)
        digit_three = generator(z, r, t, labels=torch.full((3,), 3))

    assert restorer.cond_channels == 1
    torch.testing.assert_close(restored, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(other_y, expected, rtol=0, atol=1e-6)  # y's weights are zero
    assert expected.abs().mean() > 1e-3
    assert (digit_three - expected).abs().max() > 1e-3  # the label matters, so the null class is what matched


@pytest.mark.parametrize("preset", BACKBONES)
def test_restorer_weights_reject_other_preset(preset):
    generator = model_for(generator_config(preset))
    other = "UNet-T" if preset == "DiT-T/4" else "DiT-T/4"
    restorer = model_for(build_config(None, restorer_settings(generator_config(other), None)))

    with pytest.raises(UsageError, match="gen.safetensors does not fit"):
        restorer_weights(generator.state_dict(), restorer, "gen.safetensors")


def test_check_fits_names_changed_image_size():
    generator = generator_config("DiT-T/4")
    restorer = build_config(None, {**restorer_settings(generator, None), "data": {"image_size": 32}})

    with pytest.raises(UsageError, match=r"data.image_size 32 \(was 28\)"):
        check_fits(generator, restorer, "gen.safetensors")


def test_bridge_source_needs_source_noise():
    generator = generator_config("DiT-T/4")

    bridge = build_config(None, restorer_settings(generator, "bridge"))
    shortcut = restorer_settings(generator, "bridge")
    shortcut["objective"]["source_sigma"] = 0.0
    with pytest.raises(UsageError, match="source_sigma > 0"):
        build_config(None, shortcut)

    assert bridge.objective.source == "bridge"
    assert bridge.objective.condition_on_y
    assert model_for(bridge).cond_channels == 1


# ----------------------------------------------------------------------------------------------
# Through the CLI
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned_run(generator_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetuned")
    config_file = folder / "tiny.toml"
    config_file.write_text(TINY_CONFIG, encoding="utf-8")
    run_dir = folder / "run"
    result = run_cli(
        "finetune", "--from", generator_run / "checkpoints" / "final.safetensors", "--config", config_file,
        "--steps", "4", "--batch-size", "8", "--noise", "mixed", "--device", "cpu", "--run-dir", run_dir,
    )
    assert result.returncode == 0, result.output
    return run_dir


def test_finetune_from_generator_trains_a_restorer(finetuned_run, generator_run, digit_png, tmp_path):
    generator = load_checkpoint(generator_run / "checkpoints" / "final.safetensors")
    restorer = load_checkpoint(finetuned_run / "checkpoints" / "final.safetensors")
    records = [json.loads(line) for line in (finetuned_run / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    out = tmp_path / "restored.png"

    result = run_cli("restore", digit_png, out, "--checkpoint", finetuned_run / "checkpoints" / "final.safetensors", "--device", "cpu")

    assert restorer.config.task == "restore"
    assert restorer.config.model == generator.config.model
    assert restorer.config.objective.source == "noise"
    assert restorer.tensors["model.patch_embed.weight"].shape[1] == 2 * generator.tensors["model.patch_embed.weight"].shape[1]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any("val_psnr_db" in record for record in records)
    assert result.returncode == 0, result.output
    assert out.is_file()


def test_finetune_first_step_matches_generator(generator_run):
    """The starting weights of a finetune run, read from the real generator checkpoint."""
    path = generator_run / "checkpoints" / "final.safetensors"
    generator_checkpoint = load_checkpoint(path)
    generator = model_for(generator_checkpoint.config)
    generator.load_state_dict(generator_checkpoint.section("model"))
    restorer = model_for(build_config(None, restorer_settings(generator_checkpoint.config, None)))
    restorer.load_state_dict(restorer_weights(generator_checkpoint.section("model"), restorer, path))

    z = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    ones = torch.ones(2)
    with torch.no_grad():
        expected = generator.eval()(z, 0 * ones, ones, labels=torch.full((2,), 10))
        first = restorer.eval()(z, 0 * ones, ones, cond=torch.rand((2, 1, 28, 28)))

    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)


def test_finetune_rejects_restorer_checkpoint(tiny_checkpoint, tmp_path):
    result = run_cli("finetune", "--from", tiny_checkpoint, "--steps", "1", "--run-dir", tmp_path / "run", "--device", "cpu")

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "not a generator" in lines[0]
    assert f"train --init-from {tiny_checkpoint}" in lines[0]
    assert not (tmp_path / "run").exists()


def test_finetune_rejects_other_image_size(generator_run, tmp_path):
    config_file = tmp_path / "size.toml"
    config_file.write_text("[data]\nimage_size = 32\n", encoding="utf-8")

    result = run_cli(
        "finetune", "--from", generator_run / "checkpoints" / "final.safetensors", "--config", config_file,
        "--steps", "1", "--run-dir", tmp_path / "run", "--device", "cpu",
    )

    assert result.returncode == 2
    assert "data.image_size 32 (was 28)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_init_from_names_changed_objective(tiny_checkpoint, tmp_path):
    result = run_cli(
        "train", "--init-from", tiny_checkpoint, "--objective", "regression", "--steps", "1",
        "--run-dir", tmp_path / "run", "--device", "cpu",
    )

    assert result.returncode == 2
    assert "objective.kind 'regression' (was 'meanflow')" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_init_from_accepts_new_restore_settings(tiny_checkpoint, tmp_path):
    sampler_only = tmp_path / "sampler.toml"
    sampler_only.write_text("[objective]\nrestore_temperature = 0.0\n", encoding="utf-8")
    with_training_change = tmp_path / "corner.toml"
    with_training_change.write_text("[objective]\nrestore_temperature = 0.0\ncorner_fraction = 0.4\n", encoding="utf-8")
    common = ["train", "--init-from", tiny_checkpoint, "--steps", "1", "--batch-size", "4", "--device", "cpu"]

    accepted = run_cli(*common, "--config", sampler_only, "--run-dir", tmp_path / "run")
    rejected = run_cli(*common, "--config", with_training_change, "--run-dir", tmp_path / "other")

    assert accepted.returncode == 0, accepted.output
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.safetensors")
    assert final.config.objective.restore_temperature == 0.0
    assert rejected.returncode == 2
    assert "objective.corner_fraction 0.4 (was 0.25)" in rejected.stderr
    assert "restore_temperature" not in rejected.stderr
    assert not (tmp_path / "other").exists()


def test_init_from_generator_rejects_noise(generator_run, tmp_path):
    checkpoint = generator_run / "checkpoints" / "final.safetensors"

    result = run_cli(
        "train", "--init-from", checkpoint, "--noise", "blur", "--steps", "1", "--run-dir", tmp_path / "run", "--device", "cpu",
    )

    assert result.returncode == 2
    assert f"restorecli finetune --from {checkpoint}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
