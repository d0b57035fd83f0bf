"""Checkpoints: safetensors tensors plus the resolved config and metadata as JSON, written atomically.

Tensor names: `model.*` contains the inference weights (the EMA weights during training); a training
checkpoint adds `train.model.*` (raw weights) and `train.optim.*` (AdamW moments) for `--resume`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from restorecli.atomic import write_atomically
from restorecli.config import Config, config_from_json
from restorecli.errors import RestoreCliError, UsageError
from restorecli.meanflow import cond_channels, output_channels
from restorecli.models import build_model

FORMAT_NAME = "restorecli"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    config: Config
    meta: dict[str, Any] = field(default_factory=dict)

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Return the tensors under `prefix.` with the prefix removed."""
        start = len(prefix) + 1
        return {name[start:]: value for name, value in self.tensors.items() if name.startswith(prefix + ".")}


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write to a temporary file in the same folder, then rename, so no half-written file remains."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": checkpoint.config.model_dump_json(),
        "meta": json.dumps(checkpoint.meta),
    }
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in checkpoint.tensors.items()}
    write_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a restorecli checkpoint; raise a one-line error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise RestoreCliError(f"checkpoint {path} not found; pass a .safetensors file written by restorecli")
    fix = "pass a checkpoint written by `restorecli train` (a .safetensors file)"
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, UnicodeDecodeError, OSError) as error:
        raise RestoreCliError(f"checkpoint {path} is not a safetensors file ({error}); {fix}") from error
    if metadata.get("format") != FORMAT_NAME:
        raise RestoreCliError(f"checkpoint {path} is a safetensors file but not a restorecli checkpoint; {fix}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise RestoreCliError(
            f"checkpoint {path} has format version {metadata.get('format_version')!r}, "
            f"this restorecli reads version {FORMAT_VERSION}; retrain or upgrade restorecli"
        )
    try:
        config = config_from_json(metadata["config"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, ValueError) as error:
        raise RestoreCliError(f"checkpoint {path} has an unreadable config ({error}); {fix}") from error
    return Checkpoint(tensors=tensors, config=config, meta=meta)


def model_for(config: Config) -> nn.Module:
    """Build the network a config describes, with freshly initialised weights.

    A generator (`task` 'generate') takes no image condition, so it has no condition channels.
    """
    image_condition = 0 if config.task == "generate" else cond_channels(config.data.channels, config.objective)
    return build_model(
        config.model.preset,
        channels=config.data.channels,
        cond_channels=image_condition,
        qk_norm=config.model.qk_norm,
        time_scale=config.model.time_scale,
        out_channels=output_channels(config.data.channels, config.objective),
        num_classes=config.model.num_classes,
        conv_head_channels=config.model.conv_head_channels,
        conv_stem_channels=config.model.conv_stem_channels,
        saturation_masks=config.model.saturation_masks,
        output_gate=config.model.output_gate,
    )


def require_task(checkpoint: Checkpoint, path: Path, task: str, fix: str) -> None:
    """Raise a one-line usage error when the checkpoint was trained for another task."""
    if checkpoint.config.task != task:
        raise UsageError(f"checkpoint {path} is a {checkpoint.config.task} model, not a {task} model; {fix}")


def load_model(checkpoint: Checkpoint, path: Path) -> nn.Module:
    """Rebuild the model from the checkpoint's own config and load its inference weights."""
    model = model_for(checkpoint.config)
    weights = checkpoint.section("model")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise RestoreCliError(f"checkpoint {path} does not match its own config ({first}); retrain it") from error
    model.eval()
    return model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
