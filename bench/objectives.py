"""Objectives side by side: MeanFlow, iMF, flow matching and regression at equal wall-clock time.

Usage: python -m bench.objectives [--minutes 10] [--objectives meanflow,imf,flow_matching,regression]
       [--config configs/meanflow.toml] [--out docs/results/objectives.json]

Every objective trains the same network (the config's preset) on `mixed` with the same batch,
seed and one CPU thread. A 100-step calibration run measures each objective's steps per second.
The real run then gets the number of steps that fills `--minutes` at that rate, so its warm-up
and cosine schedule end with the budget. Each final checkpoint is scored on the 500 protocol test images of
`mixed` at 1, 2 and 4 NFE (regression: 1 NFE, its only one). Run folders go to runs/bench-objectives/.
The JSON keeps every number; the Markdown table goes to standard output.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.protocol_table import cpu_name
from restorecli.config import build_config
from restorecli.evaluation import evaluate
from restorecli.restoration import Restorer
from restorecli.training import read_metrics, train

OBJECTIVES = ("meanflow", "imf", "flow_matching", "regression")
CALIBRATION_STEPS = 100


def measured_rate(config_path: Path, objective: str, folder: Path) -> float:
    """Measure the steps per second of one objective, from the log windows after the first 20 steps."""
    settings = {
        "objective": {"kind": objective},
        "train": {
            "steps": CALIBRATION_STEPS, "log_every": 20, "val_every": 10 * CALIBRATION_STEPS,
            "checkpoint_every": 10 * CALIBRATION_STEPS, "warmup_steps": 10, "run_dir": str(folder),
        },
    }
    result = train(build_config(config_path, settings))
    rates = [record["steps_per_s"] for record in read_metrics(result.run_dir / "metrics.jsonl") if "steps_per_s" in record]
    return sum(rates[1:]) / len(rates[1:])


def run_objective(config_path: Path, objective: str, minutes: float, root: Path) -> dict:
    rate = measured_rate(config_path, objective, root / f"calibrate-{objective}")
    steps = max(50, int(rate * minutes * 60))
    settings = {
        "objective": {"kind": objective},
        "train": {
            "steps": steps, "warmup_steps": min(500, steps // 5), "val_every": steps,
            "checkpoint_every": steps, "log_every": 50, "run_dir": str(root / objective),
        },
    }
    result = train(build_config(config_path, settings))

    restorer = Restorer.load(result.final_checkpoint, "cpu")
    nfes = (1,) if objective == "regression" else (1, 2, 4)
    report = evaluate(restorer, "mixed", steps=nfes, with_baselines=False).report.to_dict()
    models = [method for method in report["methods"] if method["kind"] == "model"]
    return {
        "objective": objective,
        "calibrated_steps_per_s": rate,
        "steps": steps,
        "train_seconds": result.seconds,
        "checkpoint": str(result.final_checkpoint),
        "results": [
            {"nfe": m["nfe"], "psnr_db": m["psnr_db"], "ssim": m["ssim"], "images_per_s": m["images_per_s"]}
            for m in models
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per objective")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--config", type=Path, default=Path("configs/meanflow.toml"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/objectives.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-objectives"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = [run_objective(args.config, name, args.minutes, args.runs) for name in args.objectives.split(",")]

    machine = f"{cpu_name()}, 1 thread, torch {torch.__version__}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"protocol": "mnist5k-v1", "noise": "mixed", "minutes": args.minutes, "machine": machine, "rows": rows}
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    print(f"machine: {machine}; {time.perf_counter() - started:.0f} s in all\n")
    print("| objective | steps (steps/s) | training min | NFE | PSNR dB | SSIM | images/s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for result in row["results"]:
            print(
                f"| {row['objective']} | {row['steps']} ({row['calibrated_steps_per_s']:.2f}) | "
                f"{row['train_seconds'] / 60:.1f} | {result['nfe']} | {result['psnr_db']:.2f} | "
                f"{result['ssim']:.3f} | {result['images_per_s']:.0f} |"
            )


if __name__ == "__main__":
    main()
