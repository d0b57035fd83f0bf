"""Two-process training on CPU with torchrun (gloo on loopback) through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from restorecli.checkpoint import load_checkpoint


def test_torchrun_two_processes_train(tmp_path, tiny_config):
    run_dir = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "restorecli", "train", "--config", str(tiny_config), "--run-dir", str(run_dir),
        "--model", "DiT-T/4", "--steps", "4", "--batch-size", "8", "--device", "cpu",
    ]

    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [2, 4]  # rank 0 writes, once
    final = load_checkpoint(run_dir / "checkpoints" / "final.safetensors")
    assert final.meta["step"] == 4
    assert "2 processes" in completed.stdout
