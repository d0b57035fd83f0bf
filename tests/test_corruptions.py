"""Corruptions: protocol draws pinned and recomputed by hand, seeding, ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restorecli.corruptions import (
    KINDS,
    PROTOCOL_SEED,
    CorruptionSpec,
    corrupt,
    corrupt_batch,
    gaussian_kernel,
    protocol_corrupt,
    protocol_spec,
)
from restorecli.data import mnist

REFERENCE = Path(__file__).parent / "data" / "protocol_first_test_image.npz"


@pytest.fixture(scope="module")
def first_test_image() -> tuple[np.ndarray, int]:
    split = mnist.load_test_split()
    return split.images[0], int(split.rows[0])


@pytest.mark.parametrize("kind", KINDS)
def test_first_test_image_matches_reference(first_test_image, kind):
    image, row = first_test_image
    stored = np.load(REFERENCE)[kind.replace("-", "_")]

    y, _ = protocol_corrupt(image, kind, row)

    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, stored)


def test_gaussian_recomputed_by_hand(first_test_image):
    image, row = first_test_image
    rng = np.random.default_rng(PROTOCOL_SEED + row)
    expected = np.clip(image[0].astype(np.float64) + 0.3 * rng.standard_normal((28, 28)), 0, 1)

    y, _ = protocol_corrupt(image, "gaussian", row)

    np.testing.assert_allclose(y[0], expected.astype(np.float32))


def test_salt_pepper_recomputed_by_hand(first_test_image):
    image, row = first_test_image
    rng = np.random.default_rng(PROTOCOL_SEED + row)
    mask = rng.random((28, 28)) < 0.2
    coins = rng.random(mask.sum())
    expected = image[0].astype(np.float64).copy()
    expected[mask] = np.where(coins < 0.5, 0.0, 1.0)

    y, _ = protocol_corrupt(image, "salt-pepper", row)

    np.testing.assert_array_equal(y[0], expected.astype(np.float32))


def test_block_recomputed_by_hand(first_test_image):
    image, row = first_test_image
    rng = np.random.default_rng(PROTOCOL_SEED + row)
    top, left = rng.integers(0, 17), rng.integers(0, 17)
    expected = image[0].copy()
    expected[top : top + 12, left : left + 12] = 1.0

    y, record = protocol_corrupt(image, "block", row)

    np.testing.assert_array_equal(y[0], expected)
    assert record.block_mask.sum() == 144


def test_blur_recomputed_by_hand(first_test_image):
    image, row = first_test_image
    offsets = np.arange(-4, 5)
    u, v = np.meshgrid(offsets, offsets, indexing="ij")
    kernel = np.exp(-(u**2 + v**2) / (2 * 1.5**2))
    kernel /= kernel.sum()
    padded = np.pad(image[0].astype(np.float64), 4, mode="symmetric")
    blurred = np.zeros((28, 28))
    for i in range(28):
        for j in range(28):
            blurred[i, j] = (padded[i : i + 9, j : j + 9] * kernel).sum()
    rng = np.random.default_rng(PROTOCOL_SEED + row)
    expected = np.clip(blurred + 0.01 * rng.standard_normal((28, 28)), 0, 1)

    y, record = protocol_corrupt(image, "blur", row)

    np.testing.assert_allclose(y[0], expected.astype(np.float32), atol=1e-6)
    assert record.blur_sigma == 1.5


def test_blur_kernel_size_by_sigma():
    assert gaussian_kernel(0.5).shape == (9, 9)
    assert gaussian_kernel(1.5).shape == (9, 9)
    assert gaussian_kernel(2.0).shape == (13, 13)
    assert gaussian_kernel(1.5).sum() == pytest.approx(1.0)


def test_mixed_applies_kinds_in_protocol_order():
    images = mnist.load_test_split()
    orders = {"block": 0, "blur": 1, "gaussian": 2, "salt-pepper": 3}
    seen = set()
    for image, row in zip(images.images[:60], images.rows[:60]):
        _, record = protocol_corrupt(image, "mixed", int(row))
        positions = [orders[kind] for kind in record.kinds]
        assert positions == sorted(positions)
        assert record.kinds
        seen.update(record.kinds)
    assert seen == set(orders)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output(kind):
    image = mnist.load_test_split().images[3]
    spec = CorruptionSpec(kind=kind, gaussian_sigma=(0.1, 0.3), salt_pepper_amount=(0.05, 0.2), block_side=(4, 10), blur_sigma=(0.6, 1.4))

    first, _ = corrupt(image, spec, np.random.default_rng(5))
    second, _ = corrupt(image, spec, np.random.default_rng(5))
    other, _ = corrupt(image, spec, np.random.default_rng(6))

    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("kind", KINDS)
def test_output_in_unit_range_and_shape(kind):
    images = mnist.load_test_split().images[:8]

    corrupted, records = corrupt_batch(images, protocol_spec(kind), np.random.default_rng(0))

    assert corrupted.shape == images.shape
    assert corrupted.min() >= 0.0
    assert corrupted.max() <= 1.0
    assert len(records) == 8


def test_protocol_does_not_depend_on_order():
    split = mnist.load_test_split()
    forward = [protocol_corrupt(split.images[i], "mixed", int(split.rows[i]))[0] for i in range(5)]
    backward = [protocol_corrupt(split.images[i], "mixed", int(split.rows[i]))[0] for i in reversed(range(5))]

    for a, b in zip(forward, reversed(backward)):
        np.testing.assert_array_equal(a, b)


def test_rgb_image_keeps_channels():
    rng = np.random.default_rng(0)
    image = rng.random((3, 20, 33))

    y, _ = corrupt(image, protocol_spec("salt-pepper"), np.random.default_rng(1))

    assert y.shape == (3, 20, 33)
    replaced = (y == 0) | (y == 1)
    assert replaced.all(axis=0).sum() > 0


def test_block_side_is_capped_at_image_size():
    image = np.zeros((1, 8, 8))

    y, record = corrupt(image, protocol_spec("block"), np.random.default_rng(0))

    assert record.block_mask.all()
    assert (y == 1).all()


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown corruption kind 'speckle'"):
        CorruptionSpec(kind="speckle")
