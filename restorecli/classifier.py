"""The reference digit classifier: seeded training, its file format, prediction and digit scores.

`restorecli evaluate` classifies clean, corrupted and restored test digits with this network to
report digit accuracy and the confusions that restoration creates. The shipped file is written by

    python -m restorecli.classifier --out restorecli/weights/digit-classifier.safetensors

which trains on the protocol's training rows only. The default architecture and settings were
chosen on validation accuracy. No score selects weights, so the file contains the weights
after the last epoch. The test rows are scored only for the final printout.

File format: safetensors tensors `model.*` (the weights and batch-norm statistics), and metadata
`format` = "restorecli-classifier", `format_version`, `config` (JSON: the network widths) and `meta`
(JSON: training settings, validation accuracy, parameter count and seconds). A restorer
checkpoint has `format` = "restorecli", so neither loader accepts the other's files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from restorecli.atomic import write_atomically
from restorecli.checkpoint import FORMAT_NAME as RESTORER_FORMAT_NAME
from restorecli.data import mnist
from restorecli.device import choose_device
from restorecli.errors import RestoreCliError, UsageError
from restorecli.models import count_parameters
from restorecli.models.classifier import DEFAULT_WIDTHS, DigitClassifier

FORMAT_NAME = "restorecli-classifier"
FORMAT_VERSION = "1"
SHIPPED_CLASSIFIER = "digit-classifier.safetensors"
TRAIN_COMMAND = "python -m restorecli.classifier --out FILE"
IMAGE_SHAPE = (1, mnist.IMAGE_SIZE, mnist.IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


def _check_predictions(labels: np.ndarray, *predictions: np.ndarray) -> None:
    for predicted in predictions:
        if predicted.shape != labels.shape:
            raise UsageError(
                f"predictions have shape {predicted.shape} but labels have shape {labels.shape}; "
                "pass one prediction per labelled image"
            )
    if labels.size == 0:
        raise UsageError("no labelled images to score; pass at least one image")


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Return the fraction of images, 0..1, whose predicted digit equals the label."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    _check_predictions(labels, predicted)
    return float(np.mean(labels == predicted))


class ConfusionPair(NamedTuple):
    """A (true digit, wrongly predicted digit) pair and the number of images that show it."""

    true_digit: int
    predicted_digit: int
    count: int

    def describe(self) -> str:
        noun = "image" if self.count == 1 else "images"
        return f"{self.true_digit}→{self.predicted_digit}: {self.count} {noun}"


def confusion_pairs(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> list[ConfusionPair]:
    """Count the confusions that appear between two predictions of the same labelled images.

    An image counts when `before` predicts its label and `after` predicts another digit d. It is
    counted under (label, d). With `before` from the clean images and `after` from the restored
    ones, the pairs are the digit errors that corruption plus restoration introduce. Images that
    `before` already gets wrong are left out, so the pairs never blame restoration for an error
    of the classifier itself. The list is sorted by count, most frequent first, then by true digit
    and predicted digit so that ties have a fixed order.
    """
    labels, before, after = np.asarray(labels), np.asarray(before), np.asarray(after)
    _check_predictions(labels, before, after)
    broken = (before == labels) & (after != labels)
    counts: dict[tuple[int, int], int] = {}
    for true_digit, predicted_digit in zip(labels[broken].tolist(), after[broken].tolist()):
        key = (int(true_digit), int(predicted_digit))
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))
    return [ConfusionPair(true_digit, predicted_digit, count) for (true_digit, predicted_digit), count in ordered]


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise UsageError(
            f"the digit classifier takes images of shape (N, 1, 28, 28), got {images.shape}; "
            "pass grey 28x28 images as float values in [0, 1]"
        )
    return np.ascontiguousarray(images, dtype=np.float32)


@torch.inference_mode()
def predict_digits(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """Classify (N, 1, 28, 28) float images in [0, 1] and return (N,) int64 digits.

    The model is put in eval mode, so batch norm uses its stored statistics and the result of
    each image does not depend on the other images in its batch.
    """
    images = _check_images(images)
    model.eval()
    digits = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        digits.append(model(batch).argmax(dim=1).cpu().numpy().astype(np.int64))
    return np.concatenate(digits)


@dataclass
class Classifier:
    """A digit classifier loaded from its file, ready to predict on one device."""

    path: Path
    model: DigitClassifier
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Classify (N, 1, 28, 28) float32 images in [0, 1] and return (N,) int64 digits 0..9."""
        return predict_digits(self.model, images, self.device, batch_size)


# ----------------------------------------------------------------------------------------------
# The file: save and load
# ----------------------------------------------------------------------------------------------


def shipped_classifier() -> Path:
    """Return the path of the digit classifier that ships inside the package."""
    path = Path(str(resources.files("restorecli").joinpath("weights", SHIPPED_CLASSIFIER)))
    if not path.is_file():
        raise RestoreCliError(
            f"the shipped digit classifier {path} is missing; reinstall restorecli or rebuild it with "
            "`make classifier`"
        )
    return path


def save_classifier(path: Path, model: DigitClassifier, meta: dict[str, Any]) -> None:
    """Write the weights and metadata to `path` atomically, so no half-written file remains."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps({"widths": list(model.widths)}),
        "meta": json.dumps(meta),
    }
    tensors = {f"model.{name}": value.detach().to("cpu").contiguous() for name, value in model.state_dict().items()}
    write_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def _read_classifier_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata, rejecting anything that is not a classifier file of this version."""
    fix = f"pass a file written by `{TRAIN_COMMAND}`, or leave the path out to use the shipped classifier"
    if not path.is_file():
        raise RestoreCliError(f"digit classifier {path} not found; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        # safetensors reads raw tensors only, so loading never runs pickled code.
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, UnicodeDecodeError, OSError) as error:
        raise RestoreCliError(f"digit classifier {path} is not a safetensors file ({error}); {fix}") from error

    found = metadata.get("format")
    if found == RESTORER_FORMAT_NAME:
        raise RestoreCliError(f"{path} is a restorer checkpoint, not a digit classifier; {fix}")
    if found != FORMAT_NAME:
        raise RestoreCliError(f"{path} is a safetensors file but not a restorecli digit classifier; {fix}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise RestoreCliError(
            f"digit classifier {path} has format version {metadata.get('format_version')!r}, this "
            f"restorecli reads version {FORMAT_VERSION}; retrain it with `{TRAIN_COMMAND}` or upgrade restorecli"
        )
    return tensors, metadata


def load_classifier(path: Path | None = None, device: str = "cpu") -> Classifier:
    """Load a digit classifier file, by default the shipped one, onto `device` (cpu, cuda, mps or auto)."""
    path = Path(path) if path is not None else shipped_classifier()
    tensors, metadata = _read_classifier_file(path)
    retrain = f"retrain it with `{TRAIN_COMMAND}`"
    try:
        config = json.loads(metadata["config"])
        meta = json.loads(metadata.get("meta", "{}"))
        model = DigitClassifier(tuple(config["widths"]))
    except (KeyError, TypeError, ValueError) as error:
        raise RestoreCliError(f"digit classifier {path} has an unreadable config ({error}); {retrain}") from error

    prefix = "model."
    weights = {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise RestoreCliError(f"digit classifier {path} does not match its own config ({first}); {retrain}") from error

    target = choose_device(device)
    model = model.to(target).eval()
    return Classifier(path=path, model=model, device=target, meta=meta)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierSettings:
    """Training settings that decide the weights. The defaults train the shipped file."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-2
    # Random shifts of up to this many pixels on each axis, filled with zeros. Of the 5000 bundled
    # digits, 12% have ink within 2 pixels of an edge, so a 2-pixel shift can clip a stroke end.
    max_shift: int = 2
    # None trains on all 4000 training rows. A smaller count takes rows spread evenly over the
    # split, which is sorted by class, so every digit appears once the count is 10 or more.
    train_images: int | None = None
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    # A fixed thread count keeps CPU results bit-identical between runs, because the reduction
    # order of parallel CPU kernels may depend on it. One thread also leaves other cores free.
    threads: int = 1


@dataclass
class ClassifierTrainingResult:
    path: Path
    val_accuracy: float
    parameters: int
    train_images: int
    seconds: float


ProgressCallback = Callable[[int, dict[str, float]], None]


def shift_images(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each (N, C, H, W) image by its (dy, dx) row of `shifts`, filling with zeros.

    A positive dy moves the digit down and a positive dx moves it right. Each |shift| must be
    below H and W.
    """
    count, channels, height, width = images.shape
    margin = int(shifts.abs().max()) if shifts.numel() else 0
    padded = nn.functional.pad(images, (margin, margin, margin, margin))  # (N, C, H + 2m, W + 2m)
    rows = (margin - shifts[:, 0])[:, None] + torch.arange(height)  # (N, H)
    cols = (margin - shifts[:, 1])[:, None] + torch.arange(width)  # (N, W)
    index = torch.arange(count)[:, None, None, None]
    channel = torch.arange(channels)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def _training_subset(split: mnist.Split, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    if count is None:
        return split.images, split.labels
    if not 2 <= count <= len(split.labels):
        # Batch norm needs at least two images in a batch.
        raise UsageError(
            f"training image count {count} (--train-images) is invalid; use 2 to {len(split.labels)}, "
            "or leave it out to train on every training row"
        )
    picks = np.linspace(0, len(split.labels) - 1, count).round().astype(np.int64)
    return split.images[picks], split.labels[picks]


def _check_settings(settings: ClassifierSettings) -> None:
    if settings.epochs < 1:
        raise UsageError(f"epoch count {settings.epochs} (--epochs) is invalid; use 1 or more")
    if settings.batch_size < 2:
        # Batch norm needs at least two images to estimate a batch's statistics.
        raise UsageError(f"batch size {settings.batch_size} is invalid; use 2 or more")
    if not 0 <= settings.max_shift < mnist.IMAGE_SIZE:
        raise UsageError(f"max shift {settings.max_shift} is invalid; use 0 to {mnist.IMAGE_SIZE - 1} pixels")


def _train_epochs(
    model: DigitClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    validation: mnist.Split,
    settings: ClassifierSettings,
    progress: ProgressCallback | None,
) -> None:
    """Run AdamW with a per-step cosine learning-rate decay for `settings.epochs` epochs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    count = len(labels)
    steps_per_epoch = math.ceil(count / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    all_images = torch.from_numpy(images)  # (N, 1, 28, 28)
    all_labels = torch.from_numpy(labels)  # (N,)

    step = 0
    for epoch in range(settings.epochs):
        # Every draw of an epoch comes from generators seeded by (seed, epoch).
        order = torch.from_numpy(np.random.default_rng([settings.seed, epoch, 1]).permutation(count))
        shift_draw = np.random.default_rng([settings.seed, epoch, 2])
        shifts = torch.from_numpy(shift_draw.integers(-settings.max_shift, settings.max_shift + 1, (count, 2)))

        model.train()
        loss_sum, correct = 0.0, 0
        for start in range(0, count, settings.batch_size):
            picked = order[start : start + settings.batch_size]
            if len(picked) < 2:
                continue  # batch norm cannot normalise a batch of one image
            x = shift_images(all_images[picked], shifts[picked])  # (B, 1, 28, 28)
            y = all_labels[picked]  # (B,)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

            logits = model(x)  # (B, 10)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            loss_sum += loss.item() * len(picked)
            correct += int((logits.argmax(dim=1) == y).sum())
            step += 1

        if progress is not None:
            val_predicted = predict_digits(model, validation.images, torch.device("cpu"))
            progress(
                epoch + 1,
                {
                    "loss": loss_sum / count,
                    "train_accuracy": correct / count,
                    "val_accuracy": accuracy(validation.labels, val_predicted),
                },
            )


def train_classifier(
    out: Path, settings: ClassifierSettings = ClassifierSettings(), progress: ProgressCallback | None = None
) -> ClassifierTrainingResult:
    """Train the digit classifier on the protocol's training rows on CPU and write it to `out`.

    The same settings give bit-identical weights on the same CPU and torch build. `progress`, if
    given, receives (epoch, {loss, train_accuracy, val_accuracy}) after each epoch. The returned
    weights are those after the last epoch, whatever the validation scores were.
    """
    _check_settings(settings)
    out = Path(out)
    images, labels = _training_subset(mnist.load_train_split(), settings.train_images)
    validation = mnist.load_validation_split()

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    try:
        # The initial weights come from the seed without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = DigitClassifier(settings.widths)
        _train_epochs(model, images, labels, validation, settings, progress)
        val_accuracy = accuracy(validation.labels, predict_digits(model, validation.images, torch.device("cpu")))
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - started

    parameters = count_parameters(model)
    settings_record = asdict(settings)
    settings_record["widths"] = list(settings.widths)
    meta = {
        "kind": "digit-classifier",
        "protocol": mnist.PROTOCOL_NAME,
        "settings": settings_record,
        "train_images": len(labels),
        "val_accuracy": val_accuracy,
        "parameters": parameters,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    save_classifier(out, model, meta)
    return ClassifierTrainingResult(out, val_accuracy, parameters, len(labels), seconds)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = ClassifierSettings()
    parser = argparse.ArgumentParser(
        prog="python -m restorecli.classifier",
        description="Train the reference digit classifier on the protocol's MNIST training rows (CPU, seeded).",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help=f"passes over the training rows (default {defaults.epochs})"
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="train on this many training rows, spread over all digits (default: all 4000)",
    )
    return parser.parse_args(argv)


def _print_epoch(epoch: int, stats: dict[str, float]) -> None:
    print(
        f"epoch {epoch:3d}  loss {stats['loss']:.4f}  train accuracy {stats['train_accuracy']:.4f}  "
        f"validation accuracy {stats['val_accuracy']:.4f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Train and write the classifier, print its clean validation and test accuracy, and return the exit code."""
    args = _parse_arguments(argv)
    settings = ClassifierSettings(seed=args.seed, epochs=args.epochs, train_images=args.train_images)
    try:
        result = train_classifier(args.out, settings, progress=_print_epoch)
        classifier = load_classifier(result.path)
        test = mnist.load_test_split()
        test_accuracy = accuracy(test.labels, classifier.predict(test.images))
    except RestoreCliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code

    size_kb = result.path.stat().st_size / 1000
    print(
        f"wrote {result.path}: {result.parameters:,} parameters, {size_kb:.0f} kB, trained on "
        f"{result.train_images} images in {result.seconds:.0f} s on {settings.threads} CPU thread(s)"
    )
    print(f"clean validation accuracy {result.val_accuracy:.4f} ({len(mnist.load_validation_split().labels)} images)")
    print(f"clean test accuracy       {test_accuracy:.4f} ({len(test.labels)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
