"""Corrupt image files, folders, and the protocol's test split into PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorecli.config import build_config
from restorecli.corruptions import KINDS, CorruptionSpec, corrupt, protocol_corrupt, protocol_spec, with_levels
from restorecli.data import mnist
from restorecli.data.images import folder_pairs, read_image, write_png
from restorecli.errors import UsageError
from restorecli.restoration import check_output_path

# option name -> (spec field, kinds it applies to, lowest, highest)
LEVEL_OPTIONS = {
    "--sigma": ("gaussian_sigma", ("gaussian", "mixed"), 0.0, 1.0),
    "--amount": ("salt_pepper_amount", ("salt-pepper", "mixed"), 0.0, 1.0),
    "--side": ("block_side", ("block", "mixed"), 1, 4096),
    "--blur-sigma": ("blur_sigma", ("blur", "mixed"), 0.05, 10.0),
}


def spec_from_options(
    kind: str, sigma: float | None, amount: float | None, side: int | None, blur_sigma: float | None, config: Path | None
) -> CorruptionSpec:
    """Build the spec of `corrupt`: protocol levels, or the config's ranges, with options on top."""
    if kind not in KINDS:
        raise UsageError(f"unknown --noise {kind!r}; choose one of {', '.join(KINDS)}")

    if config is not None:
        spec = build_config(config).corruption.to_spec(kind)
    else:
        spec = protocol_spec(kind)

    values = {"--sigma": sigma, "--amount": amount, "--side": side, "--blur-sigma": blur_sigma}
    for option, value in values.items():
        if value is None:
            continue
        field, kinds, low, high = LEVEL_OPTIONS[option]
        if kind not in kinds:
            raise UsageError(f"{option} sets a level of {' or '.join(kinds)}, not of --noise {kind}; remove it")
        if not low <= value <= high:
            raise UsageError(f"{option} {value} is out of range; use a value from {low} to {high}")
        spec = with_levels(spec, **{field: (value, value)})
    return spec


def corrupt_path(source: Path, target: Path, spec: CorruptionSpec, seed: int, overwrite: bool) -> int:
    """Corrupt one file, or every image of a folder (image k draws from seed [seed, k])."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        pairs = folder_pairs(source, target, overwrite)
    else:
        check_output_path(source, target, overwrite)
        pairs = [(source, target)]

    images = [read_image(path) for path, _ in pairs]  # read everything before writing anything
    for index, ((_, out), image) in enumerate(zip(pairs, images)):
        rng = np.random.default_rng(seed if len(pairs) == 1 else [seed, index])
        y, _ = corrupt(image, spec, rng)
        write_png(out, y)
    return len(pairs)


def write_test_split(folder: Path, kind: str, overwrite: bool) -> int:
    """Write the 500 protocol test images at evaluation level as `<row>_<label>_corrupted.png`
    with their clean twins `<row>_<label>_clean.png`.

    PNG stores 8 bits per pixel, so these files round the float32 protocol images; evaluate
    computes its numbers from the exact arrays.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown --noise {kind!r}; choose one of {', '.join(KINDS)}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--test-split {folder} is a file; pass a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise UsageError(f"--test-split folder {folder} is not empty; pass --overwrite or choose an empty folder")

    split = mnist.load_test_split()
    for image, label, row in zip(split.images, split.labels, split.rows):
        y, _ = protocol_corrupt(image, kind, int(row))
        stem = f"{int(row):04d}_{int(label)}"
        write_png(folder / f"{stem}_clean.png", image)
        write_png(folder / f"{stem}_corrupted.png", y)
    return len(split.rows)
