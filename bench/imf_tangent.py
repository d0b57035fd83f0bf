"""How far an iMF v head at (r, t) is from the same head at r = t, the tangent the iMF authors use.

Usage: python -m bench.imf_tangent [CHECKPOINT] [--draws 4]

restorecli's iMF loss takes the JVP tangent from the v head's prediction at the row's own (r, t),
which saves a second forward pass at r = t. The two agree only as far as the v head has learnt to
ignore r. This script draws training-like path points from the 500 validation images (the
checkpoint's own corruption ranges and (t, r) sampling, rows with r != t only) and prints

    relative gap  = mean (v(z, r, t) - v(z, t, t))^2 / mean (v(z, t, t) - v)^2

that is, the mean squared difference between the two tangents as a share of the v head's own
squared error against the per-sample velocity v = s - x. Default checkpoint: the shipped restorer.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from restorecli.checkpoint import load_checkpoint, load_model
from restorecli.corruptions import corrupt_batch
from restorecli.data import mnist
from restorecli.meanflow import _path_batch, split_heads
from restorecli.normalize import to_network
from restorecli.restoration import shipped_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=None)
    parser.add_argument("--draws", type=int, default=4, help="passes over the validation images")
    args = parser.parse_args()

    path = args.checkpoint or shipped_weights()
    checkpoint = load_checkpoint(path)
    config = checkpoint.config
    if config.objective.kind != "imf":
        raise SystemExit(f"{path} was trained with objective {config.objective.kind}, not imf; pass an imf checkpoint")
    model = load_model(checkpoint, path)
    validation = mnist.load_validation_split()
    spec = config.corruption.to_spec()
    channels = config.data.channels

    gaps, errors = [], []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        corrupted, _ = corrupt_batch(validation.images, spec, rng)
        x = to_network(torch.from_numpy(validation.images))
        y = to_network(torch.from_numpy(corrupted))
        batch = _path_batch(x, y, config.objective, torch.Generator().manual_seed(draw))
        moving = batch.t != batch.r

        with torch.no_grad():
            at_r = split_heads(model(batch.z, batch.r, batch.t, batch.cond), channels)[1]
            at_t = split_heads(model(batch.z, batch.t, batch.t, batch.cond), channels)[1]
        gaps.append(((at_r - at_t) ** 2)[moving].mean().item())
        errors.append(((at_t - batch.v) ** 2)[moving].mean().item())

    gap, error = float(np.mean(gaps)), float(np.mean(errors))
    print(f"{path}: step {checkpoint.meta['step']}, {args.draws} x {len(validation.images)} path points, r != t rows only")
    print(f"mean (v(z, r, t) - v(z, t, t))^2 = {gap:.3g}")
    print(f"mean (v(z, t, t) - v)^2          = {error:.3g}")
    print(f"relative gap                      = {gap / error:.3g}")


if __name__ == "__main__":
    main()
