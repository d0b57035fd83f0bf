"""The reference digit classifier: shipped accuracy, scores, seeded training and its file format."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from restorecli.checkpoint import load_checkpoint
from restorecli.classifier import (
    ClassifierSettings,
    ConfusionPair,
    accuracy,
    confusion_pairs,
    load_classifier,
    shift_images,
    shipped_classifier,
    train_classifier,
)
from restorecli.data import mnist
from restorecli.errors import RestoreCliError, UsageError
from restorecli.restoration import shipped_weights

# A few steps on 64 evenly spread training rows: well under a second on one core.
TINY_SETTINGS = ClassifierSettings(epochs=1, batch_size=16, train_images=64)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "tiny.safetensors"
    train_classifier(path, TINY_SETTINGS)
    return path


def test_shipped_classifier_test_accuracy():
    # Measured: 0.990 on the 500 test rows (`python -m restorecli.classifier --out ...`, 1 CPU thread).
    classifier = load_classifier()
    test = mnist.load_test_split()

    predicted = classifier.predict(test.images)

    assert classifier.path == shipped_classifier()
    assert predicted.shape == (500,)
    assert predicted.dtype == np.int64
    assert accuracy(test.labels, predicted) >= 0.97


def test_shipped_classifier_size():
    size = shipped_classifier().stat().st_size
    assert size < 1_000_000, f"{size} bytes"


def test_accuracy_hand_cases():
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    assert accuracy(np.array([7]), np.array([7])) == 1.0
    assert accuracy(np.array([7, 7]), np.array([1, 2])) == 0.0


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(UsageError, match="one prediction per labelled image"):
        accuracy(np.array([1, 2, 3]), np.array([1, 2]))


def test_accuracy_rejects_empty_input():
    with pytest.raises(UsageError, match="no labelled images"):
        accuracy(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_confusion_pairs_hand_case():
    labels = np.array([5, 5, 5, 6, 6, 3, 3, 1, 9])
    before = np.array([5, 5, 5, 6, 6, 3, 8, 1, 4])  # rows 6 and 8 are wrong already
    after = np.array([6, 6, 6, 0, 6, 3, 2, 1, 7])

    pairs = confusion_pairs(labels, before, after)

    # Row 4 stays right. Rows 6 and 8 change but were wrong before, so they are left out.
    assert pairs == [ConfusionPair(5, 6, 3), ConfusionPair(6, 0, 1)]
    assert pairs[0].describe() == "5→6: 3 images"
    assert pairs[1].describe() == "6→0: 1 image"


def test_confusion_pairs_tie_order():
    labels = np.array([8, 8, 2, 2, 2, 2])
    before = labels.copy()
    after = np.array([3, 0, 7, 7, 1, 1])

    pairs = confusion_pairs(labels, before, after)

    assert pairs == [
        ConfusionPair(2, 1, 2),
        ConfusionPair(2, 7, 2),
        ConfusionPair(8, 0, 1),
        ConfusionPair(8, 3, 1),
    ]


def test_confusion_pairs_none_when_unchanged():
    labels = np.array([0, 1, 2])
    assert confusion_pairs(labels, labels, labels) == []


def test_confusion_pairs_rejects_mismatched_shapes():
    with pytest.raises(UsageError, match="one prediction per labelled image"):
        confusion_pairs(np.array([1, 2]), np.array([1, 2]), np.array([1]))


def test_shift_images_moves_pixels():
    images = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)

    shifted = shift_images(images, torch.tensor([[1, -2]]))[0, 0]

    # Down by one row and left by two columns, with zeros where nothing moved in.
    assert torch.equal(shifted[1:, :3], images[0, 0, :4, 2:])
    assert torch.equal(shifted[0], torch.zeros(5))
    assert torch.equal(shifted[:, 3:], torch.zeros(5, 2))


def test_tiny_training_writes_loadable_file(tiny_classifier):
    classifier = load_classifier(tiny_classifier)
    images = mnist.load_test_split().images[:10]

    predicted = classifier.predict(images)

    assert predicted.shape == (10,)
    assert predicted.dtype == np.int64
    assert predicted.min() >= 0
    assert predicted.max() <= 9
    assert classifier.meta["train_images"] == 64
    assert classifier.meta["settings"]["epochs"] == 1
    assert 0.0 <= classifier.meta["val_accuracy"] <= 1.0


def test_tiny_training_is_deterministic(tiny_classifier, tmp_path):
    repeat = tmp_path / "repeat.safetensors"
    train_classifier(repeat, TINY_SETTINGS)

    first, second = load_file(str(tiny_classifier)), load_file(str(repeat))

    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_training_keeps_thread_count(tmp_path):
    before = torch.get_num_threads()
    train_classifier(tmp_path / "threads.safetensors", ClassifierSettings(epochs=1, batch_size=16, train_images=16))
    assert torch.get_num_threads() == before


def test_training_rejects_bad_subset(tmp_path):
    with pytest.raises(UsageError, match=r"training image count 0 \(--train-images\) is invalid"):
        train_classifier(tmp_path / "none.safetensors", ClassifierSettings(train_images=0))


def test_predict_rejects_wrong_shape(tiny_classifier):
    classifier = load_classifier(tiny_classifier)
    with pytest.raises(UsageError, match=r"\(N, 1, 28, 28\), got \(2, 28, 28\)"):
        classifier.predict(np.zeros((2, 28, 28), dtype=np.float32))


def test_predict_empty_batch(tiny_classifier):
    predicted = load_classifier(tiny_classifier).predict(np.zeros((0, 1, 28, 28), dtype=np.float32))
    assert predicted.shape == (0,)
    assert predicted.dtype == np.int64


def test_predict_ignores_batch_size(tiny_classifier):
    classifier = load_classifier(tiny_classifier)
    images = mnist.load_test_split().images[:50]
    assert np.array_equal(classifier.predict(images, batch_size=7), classifier.predict(images))


def test_restorer_checkpoint_rejected():
    # The shipped restorer is a real `restorecli train` checkpoint. The `tiny_checkpoint` fixture
    # is one too, but it trains for about 25 s when this file runs on its own.
    restorer = shipped_weights()
    with pytest.raises(RestoreCliError) as caught:
        load_classifier(restorer)
    message = str(caught.value)
    assert str(restorer) in message
    assert "is a restorer checkpoint, not a digit classifier" in message
    assert "python -m restorecli.classifier --out FILE" in message


def test_classifier_rejected_as_restorer(tiny_classifier):
    with pytest.raises(RestoreCliError, match="not a restorecli checkpoint"):
        load_checkpoint(tiny_classifier)


def test_missing_classifier_file(tmp_path):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(RestoreCliError, match=f"digit classifier {missing} not found"):
        load_classifier(missing)


class _TouchOnUnpickle:
    """Creates a marker file if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_file_rejected_unread(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"model.head.weight": _TouchOnUnpickle(marker)}))

    with pytest.raises(RestoreCliError, match="is not a safetensors file"):
        load_classifier(path)
    assert not marker.exists()


def test_command_line_trains_and_reports(tmp_path):
    out = tmp_path / "cli.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "restorecli.classifier", "--out", str(out), "--epochs", "1", "--train-images", "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert out.is_file()
    assert "clean validation accuracy" in completed.stdout
    assert "clean test accuracy" in completed.stdout
    assert "trained on 40 images" in completed.stdout


def test_command_line_rejects_bad_subset(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "restorecli.classifier", "--out", str(tmp_path / "x.safetensors"), "--train-images", "0"],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 2
    assert "training image count 0 (--train-images) is invalid" in completed.stderr
    assert not (tmp_path / "x.safetensors").exists()
