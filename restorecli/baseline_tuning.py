"""Tune the classical baselines by grid search on the validation rows and store the parameters.

Run from the repository root: OMP_NUM_THREADS=1 python -m restorecli.baseline_tuning
    [--kinds KIND [KIND ...]] [--limit N] [--output PATH]

For every pipeline in restorecli.baselines.PIPELINES, every point of its grid in GRIDS is scored by
the mean PSNR of the restored validation rows (row % 10 == 1 of MNIST-5k, which protocol v1 counts
as training rows), corrupted at evaluation level with `protocol_corrupt`. The best point of each
pipeline goes to restorecli/baselines.json with its grid, its validation PSNR and the rows it was
scored on. `restorecli.baselines` builds the restorers from that file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from restorecli.atomic import write_atomically
from restorecli.baselines import PARAMETERS_PATH, PIPELINES, TUNING_COMMAND, BaselineParametersError, Pipeline
from restorecli.corruptions import KINDS, CorruptionRecord, protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr

VALIDATION_SELECTION = "row % 10 == 1"
CRITERION = "mean PSNR (dB) of the restored validation rows, corrupted with protocol_corrupt at evaluation level"

TV_WEIGHTS = [0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2]
NL_MEANS_H = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
STRETCH_LOW = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
STRETCH_HIGH = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]

# The values searched for each tuned parameter, by (kind, pipeline key). A pipeline without tuned
# parameters has an empty grid and is only scored. The full search took 8 minutes (481 s) on one
# core of a 2-core CPU that was also running other jobs. The Richardson-Lucy grid and the last mixed
# grid take most of that time.
GRIDS: dict[tuple[str, str], dict[str, list[float]]] = {
    ("gaussian", "gaussian-filter"): {"sigma": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5]},
    ("gaussian", "tv-chambolle"): {"weight": TV_WEIGHTS},
    ("gaussian", "nl-means"): {"h": NL_MEANS_H},
    # BM3D takes about 0.3 s per image, so its grid stays short.
    ("gaussian", "bm3d"): {"sigma": [0.1, 0.15, 0.2]},
    ("gaussian", "nl-means-stretch"): {"h": NL_MEANS_H, "low": STRETCH_LOW, "high": STRETCH_HIGH},
    ("gaussian", "gaussian-filter-stretch-smoothing"): {
        "sigma": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "low": [0.2, 0.25, 0.3, 0.35, 0.4, 0.45],
        "high": [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8],
        "final_sigma": [0.3, 0.4, 0.5, 0.6, 0.7],
    },
    ("salt-pepper", "median"): {},
    ("salt-pepper", "switching-median"): {},
    ("salt-pepper", "impulse-inpainting-stretch"): {
        "passes": [1, 2, 3, 4],
        "low": [0.0, 0.02, 0.05, 0.1],
        "high": [0.9, 0.95, 1.0],
    },
    ("block", "inpaint-oracle-mask"): {},
    ("block", "inpaint-blind-mask"): {},
    ("block", "inpaint-opened-mask"): {"side": [2, 3, 4, 6, 8, 10, 12]},
    ("blur", "richardson-lucy-oracle-kernel"): {},
    ("blur", "wiener-oracle-kernel"): {"balance": [1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 3e-3, 1e-2, 3e-2]},
    ("blur", "richardson-lucy-stretch"): {
        "sigma": [1.0, 1.25, 1.5, 1.75, 2.0],
        "iterations": [50, 100, 150],
        "low": [0.0, 0.05, 0.1, 0.15],
        "high": [0.7, 0.75, 0.8, 0.85, 0.9, 1.0],
    },
    ("mixed", "median"): {},
    ("mixed", "switching-median-tv"): {"weight": TV_WEIGHTS},
    ("mixed", "inpaint-switching-median-tv"): {"weight": TV_WEIGHTS},
    ("mixed", "inpaint-switching-median-nl-means-stretch"): {
        "h": NL_MEANS_H,
        "low": STRETCH_LOW,
        "high": STRETCH_HIGH,
    },
    ("mixed", "impulse-block-inpainting-nl-means-stretch-smoothing"): {
        "passes": [1, 2, 3],
        "threshold": [0.4, 0.5, 0.6],
        "side": [5, 6, 7],
        "grow": [1, 2],
        "factor": [1.2, 1.6, 2.0, 2.5],
        "low": [0.1, 0.15, 0.2, 0.25],
        "high": [0.7, 0.8, 0.9],
        "final_sigma": [0.3, 0.5],
    },
}


@dataclass(frozen=True)
class ValidationImages:
    """The first validation rows of MNIST-5k, corrupted at evaluation level for one kind."""

    clean: np.ndarray  # (N, 1, 28, 28)
    corrupted: np.ndarray  # (N, 1, 28, 28)
    records: list[CorruptionRecord]
    rows: np.ndarray


@dataclass(frozen=True)
class SearchResult:
    parameters: dict[str, float]
    psnr_db: float
    grid_points: int


def validation_images(kind: str, limit: int | None = None) -> ValidationImages:
    split = mnist.load_validation_split()
    clean, rows = split.images[:limit], split.rows[:limit]
    pairs = [protocol_corrupt(image, kind, int(row)) for image, row in zip(clean, rows)]
    corrupted = np.stack([corrupted for corrupted, _ in pairs])
    return ValidationImages(clean=clean, corrupted=corrupted, records=[record for _, record in pairs], rows=rows)


def search_grid(pipeline: Pipeline, grid: dict[str, list[float]], images: ValidationImages) -> SearchResult:
    """Score every point of `grid` on `images`; return the point with the highest mean PSNR.

    On a tie the point that comes first in grid order wins. Every stage runs once per combination of
    its own and the earlier stages' values, so a cheap last stage (a contrast stretch) adds many grid
    points at little cost. The restored images are exactly those of `pipeline.restorer(...)`.
    """
    if set(grid) != set(pipeline.parameters):
        raise ValueError(
            f"the grid of {pipeline.kind}/{pipeline.key} covers {sorted(grid)}, "
            f"but the pipeline's parameters are {list(pipeline.parameters)}"
        )
    best: SearchResult | None = None
    grid_points = 0

    def visit(stage_index: int, inputs: list[np.ndarray], chosen: dict[str, float]) -> None:
        nonlocal best, grid_points
        if stage_index == len(pipeline.stages):
            restored = np.stack([pipeline.finish(image) for image in inputs])
            score = float(psnr(images.clean, restored).mean())
            grid_points += 1
            if best is None or score > best.psnr_db:
                best = SearchResult(parameters=dict(chosen), psnr_db=score, grid_points=0)
            return

        stage = pipeline.stages[stage_index]
        for combination in itertools.product(*(grid[name] for name in stage.parameters)):
            values = dict(zip(stage.parameters, combination))
            outputs = [stage.apply(image, record, **values) for image, record in zip(inputs, images.records)]
            visit(stage_index + 1, outputs, {**chosen, **values})

    visit(0, [pipeline.start(image) for image in images.corrupted], {})
    assert best is not None  # an empty list of values in the grid leaves nothing to score
    return SearchResult(parameters=best.parameters, psnr_db=best.psnr_db, grid_points=grid_points)


def tuning_entry(pipeline: Pipeline, grid: dict[str, list[float]], result: SearchResult, rows: np.ndarray) -> dict:
    """Return the baselines.json record of one tuned pipeline."""
    return {
        "name": pipeline.name.format(**result.parameters),
        "parameters": result.parameters,
        "grid": grid,
        "validation_psnr_db": result.psnr_db,
        "validation_rows": {
            "selection": VALIDATION_SELECTION,
            "count": len(rows),
            "first": int(rows[0]),
            "last": int(rows[-1]),
        },
    }


def tune_kind(kind: str, limit: int | None) -> dict[str, dict]:
    """Tune every pipeline of `kind`, print one line per pipeline, and return the entries by key."""
    images = validation_images(kind, limit)
    entries = {}
    for pipeline in PIPELINES:
        if pipeline.kind != kind:
            continue
        grid = GRIDS[(kind, pipeline.key)]
        started = time.perf_counter()
        result = search_grid(pipeline, grid, images)
        seconds = time.perf_counter() - started
        entries[pipeline.key] = tuning_entry(pipeline, grid, result, images.rows)
        chosen = ", ".join(f"{name} {value:g}" for name, value in result.parameters.items()) or "no parameters"
        print(
            f"{kind} / {pipeline.key}: {chosen} -> {result.psnr_db:.3f} dB on {len(images.rows)} rows "
            f"({result.grid_points} grid points, {seconds:.1f} s)",
            flush=True,
        )
    return entries


def _other_kind_entries(path: Path, kinds: Sequence[str]) -> dict[str, Any]:
    """Return the entries in `path` of the kinds that this run does not tune, for a partial run."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaselineParametersError(
            f"cannot keep the other kinds of baseline parameters file {path}: {error}; "
            f"tune all kinds to rewrite it: {TUNING_COMMAND}"
        ) from error
    tuned = document.get("baselines") if isinstance(document, dict) else None
    if not isinstance(tuned, dict):
        raise BaselineParametersError(
            f'baseline parameters file {path} has no "baselines" object; tune all kinds to rewrite it: {TUNING_COMMAND}'
        )
    return {kind: entries for kind, entries in tuned.items() if kind not in kinds}


def write_parameters(path: Path, tuned: dict[str, dict], other_kinds: dict[str, Any]) -> None:
    """Write the entries of the tuned kinds and of `other_kinds` to `path` atomically."""
    merged = {**other_kinds, **tuned}
    document = {
        "protocol": mnist.PROTOCOL_NAME,
        "criterion": CRITERION,
        "command": TUNING_COMMAND,
        "baselines": {kind: merged[kind] for kind in [*KINDS, *sorted(set(merged) - set(KINDS))] if kind in merged},
    }
    text = json.dumps(document, indent=2) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="corruption kinds to tune (default: all five)"
    )
    parser.add_argument(
        "--limit", type=_positive_int, help="score on the first N validation rows only (default: all 500)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=PARAMETERS_PATH,
        help=f"JSON file to write; a run over some kinds keeps the other kinds in it (default: {PARAMETERS_PATH})",
    )
    args = parser.parse_args(argv)

    kinds = list(dict.fromkeys(args.kinds))
    # A partial run reads the file first, so that a file it cannot merge into fails before the search.
    try:
        other_kinds = {} if set(kinds) == set(KINDS) else _other_kind_entries(args.output, kinds)
    except BaselineParametersError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    started = time.perf_counter()
    tuned = {kind: tune_kind(kind, args.limit) for kind in kinds}
    write_parameters(args.output, tuned, other_kinds)
    print(f"wrote {args.output} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
