"""The five corruption kinds: seeded per-image draws and stateless kernels.

One code path serves `corrupt`, training and evaluation. Every random number comes from a
`numpy.random.Generator` passed in by the caller and is drawn in a fixed order, in float64, so the
evaluation protocol's test images do not depend on batch size, order or device. Images are numpy
arrays of shape (C, H, W) in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

KINDS = ("gaussian", "salt-pepper", "block", "blur", "mixed")
SINGLE_KINDS = ("gaussian", "salt-pepper", "block", "blur")

# A mixture applies its selected kinds in this order.
MIXED_ORDER = ("block", "blur", "gaussian", "salt-pepper")

PROTOCOL_SEED = 1234


@dataclass(frozen=True)
class CorruptionSpec:
    """A corruption kind with its levels; a level (lo, hi) with lo < hi is drawn uniformly."""

    kind: str
    gaussian_sigma: tuple[float, float] = (0.3, 0.3)
    salt_pepper_amount: tuple[float, float] = (0.2, 0.2)
    block_side: tuple[int, int] = (12, 12)
    blur_sigma: tuple[float, float] = (1.5, 1.5)
    blur_noise: float = 0.01
    mixed_probability: float = 0.5
    single_kind_share: float = 0.0  # mixed only: share of images given exactly one random kind

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown corruption kind {self.kind!r}; choose one of {', '.join(KINDS)}")


@dataclass
class CorruptionRecord:
    """Record of one draw (applied kinds, block mask, blur width), used by oracle baselines."""

    kinds: list[str] = field(default_factory=list)
    block_mask: np.ndarray | None = None  # (H, W) bool, True inside the filled square
    blur_sigma: float | None = None


def protocol_spec(kind: str) -> CorruptionSpec:
    """Return the evaluation-level spec of the MNIST-5k protocol v1 for `kind`."""
    if kind == "mixed":
        return CorruptionSpec(
            kind="mixed",
            gaussian_sigma=(0.05, 0.3),
            salt_pepper_amount=(0.02, 0.2),
            block_side=(6, 14),
            blur_sigma=(0.5, 1.5),
        )
    return CorruptionSpec(kind=kind)


# ----------------------------------------------------------------------------------------------
# Stateless kernels: every random array comes in as an argument.
# ----------------------------------------------------------------------------------------------


def add_gaussian_noise(x: np.ndarray, sigma: float, noise: np.ndarray) -> np.ndarray:
    return np.clip(x + sigma * noise, 0.0, 1.0)


def apply_salt_pepper(x: np.ndarray, mask: np.ndarray, coins: np.ndarray) -> np.ndarray:
    """Set the pixels under `mask` (H, W) to 0 where their coin is below 0.5, else to 1."""
    y = x.copy()
    values = np.where(coins < 0.5, 0.0, 1.0)  # one coin per masked pixel, row-major
    for channel in y:
        channel[mask] = values
    return y


def fill_block(x: np.ndarray, row: int, col: int, side: int) -> np.ndarray:
    y = x.copy()
    y[:, row : row + side, col : col + side] = 1.0
    return y


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Return the normalised 2-D Gaussian kernel: 9x9 up to sigma 1.5, radius ceil(3 sigma) beyond."""
    radius = 4 if sigma <= 1.5 else math.ceil(3.0 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    u, v = np.meshgrid(offsets, offsets, indexing="ij")
    kernel = np.exp(-(u**2 + v**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each channel with symmetric padding (scipy's 'reflect': d c b a | a b c d)."""
    kernel = gaussian_kernel(sigma)
    return np.stack([ndimage.correlate(channel, kernel, mode="reflect") for channel in x])


def blur_with_noise(x: np.ndarray, sigma: float, noise: np.ndarray, noise_level: float) -> np.ndarray:
    return np.clip(blur(x, sigma) + noise_level * noise, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Draws: the order of the calls on `rng` is part of the protocol.
# ----------------------------------------------------------------------------------------------


def _draw_float(rng: np.random.Generator, bounds: tuple[float, float], always: bool) -> float:
    low, high = bounds
    if low == high and not always:
        return float(low)
    return float(rng.uniform(low, high))


def _draw_int(rng: np.random.Generator, bounds: tuple[int, int], always: bool) -> int:
    low, high = bounds
    if low == high and not always:
        return int(low)
    return int(rng.integers(low, high + 1))


def _apply_kind(
    x: np.ndarray,
    kind: str,
    spec: CorruptionSpec,
    rng: np.random.Generator,
    record: CorruptionRecord,
    draw_level: bool,
) -> np.ndarray:
    """Draw the level (a mixture always draws it), then the kind's random arrays, then apply it."""
    _, height, width = x.shape
    record.kinds.append(kind)

    if kind == "gaussian":
        sigma = _draw_float(rng, spec.gaussian_sigma, draw_level)
        noise = rng.standard_normal(x.shape)
        return add_gaussian_noise(x, sigma, noise)

    if kind == "salt-pepper":
        amount = _draw_float(rng, spec.salt_pepper_amount, draw_level)
        mask = rng.random((height, width)) < amount
        coins = rng.random(int(mask.sum()))
        return apply_salt_pepper(x, mask, coins)

    if kind == "block":
        side = min(_draw_int(rng, spec.block_side, draw_level), height, width)
        row = int(rng.integers(0, height - side + 1))
        col = int(rng.integers(0, width - side + 1))
        mask = np.zeros((height, width), dtype=bool)
        mask[row : row + side, col : col + side] = True
        record.block_mask = mask if record.block_mask is None else record.block_mask | mask
        return fill_block(x, row, col, side)

    if kind == "blur":
        sigma = _draw_float(rng, spec.blur_sigma, draw_level)
        blurred = blur(x, sigma)
        noise = rng.standard_normal(x.shape)
        record.blur_sigma = sigma
        return np.clip(blurred + spec.blur_noise * noise, 0.0, 1.0)

    raise ValueError(f"unknown corruption kind {kind!r}")


def corrupt(x: np.ndarray, spec: CorruptionSpec, rng: np.random.Generator) -> tuple[np.ndarray, CorruptionRecord]:
    """Corrupt one image (C, H, W) in [0, 1]; return the float32 result and what was applied."""
    x = np.asarray(x, dtype=np.float64)
    record = CorruptionRecord()

    if spec.kind != "mixed":
        y = _apply_kind(x, spec.kind, spec, rng, record, draw_level=False)
        return y.astype(np.float32), record

    if spec.single_kind_share > 0 and rng.random() < spec.single_kind_share:
        kind = MIXED_ORDER[int(rng.integers(0, len(MIXED_ORDER)))]
        y = _apply_kind(x, kind, spec, rng, record, draw_level=True)
        return y.astype(np.float32), record

    flags = rng.random(4) < spec.mixed_probability
    while not flags.any():
        flags = rng.random(4) < spec.mixed_probability
    y = x
    for kind, selected in zip(MIXED_ORDER, flags):
        if selected:
            y = _apply_kind(y, kind, spec, rng, record, draw_level=True)
    return y.astype(np.float32), record


def corrupt_batch(
    images: np.ndarray, spec: CorruptionSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[CorruptionRecord]]:
    """Corrupt a batch (N, C, H, W) image after image from one generator."""
    outputs, records = [], []
    for image in images:
        y, record = corrupt(image, spec, rng)
        outputs.append(y)
        records.append(record)
    return np.stack(outputs), records


def protocol_corrupt(image: np.ndarray, kind: str, row_index: int) -> tuple[np.ndarray, CorruptionRecord]:
    """Corrupt test image `row_index` (its 0-based row in the csv file) at evaluation level."""
    rng = np.random.default_rng(PROTOCOL_SEED + row_index)
    return corrupt(image, protocol_spec(kind), rng)


def with_levels(spec: CorruptionSpec, **levels: object) -> CorruptionSpec:
    """Return `spec` with some levels replaced, e.g. `with_levels(spec, gaussian_sigma=(0.1, 0.1))`."""
    return replace(spec, **levels)
