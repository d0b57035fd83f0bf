"""Training through the Python API: run folder contents, exact resume, divergence, image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.config import build_config
from restorecli.data.images import read_image, write_png
from restorecli.meanflow import output_channels
from restorecli.restoration import Restorer
from restorecli.training import SilentMonitor, TrainingDiverged, train


def tiny_config(run_dir, **train_overrides):
    train_section = {
        "steps": 6, "batch_size": 8, "val_every": 3, "val_images": 16, "checkpoint_every": 2,
        "log_every": 2, "warmup_steps": 2, "run_dir": str(run_dir),
    }
    train_section.update(train_overrides)
    return build_config(None, {"model": {"preset": "DiT-T/4"}, "train": train_section, "device": "cpu"})


def test_run_folder_contents(tmp_path):
    config = tiny_config(tmp_path / "run")

    result = train(config)

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line for line in lines if "loss" in line]
    validations = [line for line in lines if "val_psnr_db" in line]
    assert [line["step"] for line in losses] == [2, 4, 6]
    assert all(np.isfinite(line["loss"]) and np.isfinite(line["mse"]) for line in losses)
    assert [line["step"] for line in validations] == [3, 6]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 6
    final = load_checkpoint(result.final_checkpoint)
    assert final.config == config
    assert final.meta["step"] == 6
    assert not any(name.startswith("train.") for name in final.tensors)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_keep_every_keeps_restorable_ema_weights(tmp_path):
    config = tiny_config(tmp_path / "run", keep_every=2)

    result = train(config)

    kept_names = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("step-*.safetensors"))
    assert kept_names == ["step-000002.safetensors", "step-000004.safetensors", "step-000006.safetensors"]
    last_kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-000006.safetensors")
    final = load_checkpoint(result.final_checkpoint)
    assert last_kept.meta["step"] == 6
    assert not any(name.startswith("train.") for name in last_kept.tensors)
    for name, value in final.tensors.items():
        torch.testing.assert_close(last_kept.tensors[name], value, rtol=0, atol=0)
    early = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-000002.safetensors")
    assert any(not torch.equal(early.tensors[name], value) for name, value in final.tensors.items())


class InterruptAt(SilentMonitor):
    """Raises KeyboardInterrupt when the loop reports `step`, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def update(self, step, stats):
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_repeats_uninterrupted_run(tmp_path):
    straight = train(tiny_config(tmp_path / "straight", steps=6))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "split", steps=6), monitor=InterruptAt(6))  # last checkpoint: step 4
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.safetensors").meta["step"] == 4
    resumed = train(tiny_config(tmp_path / "split", steps=6), resume=True)

    expected = load_checkpoint(straight.final_checkpoint).tensors
    actual = load_checkpoint(resumed.final_checkpoint).tensors
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_existing_run_needs_resume(tmp_path):
    train(tiny_config(tmp_path / "run", steps=2))

    with pytest.raises(Exception, match="--resume"):
        train(tiny_config(tmp_path / "run", steps=4))


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    config = tiny_config(tmp_path / "run", steps=30, lr=1e30, warmup_steps=0, checkpoint_every=1, grad_clip=1e30)

    with pytest.raises(TrainingDiverged, match="loss became") as caught:
        train(config)

    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    assert last.exists()
    assert str(last) in str(caught.value)
    assert load_checkpoint(last).meta["step"] >= 1


def test_trains_on_rgb_image_folder(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for index in range(5):
        write_png(folder / f"img{index}.png", rng.random((3, 20 + index, 24)).astype(np.float32))
    config = build_config(None, {
        "model": {"preset": "DiT-T/4"},
        "data": {"source": str(folder), "channels": 3, "image_size": 16},
        "train": {"steps": 3, "batch_size": 4, "val_every": 3, "val_images": 2, "checkpoint_every": 3,
                  "log_every": 1, "warmup_steps": 1, "run_dir": str(tmp_path / "run")},
        "device": "cpu",
    })

    result = train(config)

    assert result.val_psnr_db is not None
    assert load_checkpoint(result.final_checkpoint).config.data.channels == 3


@pytest.mark.parametrize("preset", ["DiT-T/4", "UNet-T"])
@pytest.mark.parametrize("kind", ["meanflow", "imf", "flow_matching"])
def test_objective_checkpoint_restores_by_cli(tmp_path, digit_png, preset, kind):
    config = build_config(None, {
        "model": {"preset": preset},
        "objective": {"kind": kind},
        "corruption": {"noise": "gaussian"},
        "train": {"steps": 3, "batch_size": 8, "val_every": 3, "val_images": 16, "checkpoint_every": 3,
                  "log_every": 1, "warmup_steps": 1, "run_dir": str(tmp_path / "run")},
        "device": "cpu",
    })

    result = train(config)

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line for line in lines if "loss" in line]
    assert [line["step"] for line in losses] == [1, 2, 3]
    assert all(np.isfinite(line["loss"]) and np.isfinite(line["mse"]) for line in losses)
    checkpoint = load_checkpoint(result.final_checkpoint)
    assert checkpoint.config.objective.kind == kind
    assert checkpoint.config.model.preset == preset
    # imf stacks u and v, so its network outputs two channels per image channel.
    network = load_model(checkpoint, result.final_checkpoint)
    with torch.no_grad():
        output = network(torch.zeros(1, 1, 28, 28), torch.zeros(1), torch.ones(1))
    assert output.shape == (1, output_channels(1, config.objective), 28, 28)

    restored_path = tmp_path / "restored.png"
    restored = run_cli(
        "restore", digit_png, restored_path, "--checkpoint", result.final_checkpoint, "--steps", "2", "--device", "cpu"
    )

    assert restored.returncode == 0, restored.output
    restorer = Restorer.load(result.final_checkpoint, "cpu")
    expected = restorer.restore_batch(read_image(digit_png)[None], steps=2, seed=0)[0]  # (1, 28, 28)
    actual = read_image(restored_path)
    assert actual.shape == (1, 28, 28)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1 / 255)  # the PNG stores 8 bits
    assert np.abs(actual - read_image(digit_png)).max() > 1 / 255  # restoring changed the image


def tiny_imf_config(tmp_path, model: dict):
    """Three imf training steps of DiT-T/4 on salt-pepper with the given model settings."""
    return build_config(None, {
        "model": {"preset": "DiT-T/4", **model},
        "objective": {"kind": "imf"},
        "corruption": {"noise": "salt-pepper"},
        "train": {"steps": 3, "batch_size": 8, "val_every": 3, "val_images": 16, "checkpoint_every": 3,
                  "log_every": 1, "warmup_steps": 1, "run_dir": str(tmp_path / "run")},
        "device": "cpu",
    })


def test_conv_head_and_stem_train_and_restore(tmp_path, digit_png):
    config = tiny_imf_config(tmp_path, {"conv_head_channels": 8, "conv_stem_channels": 4})

    result = train(config)

    checkpoint = load_checkpoint(result.final_checkpoint)
    assert checkpoint.config.model.conv_head_channels == 8
    assert any(name.startswith("model.head.") for name in checkpoint.tensors)
    assert torch.count_nonzero(checkpoint.tensors["model.head.conv_out.weight"]) > 0  # the head was trained
    assert checkpoint.config.model.conv_stem_channels == 4
    assert checkpoint.tensors["model.patch_embed.weight"].shape[1] == (1 + 4) * 4 * 4
    restored_path = tmp_path / "restored.png"
    restored = run_cli("restore", digit_png, restored_path, "--checkpoint", result.final_checkpoint, "--device", "cpu")
    assert restored.returncode == 0, restored.output
    assert read_image(restored_path).shape == (1, 28, 28)

    # The v head restores in the same single call and gives another image than the u head.
    v_path = tmp_path / "restored-v.png"
    restored_v = run_cli(
        "restore", digit_png, v_path, "--checkpoint", result.final_checkpoint, "--device", "cpu", "--velocity", "instantaneous"
    )
    assert restored_v.returncode == 0, restored_v.output
    assert ", v head)" in restored_v.stdout
    assert ", u head)" in restored.stdout
    corrupted = read_image(digit_png)[None]
    by_u = Restorer.load(result.final_checkpoint, "cpu", "average").restore_batch(corrupted)
    by_v = Restorer.load(result.final_checkpoint, "cpu", "instantaneous").restore_batch(corrupted)
    assert not np.array_equal(by_u, by_v)
    np.testing.assert_allclose(read_image(v_path), by_v[0], rtol=0, atol=1 / 255)  # the PNG stores 8 bits


def test_saturation_masks_and_gate_train_and_restore(tmp_path, digit_png):
    config = tiny_imf_config(
        tmp_path, {"conv_head_channels": 8, "conv_stem_channels": 4, "saturation_masks": True, "output_gate": True}
    )

    result = train(config)

    checkpoint = load_checkpoint(result.final_checkpoint)
    assert checkpoint.config.model.saturation_masks
    assert checkpoint.config.model.output_gate
    assert checkpoint.tensors["model.stem.conv_in.weight"].shape[1] == 3  # pixels, black mask, white mask
    assert checkpoint.tensors["model.final.linear.weight"].shape[0] == 4 * 4 * 2 * 2  # p*p*(u, v and their gates)
    corrupted = read_image(digit_png)[None]  # (1, 1, 28, 28)
    restored = Restorer.load(result.final_checkpoint, "cpu").restore_batch(corrupted)
    assert restored.shape == (1, 1, 28, 28)
    assert np.isfinite(restored).all()


def test_train_cli_objective_option(tmp_path):
    config_file = tmp_path / "small.toml"
    config_file.write_text("[train]\nval_images = 8\nwarmup_steps = 1\n", encoding="utf-8")
    run_dir = tmp_path / "run"

    result = run_cli(
        "train", "--config", config_file, "--objective", "imf", "--model", "DiT-T/4", "--steps", "2",
        "--batch-size", "4", "--noise", "gaussian", "--device", "cpu", "--run-dir", run_dir,
    )

    assert result.returncode == 0, result.output
    assert json.loads((run_dir / "config.json").read_text())["objective"]["kind"] == "imf"
    assert load_checkpoint(run_dir / "checkpoints" / "final.safetensors").config.objective.kind == "imf"
