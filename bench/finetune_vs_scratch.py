"""Does a pretrained generator help a restorer? Scratch against finetune at equal steps, batch and seed.

Usage: python -m bench.finetune_vs_scratch [--config configs/finetune-bench.toml] [--runs runs/bench-finetune]
       [--out docs/results/finetune_vs_scratch]

Three runs of `restorecli`, all with the same config file (its steps, batch, seed and schedule):
1. a class-conditional generator (`train --task generate`);
2. a restorer from scratch (`train`);
3. a restorer finetuned from the generator's final weights (`finetune --from`).
A run whose final checkpoint exists is not repeated. Both restorers keep their EMA weights every
`train.keep_every` steps; each kept checkpoint is scored on the 500 protocol test images of `mixed`
at 1 NFE. Writes OUT.json, OUT.png (test PSNR against step) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.protocol_table import cpu_name
from restorecli.checkpoint import load_checkpoint
from restorecli.evaluation import evaluate
from restorecli.restoration import Restorer


def run_once(name: str, arguments: list[str], folder: Path) -> Path:
    """Run one `restorecli` command unless its final checkpoint is already there."""
    final = folder / "checkpoints" / "final.safetensors"
    if final.is_file():
        print(f"{name}: reusing {final}")
        return final
    command = [sys.executable, "-m", "restorecli", *arguments, "--run-dir", str(folder)]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)
    return final


def protocol_curve(folder: Path) -> list[dict]:
    """Score every kept checkpoint of one run: test PSNR and SSIM on mixed at 1 NFE, by step."""
    points = []
    for path in sorted((folder / "checkpoints").glob("step-*.safetensors")):
        checkpoint = load_checkpoint(path)
        restorer = Restorer.load(path, "cpu")
        report = evaluate(restorer, "mixed", steps=(1,), with_baselines=False).report.to_dict()
        model = next(method for method in report["methods"] if method["kind"] == "model")
        points.append({
            "step": checkpoint.meta["step"],
            "train_seconds": checkpoint.meta["train_seconds"],
            "psnr_db": model["psnr_db"],
            "ssim": model["ssim"],
        })
    return points


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in curves.items():
        axis.plot([p["step"] for p in points], [p["psnr_db"] for p in points], marker="o", label=name)
    axis.set_xlabel("training step")
    axis.set_ylabel("test PSNR, mixed, 1 NFE (dB)")
    axis.set_title("Restorer from scratch and finetuned from a generator")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/finetune-bench.toml"))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-finetune"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/finetune_vs_scratch"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = ["--config", str(args.config)]
    generator = run_once("generator", ["train", *config, "--task", "generate"], args.runs / "generator")
    run_once("scratch", ["train", *config], args.runs / "scratch")
    run_once("finetuned", ["finetune", *config, "--from", str(generator)], args.runs / "finetuned")

    curves = {name: protocol_curve(args.runs / name) for name in ("scratch", "finetuned")}
    generator_meta = load_checkpoint(generator).meta
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "protocol": "mnist5k-v1",
        "noise": "mixed",
        "nfe": 1,
        "machine": f"{cpu_name()}, 1 thread, torch {torch.__version__}",
        "config": str(args.config),
        "generator": {"steps": generator_meta["step"], "sample_accuracy": generator_meta.get("sample_accuracy")},
        "curves": curves,
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot(curves, args.out.with_suffix(".png"))

    print(f"\ngenerator: {generator_meta['step']} steps, sample digit accuracy {generator_meta.get('sample_accuracy')}")
    print("| step | scratch PSNR dB / SSIM | finetuned PSNR dB / SSIM | difference dB |")
    print("|---|---|---|---|")
    for scratch, finetuned in zip(curves["scratch"], curves["finetuned"]):
        print(
            f"| {scratch['step']} | {scratch['psnr_db']:.2f} / {scratch['ssim']:.3f} | "
            f"{finetuned['psnr_db']:.2f} / {finetuned['ssim']:.3f} | {finetuned['psnr_db'] - scratch['psnr_db']:+.2f} |"
        )


if __name__ == "__main__":
    main()
