"""Figures as PNG files: training curves and the evaluation picture grid (matplotlib, no display).

The figures are drawn with matplotlib's object API on an Agg canvas, so nothing here needs a
display or changes pyplot's global state, and every file is written atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from restorecli.atomic import write_atomically
from restorecli.evaluation import Evaluation, MethodResult
from restorecli.metrics import psnr

WORST_DIGITS = 4
GRID_GAP = 2


def tile(rows: list[np.ndarray], gap: int = GRID_GAP) -> np.ndarray:
    """Tile rows of (N, 1, H, W) images into one (1, H', W') picture with grey gaps."""
    height, width = rows[0].shape[-2:]
    count = rows[0].shape[0]
    canvas = np.full((1, len(rows) * (height + gap) + gap, count * (width + gap) + gap), 0.5, dtype=np.float32)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            canvas[:, top : top + height, left : left + width] = image
    return canvas


def save_figure(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    write_atomically(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=120))


# ----------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------


def plot_training_curves(records: list[dict], path: Path) -> None:
    """Plot loss, unweighted MSE and validation PSNR against the step from metrics.jsonl records."""
    training = [record for record in records if "loss" in record]
    validation = [record for record in records if "val_psnr_db" in record]

    figure = Figure(figsize=(12, 3.4), layout="constrained")
    loss_axes, mse_axes, psnr_axes = figure.subplots(1, 3)

    loss_axes.plot([r["step"] for r in training], [r["loss"] for r in training], color="tab:blue")
    loss_axes.set_title("training loss (as minimised)")
    mse_axes.plot([r["step"] for r in training], [r["mse"] for r in training], color="tab:orange")
    mse_axes.set_title("unweighted MSE of the prediction")
    if training and min(r["mse"] for r in training) > 0:
        mse_axes.set_yscale("log")
    psnr_axes.plot([r["step"] for r in validation], [r["val_psnr_db"] for r in validation], "o-", color="tab:green")
    psnr_axes.set_title("validation PSNR, 1 NFE (dB)")

    for axes in (loss_axes, mse_axes, psnr_axes):
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    save_figure(figure, path)


# ----------------------------------------------------------------------------------------------
# Evaluation grid
# ----------------------------------------------------------------------------------------------


def grid_columns(evaluation: Evaluation, model: MethodResult, worst: int = WORST_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed picks (the first test digit of each class) and the `worst` lowest-PSNR others."""
    labels = evaluation.images.labels
    _, fixed = np.unique(labels, return_index=True)
    scores = psnr(evaluation.images.clean, evaluation.output_of(model))  # (N,)
    order = [index for index in np.argsort(scores, kind="stable") if index not in set(fixed)]
    return fixed, np.asarray(order[:worst], dtype=int)


def best_baseline_row(evaluation: Evaluation) -> MethodResult | None:
    baselines = [method for method in evaluation.report.methods if method.kind == "baseline"]
    return max(baselines, key=lambda method: method.psnr_db) if baselines else None


def plot_evaluation_grid(evaluations: list[Evaluation], path: Path) -> None:
    """Draw clean / corrupted / restored / best-baseline rows for fixed and worst-restored digits.

    There is one panel per corruption kind. The model row uses the first NFE evaluated, and the
    worst digits are the ones with the lowest PSNR after it.
    """
    figure = Figure(figsize=(10, 2.6 * len(evaluations)), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(len(evaluations), 1))

    for axes, evaluation in zip(axes_list, evaluations):
        model = next(method for method in evaluation.report.methods if method.kind == "model")
        baseline = best_baseline_row(evaluation)
        fixed, worst = grid_columns(evaluation, model)
        picks = np.concatenate([fixed, worst])

        rows = [evaluation.images.clean[picks], evaluation.images.corrupted[picks], evaluation.output_of(model)[picks]]
        names = ["clean", "corrupted", f"model, {model.nfe} NFE"]
        if baseline is not None:
            rows.append(evaluation.output_of(baseline)[picks])
            names.append(textwrap.fill(baseline.name, 24))

        scores = psnr(evaluation.images.clean[picks], evaluation.output_of(model)[picks])
        step = 28 + GRID_GAP
        axes.imshow(tile(rows)[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_yticks([GRID_GAP + step * i + 14 for i in range(len(rows))], names, fontsize=8)
        axes.set_xticks(
            [GRID_GAP + step * i + 14 for i in range(len(picks))],
            [f"{evaluation.images.labels[i]}\n{s:.1f}" for i, s in zip(picks, scores)],
            fontsize=7,
        )
        axes.axvline(GRID_GAP + step * len(fixed) - GRID_GAP / 2 - 0.5, color="red", linewidth=1.5)
        axes.set_title(
            f"{evaluation.report.noise}: first test digit of each class | {len(worst)} worst-restored "
            f"(label, model PSNR dB below)",
            fontsize=9,
        )
    save_figure(figure, path)

