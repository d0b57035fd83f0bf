"""The MNIST-5k protocol v1 evaluation: the model, the corrupted input and classical restorers."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from restorecli.atomic import write_atomically
from restorecli.baselines import baselines_for
from restorecli.checkpoint import file_sha256
from restorecli.corruptions import protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr, ssim
from restorecli.restoration import Restorer


@dataclass
class MethodResult:
    name: str
    kind: str  # "model", "baseline" or "input"
    nfe: int | None
    psnr_db: float
    ssim: float
    images_per_s: float | None
    oracle: bool = False


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
    methods: list[MethodResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProtocolImages:
    """The protocol's test split corrupted at evaluation level for one kind."""

    clean: np.ndarray  # (500, 1, 28, 28)
    corrupted: np.ndarray  # (500, 1, 28, 28)
    records: list
    rows: np.ndarray


def protocol_images(kind: str, limit: int | None = None) -> ProtocolImages:
    split = mnist.load_test_split()
    clean, rows = split.images[:limit], split.rows[:limit]
    pairs = [protocol_corrupt(image, kind, int(row)) for image, row in zip(clean, rows)]
    corrupted = np.stack([pair[0] for pair in pairs])
    return ProtocolImages(clean=clean, corrupted=corrupted, records=[pair[1] for pair in pairs], rows=rows)


def _scores(name: str, kind: str, clean: np.ndarray, restored: np.ndarray, nfe: int | None, rate: float | None, oracle: bool = False) -> MethodResult:
    return MethodResult(
        name=name,
        kind=kind,
        nfe=nfe,
        psnr_db=round(float(psnr(clean, restored).mean()), 4),
        ssim=round(float(ssim(clean, restored).mean()), 4),
        images_per_s=None if rate is None else round(rate, 1),
        oracle=oracle,
    )


def evaluate(
    restorer: Restorer,
    kind: str,
    steps: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    limit: int | None = None,
    with_baselines: bool = True,
    on_method: Callable[[str], None] | None = None,
) -> Report:
    """Score the model, the corrupted input and each classical restorer on the protocol test split."""
    restorer.check_steps(steps)
    images = protocol_images(kind, limit)
    report = Report(
        protocol=mnist.PROTOCOL_NAME,
        noise=kind,
        n_images=len(images.clean),
        checkpoint=str(restorer.checkpoint_path),
        checkpoint_sha256=file_sha256(restorer.checkpoint_path),
        device=str(restorer.device),
        threads=torch.get_num_threads(),
        batch_size=batch_size,
    )

    # The model: one warm-up batch first, so that the timing excludes one-off start-up costs.
    label = f"{restorer.objective.kind} {restorer.checkpoint.config.model.preset}"
    if on_method:
        on_method(label)
    restorer.restore_batch(images.corrupted[:batch_size], steps=steps, seed=seed, batch_size=batch_size)
    started = time.perf_counter()
    restored = restorer.restore_batch(images.corrupted, steps=steps, seed=seed, batch_size=batch_size)
    rate = len(restored) / (time.perf_counter() - started)
    report.methods.append(_scores(label, "model", images.clean, restored, steps, rate))

    report.methods.append(_scores("corrupted input", "input", images.clean, images.corrupted, None, None))

    if with_baselines:
        for baseline in baselines_for(kind):
            if on_method:
                on_method(baseline.name)
            started = time.perf_counter()
            outputs = np.stack([baseline.restore(y, record) for y, record in zip(images.corrupted, images.records)])
            rate = len(outputs) / (time.perf_counter() - started)
            report.methods.append(_scores(baseline.name, "baseline", images.clean, outputs, None, rate, baseline.oracle))
    return report


def write_report(path: Path, reports: list[Report]) -> None:
    """Write one report as JSON (several kinds: {"protocol": ..., "reports": [...]}), atomically."""
    if len(reports) == 1:
        payload = reports[0].to_dict()
    else:
        payload = {"protocol": mnist.PROTOCOL_NAME, "reports": [report.to_dict() for report in reports]}
    text = json.dumps(payload, indent=2) + "\n"
    write_atomically(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))
