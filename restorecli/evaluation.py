"""The MNIST-5k protocol v1 evaluation: the model at each NFE, the corrupted input and classical restorers.

Every method is scored on the 500 protocol test images by PSNR, SSIM and speed. With a digit
classifier, it also gets the digit accuracy of its outputs, and block masks add PSNR inside and
outside the masked square. The outputs stay in memory so that a picture grid can show them.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from restorecli.baselines import baselines_for
from restorecli.checkpoint import file_sha256
from restorecli.classifier import accuracy, confusion_pairs
from restorecli.corruptions import protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr, region_psnr, ssim
from restorecli.restoration import Restorer


class DigitClassifier(Protocol):
    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class MethodResult:
    name: str
    kind: str  # "model", "baseline" or "input"
    nfe: int | None
    psnr_db: float
    ssim: float
    images_per_s: float | None
    oracle: bool = False
    digit_accuracy: float | None = None  # 0..1, None without a classifier
    psnr_in_mask_db: float | None = None  # block masks only
    psnr_out_mask_db: float | None = None
    # Digits that the classifier reads correctly on the clean image but as another digit after this
    # method, as {"true": 5, "predicted": 6, "count": 3}, most frequent first.
    confusions: list[dict] = field(default_factory=list)


@dataclass
class Report:
    protocol: str
    noise: str
    n_images: int
    checkpoint: str
    checkpoint_sha256: str
    device: str
    threads: int
    batch_size: int
    classifier: str | None = None
    clean_digit_accuracy: float | None = None
    methods: list[MethodResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProtocolImages:
    """The protocol's test split corrupted at evaluation level for one kind."""

    clean: np.ndarray  # (N, 1, 28, 28)
    corrupted: np.ndarray  # (N, 1, 28, 28)
    labels: np.ndarray  # (N,)
    records: list
    rows: np.ndarray

    def block_masks(self) -> np.ndarray | None:
        """Return the (N, H, W) block masks when every image has one, else None."""
        masks = [record.block_mask for record in self.records]
        if any(mask is None for mask in masks):
            return None
        return np.stack(masks)


@dataclass
class Evaluation:
    """One kind's report with the images and every method's outputs, keyed like the report rows."""

    report: Report
    images: ProtocolImages
    outputs: dict[tuple[str, int | None], np.ndarray]  # (method name, NFE) -> (N, 1, 28, 28)

    def output_of(self, method: MethodResult) -> np.ndarray:
        return self.outputs[(method.name, method.nfe)]


def display_path(path: Path) -> str:
    """Return `path` relative to the working folder when it lies inside it, so reports do not carry home folders."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def protocol_images(kind: str, limit: int | None = None) -> ProtocolImages:
    """Return the protocol's test images of one kind; `limit` takes that many, evenly spread.

    The test rows are sorted by digit, so a spread subset keeps every class where the first rows
    would all be zeros.
    """
    split = mnist.load_test_split()
    chosen = np.arange(len(split.images))
    if limit is not None:
        chosen = np.unique(np.linspace(0, len(split.images) - 1, limit).round().astype(int))
    clean, rows, labels = split.images[chosen], split.rows[chosen], split.labels[chosen]
    pairs = [protocol_corrupt(image, kind, int(row)) for image, row in zip(clean, rows)]
    corrupted = np.stack([pair[0] for pair in pairs])
    return ProtocolImages(
        clean=clean, corrupted=corrupted, labels=np.asarray(labels), records=[pair[1] for pair in pairs], rows=rows
    )


class DigitJudge:
    """Digit accuracy of restored images and the confusions they create, against the clean predictions."""

    def __init__(self, classifier: DigitClassifier, clean: np.ndarray, labels: np.ndarray) -> None:
        self.classifier = classifier
        self.labels = labels
        self.clean_predictions = classifier.predict(clean)  # (N,)

    @property
    def clean_accuracy(self) -> float:
        return accuracy(self.labels, self.clean_predictions)

    def score(self, images: np.ndarray) -> tuple[float, list[dict]]:
        predictions = self.classifier.predict(images)  # (N,)
        pairs = confusion_pairs(self.labels, self.clean_predictions, predictions)
        confusions = [{"true": pair.true_digit, "predicted": pair.predicted_digit, "count": pair.count} for pair in pairs]
        return accuracy(self.labels, predictions), confusions


def score(
    name: str,
    kind: str,
    images: ProtocolImages,
    restored: np.ndarray,
    nfe: int | None = None,
    rate: float | None = None,
    oracle: bool = False,
    judge: DigitJudge | None = None,
) -> MethodResult:
    """Score one method's outputs (N, 1, H, W) against the clean images."""
    result = MethodResult(
        name=name,
        kind=kind,
        nfe=nfe,
        psnr_db=round(float(psnr(images.clean, restored).mean()), 4),
        ssim=round(float(ssim(images.clean, restored).mean()), 4),
        images_per_s=None if rate is None else round(rate, 1),
        oracle=oracle,
    )

    if judge is not None:
        accuracy, confusions = judge.score(restored)
        result.digit_accuracy = round(accuracy, 4)
        result.confusions = confusions

    masks = images.block_masks()
    if masks is not None:
        result.psnr_in_mask_db = round(float(np.nanmean(region_psnr(images.clean, restored, masks))), 4)
        result.psnr_out_mask_db = round(float(np.nanmean(region_psnr(images.clean, restored, ~masks))), 4)
    return result


def evaluate(
    restorer: Restorer,
    kind: str,
    steps: tuple[int, ...] = (1,),
    batch_size: int = 256,
    seed: int = 0,
    limit: int | None = None,
    with_baselines: bool = True,
    classifier: DigitClassifier | None = None,
    classifier_name: str | None = None,
    on_method: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score the model at each NFE in `steps`, the corrupted input and each classical restorer."""
    for count in steps:
        restorer.check_steps(count)
    images = protocol_images(kind, limit)
    judge = None if classifier is None else DigitJudge(classifier, images.clean, images.labels)
    report = Report(
        protocol=mnist.PROTOCOL_NAME,
        noise=kind,
        n_images=len(images.clean),
        checkpoint=display_path(restorer.checkpoint_path),
        checkpoint_sha256=file_sha256(restorer.checkpoint_path),
        device=str(restorer.device),
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        classifier=classifier_name,
        clean_digit_accuracy=None if judge is None else round(judge.clean_accuracy, 4),
    )
    outputs: dict[tuple[str, int | None], np.ndarray] = {}

    def add(result: MethodResult, restored: np.ndarray) -> None:
        report.methods.append(result)
        outputs[(result.name, result.nfe)] = restored

    # The model at each NFE: one warm-up batch first, so that the timing excludes one-off start-up costs.
    label = restorer.label
    for count in steps:
        if on_method:
            on_method(f"{label}, {count} NFE")
        restorer.restore_batch(images.corrupted[:batch_size], steps=count, seed=seed, batch_size=batch_size)
        started = time.perf_counter()
        restored = restorer.restore_batch(images.corrupted, steps=count, seed=seed, batch_size=batch_size)
        rate = len(restored) / (time.perf_counter() - started)
        add(score(label, "model", images, restored, count, rate, judge=judge), restored)

    add(score("corrupted input", "input", images, images.corrupted, judge=judge), images.corrupted)

    if with_baselines:
        for baseline in baselines_for(kind):
            if on_method:
                on_method(baseline.name)
            started = time.perf_counter()
            restored = np.stack([baseline.restore(y, record) for y, record in zip(images.corrupted, images.records)])
            rate = len(restored) / (time.perf_counter() - started)
            add(score(baseline.name, "baseline", images, restored, None, rate, baseline.oracle, judge), restored)
    return Evaluation(report=report, images=images, outputs=outputs)
