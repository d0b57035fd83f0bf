"""Validation PSNR of one checkpoint for each kind, source noise (trained value and 0) and NFE 1, 2, 4.

The last column queries the network at r = t = 1 instead of (r, t) = (0, 1): one Euler step of
the instantaneous velocity, x = s - u(s, 1, 1), which estimates the posterior mean E[x | s].

Usage: python -m bench.sampler_probe runs/NAME/checkpoints/last.safetensors

It uses the 450 validation rows (i % 10 == 1) at the protocol's evaluation levels, never the
test rows, so it can guide choices without touching the test numbers.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.corruptions import KINDS, protocol_corrupt
from restorecli.data import mnist
from restorecli.meanflow import restore
from restorecli.metrics import psnr
from restorecli.normalize import to_image, to_network


def main(path: str) -> None:
    checkpoint = load_checkpoint(path)
    model = load_model(checkpoint, path)
    objective = checkpoint.config.objective
    validation = mnist.load_validation_split()
    print(f"{path}: step {checkpoint.meta['step']}")

    for kind in KINDS:
        corrupted = np.stack([protocol_corrupt(image, kind, int(row))[0] for image, row in zip(validation.images, validation.rows)])
        y = to_network(torch.from_numpy(corrupted))
        cells = []
        for sigma in sorted({objective.source_sigma, 0.0}, reverse=True):
            for steps in (1, 2, 4):
                sampler = objective.model_copy(update={"source_sigma": sigma})
                restored = to_image(restore(model, y, sampler, steps, torch.Generator().manual_seed(0))).numpy()
                cells.append(f"sigma {sigma} NFE {steps}: {psnr(validation.images, restored).mean():.2f}")
        if objective.source == "bridge":
            with torch.no_grad():
                ones = torch.ones(len(y))
                euler = to_image(y - model(y, ones, ones)).numpy()  # source s = y, with no noise
            cells.append(f"r = t = 1, sigma 0: {psnr(validation.images, euler).mean():.2f}")
        print(f"{kind:12s} " + " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1])
