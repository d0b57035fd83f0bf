"""Split of the squared error of salt-and-pepper restorations by pixel group, one line per checkpoint.

Usage: python -m bench.impulse_errors runs/pilot/A/checkpoints/final.safetensors [more ...]

It restores the validation rows (i % 10 == 1) with salt-pepper noise at the protocol level, at
1 NFE, and splits the mean squared error over all pixels into three parts that sum to it: pixels
the noise replaced, untouched pixels that are black or white, and untouched pixels strictly
between, which the input already gives exactly.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.corruptions import protocol_corrupt
from restorecli.data import mnist
from restorecli.meanflow import restore
from restorecli.normalize import to_image, to_network


def error_parts(clean: np.ndarray, corrupted: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    """Split the mean squared error over all pixels into the replaced, untouched black or white, and untouched between pixels."""
    squared = (restored - clean) ** 2
    replaced = corrupted != clean
    saturated = (corrupted == 0.0) | (corrupted == 1.0)
    parts = {
        "replaced": replaced,
        "untouched black/white": saturated & ~replaced,
        "untouched between": ~saturated,  # an impulse is always black or white
    }
    return {name: float(squared[mask].sum() / squared.size) for name, mask in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    validation = mnist.load_validation_split()
    clean = validation.images  # (N, 1, 28, 28)
    corrupted = np.stack([protocol_corrupt(image, "salt-pepper", int(row))[0] for image, row in zip(clean, validation.rows)])

    for path in args.paths:
        checkpoint = load_checkpoint(path)
        model = load_model(checkpoint, path)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            y = to_network(torch.from_numpy(corrupted))  # (N, 1, 28, 28)
            restored = to_image(restore(model, y, checkpoint.config.objective, 1, generator, 0.0)).numpy()
        parts = error_parts(clean, corrupted, restored)
        cells = " | ".join(f"{name} {value:.5f}" for name, value in parts.items())
        print(f"{path} (step {checkpoint.meta['step']}): MSE {sum(parts.values()):.5f} = {cells}", flush=True)


if __name__ == "__main__":
    main()
