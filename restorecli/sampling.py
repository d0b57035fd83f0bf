"""Sample digits from a class-conditional generator and tile them into a PNG grid, one row per class."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from restorecli.checkpoint import Checkpoint, load_checkpoint, load_model, require_task
from restorecli.config import Config
from restorecli.data.images import write_png
from restorecli.device import autocast, choose_device
from restorecli.errors import UsageError
from restorecli.meanflow import generate
from restorecli.normalize import to_image
from restorecli.plots import tile
from restorecli.restoration import check_output_path

GENERATOR_FIX = "pass a checkpoint written by `restorecli train --task generate`"


@torch.no_grad()
def sample_by_class(
    model: nn.Module,
    config: Config,
    per_class: int,
    guidance: float,
    steps: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `per_class` images of every class, class by class.

    Returns images (K * per_class, C, H, W) in [0, 1] and their labels (K * per_class,), with K
    the config's `model.num_classes`. The same seed gives the same images.
    """
    classes = config.model.num_classes
    if classes < 1:
        raise UsageError(f"the model has no class labels (num_classes = {classes}); {GENERATOR_FIX}")
    device = torch.device(device)
    labels = torch.arange(classes, device=device).repeat_interleave(per_class)  # (K * per_class,)
    image_shape = (config.data.channels, config.data.image_size, config.data.image_size)
    generator = torch.Generator(device=device).manual_seed(seed)
    with autocast(device):
        x = generate(model, labels, guidance, image_shape, config.objective, classes, steps, generator)
    return to_image(x.float()).cpu().numpy(), labels.cpu().numpy()


def class_grid(images: np.ndarray, per_class: int, columns: int | None = None) -> np.ndarray:
    """Tile class-major images (K * per_class, 1, H, W) into one grey picture (1, H', W'), one row per class.

    `columns` keeps only the first images of each class; by default every image is shown.
    """
    count = per_class if columns is None else min(columns, per_class)
    rows = [images[start : start + count] for start in range(0, len(images), per_class)]
    return tile(rows)


@dataclass
class DigitGenerator:
    """A class-conditional generator rebuilt from its checkpoint alone, ready to sample on one device."""

    checkpoint_path: Path
    checkpoint: Checkpoint
    model: nn.Module
    device: torch.device

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> "DigitGenerator":
        """Load a generator checkpoint; a restorer checkpoint raises a one-line usage error."""
        path = Path(path)
        checkpoint = load_checkpoint(path)
        require_task(checkpoint, path, "generate", GENERATOR_FIX)
        target = choose_device(device)
        model = load_model(checkpoint, path).to(target)
        return cls(checkpoint_path=path, checkpoint=checkpoint, model=model, device=target)

    @property
    def config(self) -> Config:
        return self.checkpoint.config

    def check_options(self, guidance: float, per_class: int, steps: int) -> list[str]:
        """Reject invalid sampling options; return notices about valid but unusual ones."""
        if not math.isfinite(guidance) or guidance < 0:
            raise UsageError(f"--guidance {guidance} is invalid; use a scale of 0 or more, e.g. 2.0")
        if per_class < 1:
            raise UsageError(f"--per-class {per_class} is invalid; use 1 or more images per class")
        if steps < 1:
            raise UsageError(f"--steps {steps} is invalid; use 1 or more network evaluations")
        low, high = self.config.generate.guidance_range
        if not low <= guidance <= high:
            return [f"guidance {guidance:g} is outside the range [{low:g}, {high:g}] this generator was trained on"]
        return []

    def write_grid(
        self, target: Path, guidance: float | None = None, per_class: int = 8, steps: int = 1, seed: int = 0,
        overwrite: bool = False,
    ) -> list[str]:
        """Write a PNG grid with one row of `per_class` samples per class; return notices.

        `guidance` defaults to the checkpoint's `generate.sample_guidance`.
        """
        target = Path(target)
        scale = self.config.generate.sample_guidance if guidance is None else guidance
        notices = self.check_options(scale, per_class, steps)
        check_output_path(self.checkpoint_path, target, overwrite)
        images, _ = sample_by_class(self.model, self.config, per_class, scale, steps, seed, self.device)
        write_png(target, class_grid(images, per_class))
        return notices
