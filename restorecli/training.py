"""The training loop: data, optimiser, EMA, validation, metrics.jsonl, checkpoints and resume.

Every random draw of step k comes from generators seeded by (seed, k), so a resumed run repeats
the draws an uninterrupted run would have made. Nothing here prints: progress goes to a monitor
that the caller supplies.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from restorecli.checkpoint import Checkpoint, load_checkpoint, model_for, save_checkpoint
from restorecli.classifier import load_classifier
from restorecli.config import Config
from restorecli.corruptions import corrupt_batch, protocol_corrupt
from restorecli.data import mnist
from restorecli.data.folder import ImageFolder, split_folder
from restorecli.data.images import write_png
from restorecli.device import autocast, set_threads
from restorecli.distributed import DistributedContext
from restorecli.finetuning import restorer_weights
from restorecli.errors import RestoreCliError, UsageError
from restorecli.meanflow import draw_class_condition, restore, training_loss
from restorecli.metrics import psnr
from restorecli.models import count_parameters
from restorecli.normalize import to_image, to_network
from restorecli.plots import plot_training_curves
from restorecli.sampling import class_grid, sample_by_class


class Monitor(Protocol):
    """Receives progress; the CLI implements it with rich, tests with a list."""

    def start(self, total_steps: int, first_step: int, description: str) -> None: ...
    def update(self, step: int, stats: dict[str, float]) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class SilentMonitor:
    def start(self, total_steps: int, first_step: int, description: str) -> None: ...
    def update(self, step: int, stats: dict[str, float]) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class TrainingDiverged(RestoreCliError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class TrainingData:
    """Clean training batches and a fixed corrupted validation set, from MNIST or a folder.

    MNIST also provides the digit label of every training image, for generator training.
    """

    def __init__(self, config: Config) -> None:
        source = config.data.source
        spec = config.corruption.to_spec()
        val_count = config.train.val_images

        if source == "mnist":
            if config.data.channels != 1 or config.data.image_size != 28:
                raise UsageError(
                    f"data.source 'mnist' is 1-channel 28x28, but the config asks for "
                    f"{config.data.channels} channels at {config.data.image_size}px; pass --data FOLDER of "
                    f"{config.data.channels}-channel images, or set data.channels = 1 and data.image_size = 28"
                )
            train = mnist.load_train_split()
            validation = mnist.load_validation_split()
            self.folder = None
            self.train_images = train.images  # (4000, 1, 28, 28)
            self.train_labels = train.labels  # (4000,) digits 0..9
            # Validation uses the protocol's evaluation-level corruption of the trained kind.
            clean = validation.images[:val_count]
            noisy = [protocol_corrupt(image, spec.kind, int(row))[0] for image, row in zip(clean, validation.rows)]
            self.val_clean, self.val_noisy = clean, np.stack(noisy)
            self.size = len(self.train_images)
        else:
            folder = ImageFolder(Path(source), config.data.channels, config.data.image_size)
            train_rows, val_rows = split_folder(folder)
            self.folder, self.train_rows = folder, train_rows
            self.train_labels = None
            rng = np.random.default_rng([config.train.seed, 7])
            clean = folder.sample(val_rows[:val_count], rng)
            self.val_clean = clean
            self.val_noisy, _ = corrupt_batch(clean, spec, rng)
            self.size = len(train_rows)

        self.spec = spec
        self.seed = config.train.seed
        self.batch_size = config.train.batch_size

    def _indices(self, step: int) -> np.ndarray:
        """Return the training rows (B,) of `step`, the same on every resume."""
        per_epoch = max(1, self.size // self.batch_size)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(self.size)
        indices = order[position * self.batch_size : (position + 1) * self.batch_size]
        if len(indices) < self.batch_size:  # fewer images than one batch: draw with replacement
            indices = np.random.default_rng([self.seed, step, 3]).integers(0, self.size, self.batch_size)
        return indices

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Return clean and corrupted batches (B, C, H, W) for `step`, the same on every resume."""
        indices = self._indices(step)
        rng = np.random.default_rng([self.seed, step, 2])
        if self.folder is None:
            clean = self.train_images[indices]
        else:
            clean = self.folder.sample(self.train_rows[indices], rng)
        noisy, _ = corrupt_batch(clean, self.spec, rng)
        return clean, noisy

    def labelled_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the clean images (B, C, H, W) of `step` and their labels (B,), with no corruption."""
        if self.train_labels is None:
            raise UsageError("image folders have no class labels; generator training needs data.source 'mnist'")
        indices = self._indices(step)
        return self.train_images[indices], self.train_labels[indices]


# ----------------------------------------------------------------------------------------------
# Optimisation helpers
# ----------------------------------------------------------------------------------------------


def learning_rate_factor(step: int, config: Config) -> float:
    """Linear warm-up to the peak, then cosine decay to `min_lr_ratio` of it."""
    train = config.train
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * cosine


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"train.optim.{index}.{key}"] = torch.as_tensor(value)
    return tensors, json.dumps(state["param_groups"])


def _load_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in checkpoint.section("train.optim").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(checkpoint.meta["param_groups"])})


@torch.no_grad()
def validation_psnr(model: nn.Module, data: TrainingData, config: Config, device: torch.device) -> float:
    """Mean 1-step PSNR of `model` on the fixed validation set."""
    generator = torch.Generator(device=device).manual_seed(config.train.seed + 99)
    restored = []
    for start in range(0, len(data.val_noisy), 256):
        y = to_network(torch.from_numpy(data.val_noisy[start : start + 256]).to(device))
        with autocast(device):
            x_hat = restore(model, y, config.objective, steps=1, generator=generator)
        restored.append(to_image(x_hat.float()).cpu().numpy())
    return float(psnr(data.val_clean, np.concatenate(restored)).mean())


# Validation grids show at most this many samples per class; the accuracy uses all of them.
VALIDATION_GRID_COLUMNS = 8


@torch.no_grad()
def validation_samples(model: nn.Module, config: Config, device: torch.device, grid_path: Path) -> float:
    """Sample a generator at `generate.sample_guidance` in 1 step, write a class grid, return digit accuracy.

    About `train.val_images` samples are drawn, the same number per class. The accuracy is the share
    that the shipped digit classifier assigns to the requested class, in [0, 1].
    """
    per_class = max(1, math.ceil(config.train.val_images / config.model.num_classes))
    images, labels = sample_by_class(
        model, config, per_class, config.generate.sample_guidance, steps=1, seed=config.train.seed + 99, device=device
    )
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    write_png(grid_path, class_grid(images, per_class, VALIDATION_GRID_COLUMNS))
    predicted = load_classifier(device=str(device)).predict(images)  # (N,)
    return float((predicted == labels).mean())


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    run_dir: Path
    final_checkpoint: Path
    steps: int
    val_psnr_db: float | None
    parameters: int
    seconds: float
    sample_accuracy: float | None = None  # generators only: digit accuracy of the last validation samples
    sample_grid: Path | None = None  # generators only: the last validation sample grid


@dataclass
class RunPaths:
    run_dir: Path

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.safetensors"

    @property
    def final(self) -> Path:
        return self.run_dir / "checkpoints" / "final.safetensors"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.run_dir / "curves.png"

    def step_checkpoint(self, step: int) -> Path:
        return self.run_dir / "checkpoints" / f"step-{step:06d}.safetensors"

    def sample_grid(self, step: int) -> Path:
        return self.run_dir / "samples" / f"step-{step:06d}.png"


def read_metrics(path: Path) -> list[dict]:
    """Read the records of a metrics.jsonl file, one JSON object per line."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _check_run_folder(paths: RunPaths, resume: bool) -> None:
    if not resume and paths.last.exists():
        raise UsageError(
            f"run folder {paths.run_dir} already contains a checkpoint; pass --resume to continue it "
            "or choose another --run-dir"
        )
    if resume and not paths.last.exists():
        raise UsageError(f"--resume: no checkpoint at {paths.last}; start without --resume")


def _check_resume_fits(checkpoint: Checkpoint, config: Config, path: Path) -> None:
    """Reject a resume whose config changes what the saved weights are."""
    saved = checkpoint.config
    for name, before, after in (
        ("task", saved.task, config.task),
        ("model", saved.model, config.model),
        ("objective", saved.objective, config.objective),
        ("data.channels", saved.data.channels, config.data.channels),
    ):
        if before != after:
            raise UsageError(
                f"--resume: the config changes {name} of the run in {path} (saved {before}, now {after}); "
                "remove that setting or start a new --run-dir"
            )


def _load_initial_weights(model: nn.Module, init_from: Path, config: Config) -> None:
    """Load a checkpoint's weights into `model`. A generator's weights get zeros for the restorer's y channels."""
    start = load_checkpoint(init_from)
    weights = start.section("model")
    if start.config.task == "generate" and config.task == "restore":
        weights = restorer_weights(weights, model, init_from)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise UsageError(
            f"checkpoint {init_from} does not fit this config ({str(error).splitlines()[0]}); "
            "use a checkpoint with the same model preset, objective and channels"
        ) from error


def _inference_checkpoint(
    config: Config, ema: nn.Module, step: int, val_psnr: float | None, sample_accuracy: float | None, seconds: float
) -> Checkpoint:
    """Return a checkpoint of the EMA weights alone, the form that `restore`, `evaluate` and `finetune` read."""
    generating = config.task == "generate"
    meta = {
        "step": step,
        "val_psnr_db": val_psnr,
        "kind": "generator" if generating else "restorer",
        "train_seconds": round(seconds, 1),
    }
    if generating:
        meta["sample_accuracy"] = sample_accuracy
    return Checkpoint(tensors={f"model.{k}": v for k, v in ema.state_dict().items()}, config=config, meta=meta)


def _training_checkpoint(
    config: Config,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    val_psnr: float | None,
    sample_accuracy: float | None = None,
) -> Checkpoint:
    """Everything `--resume` needs: EMA and raw weights, AdamW moments, step and RNG state."""
    tensors = {f"model.{k}": v for k, v in ema.state_dict().items()}
    tensors.update({f"train.model.{k}": v for k, v in model.state_dict().items()})
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["train.rng.cpu"] = torch.get_rng_state()
    meta = {"step": step, "val_psnr_db": val_psnr, "param_groups": groups, "kind": "training", "task": config.task}
    if config.task == "generate":
        meta["sample_accuracy"] = sample_accuracy
    return Checkpoint(tensors=tensors, config=config, meta=meta)


def train(
    config: Config, monitor: Monitor | None = None, resume: bool = False, init_from: Path | None = None
) -> TrainingResult:
    """Train a restorer as `config` specifies, optionally from a checkpoint's weights; write the run folder.

    With `task` 'generate' it trains a class-conditional generator instead: noise source, MNIST
    labels with dropout to the null class, a guidance scale per row, and validation by sample grids
    and their digit accuracy in place of PSNR.
    Under torchrun every process runs this function; only rank 0 writes files and reports progress.
    """
    paths = RunPaths(Path(config.train.run_dir))
    _check_run_folder(paths, resume)

    # Setup: processes and device, data, model, EMA, optimiser.
    context = DistributedContext.from_environment(config.device)
    context.check_batch_size(config.train.batch_size)
    device = context.device
    set_threads(config.threads)
    monitor = monitor if monitor is not None and context.is_main else SilentMonitor()
    data = TrainingData(config)
    torch.manual_seed(config.train.seed)
    model = model_for(config).to(device)
    if init_from is not None and not resume:
        _load_initial_weights(model, init_from, config)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, betas=(0.9, 0.99), weight_decay=config.train.weight_decay
    )
    parameters = count_parameters(model)

    # Setup: resume or start the run folder.
    start_step = 0
    val_psnr: float | None = None
    generating = config.task == "generate"
    sample_accuracy: float | None = None
    sample_grid: Path | None = None
    if resume:
        checkpoint = load_checkpoint(paths.last)
        _check_resume_fits(checkpoint, config, paths.last)
        model.load_state_dict(checkpoint.section("train.model"))
        ema.load_state_dict(checkpoint.section("model"))
        _load_optimizer(optimizer, checkpoint)
        start_step = int(checkpoint.meta["step"])
        torch.set_rng_state(checkpoint.tensors["train.rng.cpu"])
        val_psnr = checkpoint.meta.get("val_psnr_db")
        sample_accuracy = checkpoint.meta.get("sample_accuracy")
    trained = context.wrap(model)  # the module gradients flow through
    if context.is_main:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        (paths.run_dir / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")

    processes = f", {context.world_size} processes" if context.world_size > 1 else ""
    monitor.note(f"model {config.model.preset}: {parameters:,} parameters on {device}{processes}")
    monitor.start(config.train.steps, start_step, f"training {config.objective.kind}")
    started = time.perf_counter()
    window_start, window_steps = started, 0
    sums = {"loss": 0.0, "mse": 0.0}
    generator = torch.Generator(device=device)
    metrics_file = open(paths.metrics, "a", encoding="utf-8") if context.is_main else None

    try:
        for step in range(start_step, config.train.steps):
            # 1. Batch: this process's slice of the step's clean and corrupted images, in network space.
            #    A generator gets labels (some dropped to the null class) and guidance scales instead of y.
            generator.manual_seed(config.train.seed * 1_000_003 + step + 7_919 * context.rank)
            classes = None
            if generating:
                clean, digits = data.labelled_batch(step)
                x = context.shard(to_network(torch.from_numpy(clean).to(device)))  # (B, C, H, W)
                labels = context.shard(torch.from_numpy(digits).to(device))  # (B,)
                classes = draw_class_condition(labels, config.generate, config.model.num_classes, generator)
                y = None
            else:
                clean, noisy = data.batch(step)
                x = context.shard(to_network(torch.from_numpy(clean).to(device)))  # (B, C, H, W)
                y = context.shard(to_network(torch.from_numpy(noisy).to(device)))  # (B, C, H, W)

            # 2. Loss and a clipped optimiser step at the scheduled learning rate.
            learning_rate = config.train.lr * learning_rate_factor(step, config)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            model.train()
            with autocast(device):
                output = training_loss(trained, x, y, config.objective, generator, jvp_model=model, classes=classes)
            if not torch.isfinite(output.loss):
                raise TrainingDiverged(
                    f"loss became {output.loss.item()} at step {step}; the last good checkpoint is "
                    f"{paths.last if paths.last.exists() else 'not written yet'}. Lower train.lr or "
                    "train.grad_clip and resume"
                )
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            update_ema(ema, model, min(config.train.ema_decay, (1 + step) / (10 + step)))

            sums["loss"] += output.loss.item()
            sums["mse"] += output.mse.item()
            window_steps += 1
            done = step + 1
            if not context.is_main:
                continue

            # 3. Log averages over the window since the last line (rank 0's share of the batch).
            if done % config.train.log_every == 0 or done == config.train.steps:
                elapsed = time.perf_counter() - window_start
                stats = {
                    "step": done,
                    "loss": sums["loss"] / window_steps,
                    "mse": sums["mse"] / window_steps,
                    "lr": learning_rate,
                    "grad_norm": float(grad_norm),
                    "steps_per_s": window_steps / max(elapsed, 1e-9),
                    "images_per_s": window_steps * config.train.batch_size / max(elapsed, 1e-9),
                }
                metrics_file.write(json.dumps(stats) + "\n")
                metrics_file.flush()
                monitor.update(done, stats)
                sums = {"loss": 0.0, "mse": 0.0}
                window_start, window_steps = time.perf_counter(), 0

            # 4. Validate the EMA weights and write checkpoints.
            if (done % config.train.val_every == 0 or done == config.train.steps) and generating:
                sample_grid = paths.sample_grid(done)
                sample_accuracy = validation_samples(ema, config, device, sample_grid)
                record = {"step": done, "sample_accuracy": sample_accuracy}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                monitor.update(done, record)
                plot_training_curves(read_metrics(paths.metrics), paths.curves)
            elif done % config.train.val_every == 0 or done == config.train.steps:
                val_psnr = validation_psnr(ema, data, config, device)
                record = {"step": done, "val_psnr_db": val_psnr}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                monitor.update(done, record)
                plot_training_curves(read_metrics(paths.metrics), paths.curves)
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                save_checkpoint(
                    paths.last, _training_checkpoint(config, model, ema, optimizer, done, val_psnr, sample_accuracy)
                )
            if config.train.keep_every and done % config.train.keep_every == 0:
                seconds = time.perf_counter() - started
                save_checkpoint(paths.step_checkpoint(done), _inference_checkpoint(config, ema, done, val_psnr, sample_accuracy, seconds))
    finally:
        if metrics_file is not None:
            metrics_file.close()
        context.close()

    monitor.stop()
    seconds = time.perf_counter() - started
    if context.is_main:
        final = _inference_checkpoint(config, ema, config.train.steps, val_psnr, sample_accuracy, seconds)
        save_checkpoint(paths.final, final)
    return TrainingResult(
        paths.run_dir, paths.final, config.train.steps, val_psnr, parameters, seconds, sample_accuracy, sample_grid
    )
