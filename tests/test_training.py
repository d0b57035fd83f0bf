"""Training through the Python API: run folder contents, exact resume, divergence, image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from restorecli.checkpoint import load_checkpoint
from restorecli.config import build_config
from restorecli.data.images import write_png
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
