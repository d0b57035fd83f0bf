"""Classical baselines on real test digits with their protocol corruptions."""

from __future__ import annotations

import numpy as np
import pytest

from restorecli.baselines import Baseline, baselines_for, best_baseline, switching_median
from restorecli.corruptions import KINDS, SINGLE_KINDS, CorruptionRecord, protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr

DIGIT_COUNT = 8

ALL_BASELINES = [(kind, baseline) for kind in KINDS for baseline in baselines_for(kind)]
BASELINE_IDS = [f"{kind}: {baseline.name}" for kind, baseline in ALL_BASELINES]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first eight test digits (all of class 0) and their rows in the csv file."""
    split = mnist.load_test_split()
    return split.images[:DIGIT_COUNT], split.rows[:DIGIT_COUNT]


def corrupt_digits(digits, kind: str) -> tuple[np.ndarray, list[CorruptionRecord]]:
    images, rows = digits
    pairs = [protocol_corrupt(image, kind, int(row)) for image, row in zip(images, rows)]
    return np.stack([y for y, _ in pairs]), [record for _, record in pairs]


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_baseline_output_shape_dtype_range(digits, kind, baseline):
    corrupted, records = corrupt_digits(digits, kind)

    for y, record in zip(corrupted, records):
        restored = baseline.restore(y, record)
        assert restored.shape == y.shape
        assert restored.dtype == np.float32
        assert restored.min() >= 0.0
        assert restored.max() <= 1.0


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_baseline_improves_psnr(digits, kind, baseline):
    images, _ = digits
    corrupted, records = corrupt_digits(digits, kind)

    restored = np.stack([baseline.restore(y, record) for y, record in zip(corrupted, records)])

    gain = psnr(images, restored) - psnr(images, corrupted)
    assert gain.mean() > 1.0
    # A mixture can be mild enough that smoothing loses more than it removes on some digits.
    if kind in SINGLE_KINDS:
        assert np.all(gain > 0.0), f"PSNR gain per digit: {np.round(gain, 2)}"


def test_switching_median_keeps_other_pixels(digits):
    corrupted, _ = corrupt_digits(digits, "mixed")

    for y in corrupted:
        restored = switching_median(y.astype(np.float64))
        intact = (y != 0.0) & (y != 1.0)
        np.testing.assert_array_equal(restored[intact], y[intact])


def test_switching_median_replaces_impulses():
    image = np.full((1, 5, 5), 0.4)
    image[0, 2, 2] = 1.0
    image[0, 0, 0] = 0.0

    restored = switching_median(image)

    assert restored[0, 2, 2] == 0.4
    assert restored[0, 0, 0] == 0.4


def test_switching_median_baseline_keeps_other_pixels(digits):
    corrupted, records = corrupt_digits(digits, "salt-pepper")
    baseline = best_baseline("salt-pepper")

    for y, record in zip(corrupted, records):
        restored = baseline.restore(y, record)
        intact = (y != 0.0) & (y != 1.0)
        np.testing.assert_array_equal(restored[intact], y[intact])


@pytest.mark.parametrize("kind", KINDS)
def test_best_baseline_is_listed(kind):
    best = best_baseline(kind)

    assert isinstance(best, Baseline)
    assert best in baselines_for(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_baseline_names_unique_per_kind(kind):
    names = [baseline.name for baseline in baselines_for(kind)]

    assert len(names) == len(set(names))


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_oracle_named_as_oracle(kind, baseline):
    assert baseline.kind == kind
    assert ("oracle" in baseline.name) == baseline.oracle


def test_baselines_for_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown corruption kind 'speckle'"):
        baselines_for("speckle")


@pytest.mark.parametrize("kind", ["block", "blur"])
def test_oracle_rejects_record_without_truth(digits, kind):
    corrupted, _ = corrupt_digits(digits, "gaussian")
    oracles = [baseline for baseline in baselines_for(kind) if baseline.oracle]

    for baseline in oracles:
        with pytest.raises(ValueError, match="needs a record"):
            baseline.restore(corrupted[0], CorruptionRecord(kinds=["gaussian"]))
