"""From a class-conditional generator to a restorer: the config it implies and its starting weights.

The restorer keeps the generator's network and adds input channels for the corrupted image y.
Their weights start at zero, and the label input stays at the null class (no label is given),
so before the first update the restorer computes exactly what the generator computes on the null
class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from restorecli.config import Config, config_changes
from restorecli.errors import UsageError


def restorer_settings(generator: Config, source: str | None) -> dict[str, Any]:
    """Return the config defaults of a restorer finetuned from `generator`; file and options go on top.

    The network and its objective kind come from the generator. The noise source is the default
    because the generator learnt it. With the bridge source, y is fed as input channels too.
    """
    objective: dict[str, Any] = {"kind": generator.objective.kind, "source": source or "noise"}
    if objective["source"] == "bridge":
        objective["condition_on_y"] = True
    return {
        "task": "restore",
        "model": generator.model.model_dump(),
        "objective": objective,
        "data": {"channels": generator.data.channels, "image_size": generator.data.image_size},
        "train": {"run_dir": "runs/finetune"},
    }


def check_fits(generator: Config, restorer: Config, path: Path) -> None:
    """Reject a finetune config that changes the generator's network, objective kind or image shape."""
    changes = config_changes(generator, restorer, ("model", "objective.kind", "data.channels", "data.image_size"))
    if changes:
        raise UsageError(
            f"generator {path} does not fit this finetune config: " + "; ".join(changes)
            + ". Remove those settings, or train a generator with them first"
        )


def restorer_weights(generator_weights: dict[str, torch.Tensor], restorer: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Return the generator's weights laid out for `restorer`, with zero weights for the new y channels."""
    expected = restorer.state_dict()
    if set(generator_weights) != set(expected):
        differing = sorted(set(expected) ^ set(generator_weights))[:3]
        raise UsageError(
            f"generator {path} does not fit the restorer network (differing tensors {differing}); "
            "pass a generator written by `restorecli train --task generate`"
        )

    weights = dict(generator_weights)
    name = restorer.input_weight
    if restorer.cond_channels:
        weights[name] = restorer.widen_input_weight(weights[name])
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise UsageError(
                f"generator {path} does not fit the restorer network ({key} has shape {tuple(value.shape)}, "
                f"the restorer needs {tuple(expected[key].shape)}); pass a generator of the same preset"
            )
    return weights
