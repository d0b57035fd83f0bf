"""Validation PSNR of one checkpoint for each kind, restore temperature (1 and 0) and NFE 1, 2, 4.

The temperature scales the source noise: 1 draws it as in training, 0 starts at the mean of the
source distribution. The last column queries the network at r = t = 1 instead of (r, t) = (0, 1)
from the source mean: one Euler step of the instantaneous velocity, x = s - u(s, 1, 1), which
estimates the posterior mean E[x | s]. For an `imf` checkpoint a further column takes that step
with the v head, x = s - v(s, 1).

Usage: python -m bench.sampler_probe runs/NAME/checkpoints/last.safetensors

It uses the 450 validation rows (i % 10 == 1) at the protocol's evaluation levels, never the
test rows, so it can guide choices without touching the test numbers.
"""

from __future__ import annotations

import sys

import torch

from bench.validation_kinds import corrupted_validation
from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.data import mnist
from restorecli.meanflow import condition, draw_source, restore, split_heads
from restorecli.metrics import psnr
from restorecli.normalize import to_image


def main(path: str) -> None:
    checkpoint = load_checkpoint(path)
    model = load_model(checkpoint, path)
    objective = checkpoint.config.objective
    validation = mnist.load_validation_split()
    print(f"{path}: step {checkpoint.meta['step']}")

    for kind, y in corrupted_validation(validation.images, validation.rows).items():
        cells = []
        for temperature in (1.0, 0.0):
            for steps in (1, 2, 4):
                generator = torch.Generator().manual_seed(0)
                restored = to_image(restore(model, y, objective, steps, generator, temperature)).numpy()
                cells.append(f"T {temperature:g} NFE {steps}: {psnr(validation.images, restored).mean():.2f}")
        with torch.no_grad():
            ones = torch.ones(len(y))
            source = draw_source(y, objective, None, temperature=0.0)
            output = model(source, ones, ones, condition(y, objective))  # (N, C or 2C, H, W)
        heads = split_heads(output, source.shape[1]) if objective.kind == "imf" else (output,)
        euler = to_image(source - heads[0]).numpy()
        cells.append(f"r = t = 1, T 0: {psnr(validation.images, euler).mean():.2f}")
        if len(heads) == 2:
            euler_v = to_image(source - heads[1]).numpy()
            cells.append(f"v head, t = 1, T 0: {psnr(validation.images, euler_v).mean():.2f}")
        print(f"{kind:12s} " + " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1])
