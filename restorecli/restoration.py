"""Load a restorer checkpoint and restore tensors, arrays and image files with it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from restorecli.checkpoint import Checkpoint, load_checkpoint, load_model
from restorecli.data.images import read_image, to_channels, write_png
from restorecli.device import autocast, choose_device
from restorecli.errors import RestoreCliError, UsageError
from restorecli.meanflow import check_velocity, restore
from restorecli.normalize import to_image, to_network

SHIPPED_WEIGHTS = "restorer-mixed.safetensors"


def shipped_weights() -> Path:
    """Return the path of the restorer that ships inside the package."""
    path = Path(str(resources.files("restorecli").joinpath("weights", SHIPPED_WEIGHTS)))
    if not path.is_file():
        raise RestoreCliError(
            f"the shipped weights {path} are missing; reinstall restorecli or pass --checkpoint"
        )
    return path


@dataclass
class Restorer:
    """A model rebuilt from its checkpoint alone, ready to restore on one device."""

    checkpoint_path: Path
    checkpoint: Checkpoint
    model: torch.nn.Module
    device: torch.device
    velocity: str = "average"
    notices: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None, device: str = "auto", velocity: str | None = None) -> "Restorer":
        """Load a checkpoint; `velocity` overrides the sampler head its config chose (restore_velocity)."""
        path = Path(path) if path is not None else shipped_weights()
        checkpoint = load_checkpoint(path)
        objective = checkpoint.config.objective
        if velocity is None:
            velocity = objective.restore_velocity
        try:
            check_velocity(velocity, objective.kind)
        except ValueError as error:
            raise UsageError(f"--{error} (checkpoint {path})") from None
        target = choose_device(device)
        model = load_model(checkpoint, path).to(target)
        return cls(checkpoint_path=path, checkpoint=checkpoint, model=model, device=target, velocity=velocity)

    @property
    def channels(self) -> int:
        return self.checkpoint.config.data.channels

    @property
    def objective(self):
        return self.checkpoint.config.objective

    @property
    def head(self) -> str | None:
        """Name the head an imf model restores with ('u head' or 'v head'); None for one-head models."""
        if self.objective.kind != "imf":
            return None
        return "v head" if self.velocity == "instantaneous" else "u head"

    @property
    def label(self) -> str:
        """Name the model in reports by objective and preset, plus its head for an imf model."""
        name = f"{self.objective.kind} {self.checkpoint.config.model.preset}"
        return name if self.head is None else f"{name} {self.head}"

    def check_steps(self, steps: int) -> None:
        if steps < 1:
            raise UsageError(f"--steps {steps} is invalid; use 1 or more network evaluations")
        if self.objective.kind == "regression" and steps != 1:
            raise UsageError(
                f"--steps {steps}: {self.checkpoint_path} is a regression model, which restores in exactly "
                "one step; use --steps 1"
            )

    @torch.no_grad()
    def restore_batch(self, images: np.ndarray, steps: int = 1, seed: int = 0, batch_size: int = 256) -> np.ndarray:
        """Restore (N, C, H, W) float images in [0, 1]; return the same shape in [0, 1]."""
        self.check_steps(steps)
        if images.shape[1] != self.channels:
            raise UsageError(
                f"images have {images.shape[1]} channels but {self.checkpoint_path} restores "
                f"{self.channels}-channel images; convert them or pass a matching --checkpoint"
            )
        generator = torch.Generator(device=self.device).manual_seed(seed)
        outputs = []
        for start in range(0, len(images), batch_size):
            y = to_network(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(self.device))
            with autocast(self.device):
                x_hat = restore(self.model, y, self.objective, steps=steps, generator=generator, velocity=self.velocity)
            outputs.append(to_image(x_hat.float()).cpu().numpy())
        return np.concatenate(outputs)

    def _read_for_model(self, source: Path, notices: list[str]) -> np.ndarray:
        """Read an image file as (C, H, W) with the model's channel count, noting any conversion."""
        image = read_image(source)
        if image.shape[0] != self.channels:
            notices.append(
                f"converted {source.name} from {image.shape[0]} to {self.channels} channel(s) for this model"
            )
            image = to_channels(image, self.channels)
        trained_side = self.checkpoint.config.data.image_size
        if max(image.shape[1:]) > 2 * trained_side:
            notices.append(
                f"{source.name} is {image.shape[1]}x{image.shape[2]} pixels, but this model was trained on "
                f"{trained_side}x{trained_side} images; shapes at another scale may be restored poorly, so "
                f"resize it to about {trained_side} pixels per side for the best result"
            )
        return image

    def restore_file(self, source: Path, target: Path, steps: int = 1, seed: int = 0, overwrite: bool = False) -> list[str]:
        """Restore one image file into a PNG; return notices about conversions made on the way."""
        source, target = Path(source), Path(target)
        check_output_path(source, target, overwrite)
        return self.restore_files([(source, target)], steps=steps, seed=seed)

    def restore_files(self, pairs: list[tuple[Path, Path]], steps: int = 1, seed: int = 0) -> list[str]:
        """Restore (input, output) file pairs; every input is read before the first output is written."""
        self.check_steps(steps)
        notices: list[str] = []
        images = [self._read_for_model(source, notices) for source, _ in pairs]  # (C, H, W) each

        # NOTE: attention memory grows with the square of the token count, and nothing tiles large
        # images yet. Images much larger than a few hundred pixels per side need a lot of memory.
        for (_, target), image in zip(pairs, images):
            restored = self.restore_batch(image[None], steps=steps, seed=seed)[0]
            write_png(target, restored)
        return notices


def check_output_path(source: Path, target: Path, overwrite: bool) -> None:
    """Reject writing over the input, a non-PNG name, or an existing file without --overwrite."""
    if target.suffix.lower() != ".png":
        raise UsageError(f"output {target} must end in .png; restorecli writes PNG files")
    if source.exists() and target.exists() and os.path.samefile(source, target):
        raise UsageError(f"output {target} is the input file; choose another output path")
    if source.resolve() == target.resolve():
        raise UsageError(f"output {target} is the input file; choose another output path")
    if target.exists() and not overwrite:
        raise UsageError(f"output {target} already exists; pass --overwrite to replace it")
    if target.exists() and target.is_dir():
        raise UsageError(f"output {target} is a folder; pass a file name ending in .png")
