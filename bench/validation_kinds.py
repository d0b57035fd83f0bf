"""Validation PSNR of checkpoints on each corruption kind at 1 NFE, one line per checkpoint.

Usage: python -m bench.validation_kinds [--velocity instantaneous] runs/pilot/A/checkpoints/final.safetensors [more ...]

It restores the 450 validation rows (i % 10 == 1) at the protocol's evaluation levels, starting
from the source mean, so pilots can be compared kind by kind without touching the test rows.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.corruptions import KINDS, protocol_corrupt
from restorecli.data import mnist
from restorecli.meanflow import VELOCITIES, restore
from restorecli.metrics import psnr
from restorecli.normalize import to_image, to_network


def corrupted_validation(images: np.ndarray, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Corrupt the validation images with every kind at its protocol level, in network units."""
    corrupted = {}
    for kind in KINDS:
        stacked = np.stack([protocol_corrupt(image, kind, int(row))[0] for image, row in zip(images, rows)])
        corrupted[kind] = to_network(torch.from_numpy(stacked))  # (N, 1, 28, 28)
    return corrupted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument(
        "--velocity", choices=VELOCITIES, default=None,
        help="head the sampler of every imf checkpoint steps with (default: each checkpoint's restore_velocity)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    validation = mnist.load_validation_split()
    corrupted = corrupted_validation(validation.images, validation.rows)

    for path in args.paths:
        checkpoint = load_checkpoint(path)
        model = load_model(checkpoint, path)
        objective = checkpoint.config.objective
        velocity = args.velocity if objective.kind == "imf" else None
        cells = []
        for kind, y in corrupted.items():
            generator = torch.Generator().manual_seed(0)
            restored = to_image(restore(model, y, objective, 1, generator, 0.0, velocity)).numpy()
            cells.append(f"{kind} {psnr(validation.images, restored).mean():.2f}")
        head = f", {velocity or objective.restore_velocity} velocity" if objective.kind == "imf" else ""
        print(f"{path} (step {checkpoint.meta['step']}{head}): " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
