"""Shared fixtures: a tiny checkpoint trained by the real `restorecli train`, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from restorecli.data import mnist
from restorecli.data.images import write_png

# A tiny model and run: seconds on 2 CPU cores.
TINY_TRAIN_ARGS = [
    "--model", "DiT-T/4", "--steps", "6", "--batch-size", "8", "--noise", "mixed", "--device", "cpu",
]
TINY_CONFIG = """
[train]
val_every = 3
val_images = 16
checkpoint_every = 3
log_every = 2
warmup_steps = 2
"""


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run `python -m restorecli ARGS` in a subprocess, as a user's shell would."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", OMP_NUM_THREADS="2")
    completed = subprocess.run(
        [sys.executable, "-m", "restorecli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY_CONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config) -> Path:
    """A run folder written by a real 6-step `restorecli train` of DiT-T/4."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli("train", "--config", tiny_config, "--run-dir", run_dir, *TINY_TRAIN_ARGS)
    assert result.returncode == 0, result.output
    return run_dir


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "final.safetensors"


@pytest.fixture()
def digit_png(tmp_path) -> Path:
    """The first protocol test digit as a real 28x28 grey PNG."""
    path = tmp_path / "digit.png"
    write_png(path, mnist.load_test_split().images[0])
    return path


def file_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def rgba_png(path: Path, height: int, width: int) -> Path:
    """Write a random RGBA PNG of the given size."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(path)
    return path


@pytest.fixture(scope="session")
def generator_run(tmp_path_factory):
    """A run folder of a real 4-step `restorecli train --task generate` of DiT-T/4."""
    folder = tmp_path_factory.mktemp("generator")
    config_file = folder / "tiny.toml"
    config_file.write_text(TINY_CONFIG, encoding="utf-8")
    run_dir = folder / "run"
    result = run_cli(
        "train", "--config", config_file, "--task", "generate", "--model", "DiT-T/4", "--steps", "4",
        "--batch-size", "8", "--device", "cpu", "--run-dir", run_dir,
    )
    assert result.returncode == 0, result.output
    return run_dir
