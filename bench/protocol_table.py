"""Protocol v1 numbers for one or more checkpoints on all five kinds, as JSON and a Markdown table.

Usage: python -m bench.protocol_table --checkpoint A.safetensors [--checkpoint B.safetensors]
       [--steps 1,2,4] [--velocity instantaneous] [--json docs/results/protocol.json] [--no-baselines]

Each kind runs the full `restorecli evaluate` protocol (500 test images) for every checkpoint;
the classical baselines run once per kind. The Markdown table goes to standard output.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from restorecli.corruptions import KINDS
from restorecli.evaluation import evaluate
from restorecli.meanflow import VELOCITIES
from restorecli.restoration import Restorer


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", type=Path, required=True)
    parser.add_argument("--steps", default="1", help="NFE per image, or a comma list such as 1,2,4")
    parser.add_argument("--json", type=Path, default=None, help="write all reports to this JSON file")
    parser.add_argument("--no-baselines", action="store_true", help="skip the classical restorers")
    parser.add_argument(
        "--velocity", choices=VELOCITIES, default=None,
        help="head the sampler of every imf checkpoint steps with (default: each checkpoint's restore_velocity)",
    )
    args = parser.parse_args()

    restorers = [Restorer.load(path, "auto") for path in args.checkpoint]
    for restorer in restorers:
        if args.velocity is not None and restorer.objective.kind == "imf":
            restorer.velocity = args.velocity
    reports = []
    started = time.perf_counter()
    for kind in KINDS:
        for index, restorer in enumerate(restorers):
            steps = tuple(int(part) for part in args.steps.split(","))
            evaluation = evaluate(restorer, kind, steps=steps, with_baselines=index == 0 and not args.no_baselines)
            reports.append(evaluation.report.to_dict())

    machine = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"protocol": reports[0]["protocol"], "machine": machine, "date": date.today().isoformat(), "reports": reports}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    print(f"machine: {machine}; {time.perf_counter() - started:.0f} s in all\n")
    print("| kind | method | NFE | PSNR dB | SSIM | images/s |")
    print("|---|---|---|---|---|---|")
    for report in reports:
        for method in report["methods"]:
            if method["kind"] != "model" and report["checkpoint"] != str(args.checkpoint[0]):
                continue
            name = method["name"] + (f" ({Path(report['checkpoint']).name})" if method["kind"] == "model" else "")
            nfe = "-" if method["nfe"] is None else method["nfe"]
            rate = "-" if method["images_per_s"] is None else f"{method['images_per_s']:.0f}"
            print(f"| {report['noise']} | {name} | {nfe} | {method['psnr_db']:.2f} | {method['ssim']:.3f} | {rate} |")


if __name__ == "__main__":
    main()
