"""Short pilot runs that compare training settings by validation PSNR on one CPU thread.

Usage: python -m bench.pilot NAME '{"model": {"time_scale": 10}}' [--steps 500] [--config FILE]

Trains on mixed corruptions with the config file (default: configs/meanflow.toml) plus the given
JSON overrides, for 500 steps with validation every 250 steps, into runs/pilot/NAME. Two pilots can run side by side
on a 2-core machine, one thread each. Read the results from runs/pilot/NAME/metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from restorecli.config import build_config
from restorecli.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object of config overrides")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--config", type=Path, default=Path("configs/meanflow.toml"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    settings = {
        "train": {
            "steps": args.steps, "val_every": 250, "log_every": 50, "checkpoint_every": 500,
            "warmup_steps": min(500, args.steps // 5), "run_dir": f"runs/pilot/{args.name}",
        }
    }
    for section, values in json.loads(args.overrides).items():
        settings.setdefault(section, {}).update(values)
    result = train(build_config(args.config, settings))
    print(f"{args.name}: validation PSNR {result.val_psnr_db:.2f} dB after {result.steps} steps")


if __name__ == "__main__":
    main()
