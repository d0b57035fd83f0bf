"""Bad input through the real entry point: one error line naming the value and the fix, exit code
2 for usage errors and 1 for runtime errors, no traceback unless --debug, and no file touched.
A config error may add one line per invalid field.

Every call runs in a folder of its own, prepared with the same input files, and the test compares
a snapshot of that folder before and after the call.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import CliResult, run_cli
from restorecli.checkpoint import Checkpoint, load_checkpoint, model_for, save_checkpoint
from restorecli.config import Config
from restorecli.data import mnist
from restorecli.data.images import write_png

# Subprocess start-up (importing torch) dominates each call, so the calls run side by side.
WORKERS = max(2, min(4, os.cpu_count() or 2))

@dataclass(frozen=True)
class Call:
    """A `restorecli` argument list, run with its own folder as the working directory.

    An argument "{checkpoint}" is replaced by the path of the tiny training run's final checkpoint.
    With `with_run`, the folder first gets a copy of the tiny training run as `run/`.
    """

    args: tuple[str, ...]
    with_run: bool = False


@dataclass(frozen=True)
class ErrorCase:
    """A call that must fail with `exit_code` and a message containing each of `words`."""

    call: Call
    exit_code: int
    words: tuple[str, ...]
    lines: int = 1  # a config error has a header line, then one line per invalid field


@dataclass
class Outcome:
    """A call's result, and snapshots of its folder before and after the call."""

    folder: Path
    result: CliResult
    before: dict[str, bytes] = field(repr=False)
    after: dict[str, bytes] = field(repr=False)


def restore_args(*args: str) -> tuple[str, ...]:
    """Return the arguments of `restorecli restore ARGS` with the tiny run's checkpoint."""
    return ("restore", *args, "--checkpoint", "{checkpoint}")


ERROR_CASES = {
    # Unreadable input images.
    "corrupt-missing-input": ErrorCase(Call(("corrupt", "missing.png", "out.png")), 1, ("missing.png", "not found")),
    "corrupt-empty-input": ErrorCase(Call(("corrupt", "empty.png", "out.png")), 1, ("empty.png", "empty", "PNG or JPEG")),
    "corrupt-truncated-png": ErrorCase(Call(("corrupt", "truncated.png", "out.png")), 1, ("truncated.png", "PNG or JPEG")),
    "corrupt-text-named-png": ErrorCase(Call(("corrupt", "notes.png", "out.png")), 1, ("notes.png", "PNG or JPEG")),
    "restore-truncated-png": ErrorCase(Call(restore_args("truncated.png", "out.png")), 1, ("truncated.png", "PNG or JPEG")),
    "restore-folder-with-truncated-png": ErrorCase(
        Call(restore_args("half-broken", "half-broken-out")), 1, ("b.png", "PNG or JPEG")
    ),
    # Config files.
    "corrupt-unknown-config-key": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--config", "unknown-key.toml")),
        2,
        ("unknown-key.toml", "train.stepz", "unknown key"),
        lines=2,
    ),
    "train-unknown-config-key": ErrorCase(
        Call(("train", "--config", "unknown-key.toml", "--run-dir", "new-run", "--steps", "1")),
        2,
        ("unknown-key.toml", "train.stepz", "unknown key"),
        lines=2,
    ),
    "corrupt-invalid-toml": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--config", "invalid.toml")), 2, ("invalid.toml", "not valid TOML")
    ),
    # Corruption kinds and levels.
    "corrupt-unknown-noise": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--noise", "speckle")), 2, ("speckle", "salt-pepper")
    ),
    "evaluate-unknown-noise": ErrorCase(
        Call(("evaluate", "--noise", "speckle", "--checkpoint", "{checkpoint}", "--report", "report.json")),
        2,
        ("speckle", "salt-pepper"),
    ),
    "corrupt-amount-above-range": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--noise", "salt-pepper", "--amount", "1.5")),
        2,
        ("--amount", "1.5", "1.0"),
    ),
    "corrupt-sigma-below-range": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--noise", "gaussian", "--sigma", "-0.1")), 2, ("--sigma", "-0.1", "0.0")
    ),
    "corrupt-level-of-other-kind": ErrorCase(
        Call(("corrupt", "digit.png", "out.png", "--noise", "gaussian", "--amount", "0.2")),
        2,
        ("--amount", "gaussian", "remove"),
    ),
    # Checkpoints.
    "restore-random-bytes-checkpoint": ErrorCase(
        Call(("restore", "digit.png", "out.png", "--checkpoint", "random.safetensors")),
        1,
        ("random.safetensors", "not a safetensors file"),
    ),
    "restore-foreign-safetensors": ErrorCase(
        Call(("restore", "digit.png", "out.png", "--checkpoint", "foreign.safetensors")),
        1,
        ("foreign.safetensors", "not a restorecli checkpoint"),
    ),
    "restore-weights-not-matching-config": ErrorCase(
        Call(("restore", "digit.png", "out.png", "--checkpoint", "mismatched.safetensors")),
        1,
        ("mismatched.safetensors", "does not match"),
    ),
    "evaluate-rgb-checkpoint": ErrorCase(
        Call(("evaluate", "--noise", "block", "--checkpoint", "rgb.safetensors", "--report", "report.json")),
        2,
        ("3-channel", "1-channel"),
    ),
    "init-from-rgb-checkpoint-on-mnist": ErrorCase(
        Call(("train", "--init-from", "rgb.safetensors", "--steps", "1", "--run-dir", "new-run")),
        2,
        ("mnist", "3 channels", "--data"),
    ),
    # Output paths.
    "restore-over-input": ErrorCase(Call(restore_args("digit.png", "digit.png")), 2, ("digit.png", "input")),
    "restore-existing-output": ErrorCase(Call(restore_args("digit.png", "existing.png")), 2, ("existing.png", "--overwrite")),
    "restore-output-not-png": ErrorCase(Call(restore_args("digit.png", "out.jpg")), 2, ("out.jpg", ".png")),
    "restore-folder-into-itself": ErrorCase(Call(restore_args("digits", "digits")), 2, ("digits", "another")),
    "restore-folder-existing-output": ErrorCase(
        Call(restore_args("digits", "digits-out")), 2, ("a.png", "--overwrite")
    ),
    # Network evaluations.
    "restore-zero-steps": ErrorCase(Call((*restore_args("digit.png", "out.png"), "--steps", "0")), 2, ("--steps 0", "1 or more")),
    "restore-unknown-velocity": ErrorCase(
        Call((*restore_args("digit.png", "out.png"), "--velocity", "sideways")), 2, ("sideways", "average, instantaneous")
    ),
    "restore-meanflow-instantaneous": ErrorCase(
        Call((*restore_args("digit.png", "out.png"), "--velocity", "instantaneous")), 2, ("meanflow", "velocity 'average'", "imf checkpoint")
    ),
    "evaluate-zero-steps": ErrorCase(
        Call(("evaluate", "--noise", "block", "--checkpoint", "{checkpoint}", "--steps", "0", "--report", "report.json")),
        2,
        ("--steps 0", "1 or more"),
    ),
    "evaluate-steps-not-numbers": ErrorCase(
        Call(("evaluate", "--noise", "block", "--checkpoint", "{checkpoint}", "--steps", "1,two", "--report", "report.json")),
        2,
        ("--steps 1,two", "1,2,4,8"),
    ),
    "evaluate-steps-repeated": ErrorCase(
        Call(("evaluate", "--noise", "block", "--checkpoint", "{checkpoint}", "--steps", "2,2", "--report", "report.json")),
        2,
        ("--steps 2,2", "once"),
    ),
    "evaluate-limit-zero": ErrorCase(
        Call(("evaluate", "--noise", "block", "--checkpoint", "{checkpoint}", "--limit", "0", "--report", "report.json")),
        2,
        ("--limit 0", "1 to 500"),
    ),
    # Run folders.
    "train-resume-without-checkpoint": ErrorCase(
        Call(("train", "--resume", "--run-dir", "new-run", "--steps", "2")), 2, ("new-run", "without --resume")
    ),
    "train-into-run-with-checkpoint": ErrorCase(
        Call(("train", "--run-dir", "run", "--steps", "8"), with_run=True), 2, ("run", "--resume", "--run-dir")
    ),
    "train-resume-with-other-model": ErrorCase(
        Call(("train", "--resume", "--run-dir", "run", "--model", "DiT-S/4", "--steps", "8"), with_run=True),
        2,
        ("DiT-S/4",),
    ),
}

OTHER_CALLS = {
    "debug-after-command": Call(("corrupt", "missing.png", "out.png", "--debug")),
    "debug-before-command": Call(("--debug", "corrupt", "missing.png", "out.png")),
    "restore-with-overwrite": Call((*restore_args("digit.png", "existing.png"), "--overwrite")),
}


# ----------------------------------------------------------------------------------------------
# Fixtures: the input files and every call, run once
# ----------------------------------------------------------------------------------------------


def write_inputs(folder: Path, tiny_checkpoint: Path) -> None:
    """Write the files that the calls read: good, broken and foreign images, checkpoints, configs."""
    folder.mkdir(parents=True)
    digit = mnist.load_test_split().images[0]
    write_png(folder / "digit.png", digit)
    write_png(folder / "existing.png", np.zeros_like(digit))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "digit.png").read_bytes()[:40])
    (folder / "notes.png").write_text("not an image, only text\n", encoding="utf-8")

    for name in ("digits", "half-broken", "digits-out"):
        (folder / name).mkdir()
    write_png(folder / "digits" / "a.png", digit)
    write_png(folder / "digits" / "b.png", 1.0 - digit)
    write_png(folder / "digits-out" / "a.png", np.zeros_like(digit))
    write_png(folder / "half-broken" / "a.png", digit)
    (folder / "half-broken" / "b.png").write_bytes((folder / "digit.png").read_bytes()[:40])

    rng = np.random.default_rng(0)
    (folder / "random.safetensors").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    save_file({"weight": torch.zeros(4)}, str(folder / "foreign.safetensors"))
    # Real restorecli weights under a config that names a larger preset.
    tiny = load_checkpoint(tiny_checkpoint)
    larger = tiny.config.model_copy(update={"model": tiny.config.model.model_copy(update={"preset": "DiT-S/4"})})
    save_checkpoint(folder / "mismatched.safetensors", Checkpoint(tensors=tiny.tensors, config=larger, meta=tiny.meta))
    # An untrained 3-channel DiT-T/4 for 16x16 RGB images: valid, but it does not fit the 1-channel protocol.
    rgb_config = Config.model_validate({"model": {"preset": "DiT-T/4"}, "data": {"channels": 3, "image_size": 16}})
    rgb_weights = {f"model.{name}": value for name, value in model_for(rgb_config).state_dict().items()}
    save_checkpoint(folder / "rgb.safetensors", Checkpoint(tensors=rgb_weights, config=rgb_config, meta={"step": 0}))

    (folder / "unknown-key.toml").write_text("[train]\nstepz = 3\n", encoding="utf-8")
    (folder / "invalid.toml").write_text("[train\nsteps = 3\n", encoding="utf-8")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Map each path under `folder` to its bytes (folders to a marker), to detect any change."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<folder>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_run, tiny_checkpoint) -> dict[str, Outcome]:
    """Run every call of ERROR_CASES and OTHER_CALLS in a prepared folder of its own."""
    template = tmp_path_factory.mktemp("inputs") / "template"
    write_inputs(template, tiny_checkpoint)
    calls = {name: case.call for name, case in ERROR_CASES.items()} | OTHER_CALLS
    root = tmp_path_factory.mktemp("calls")
    replacements = {"{checkpoint}": str(tiny_checkpoint)}

    def run_in_own_folder(name: str) -> Outcome:
        call = calls[name]
        folder = root / name
        shutil.copytree(template, folder)
        if call.with_run:
            shutil.copytree(tiny_run, folder / "run")
        before = snapshot(folder)
        result = run_cli(*(replacements.get(arg, arg) for arg in call.args), cwd=folder)
        return Outcome(folder, result, before, snapshot(folder))

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return dict(zip(calls, pool.map(run_in_own_folder, calls)))


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def message_lines(result: CliResult) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ERROR_CASES)
def test_bad_input_fails_cleanly(outcomes, name):
    case = ERROR_CASES[name]
    outcome = outcomes[name]
    output = outcome.result.output

    assert outcome.result.returncode == case.exit_code, output
    assert "Traceback" not in output
    lines = message_lines(outcome.result)
    assert len(lines) == case.lines, output
    assert lines[0].startswith("error: "), output
    message = " ".join(lines)
    for word in case.words:
        assert word in message, f"{word!r} missing from: {output}"


@pytest.mark.parametrize("name", ERROR_CASES)
def test_bad_input_changes_no_file(outcomes, name):
    outcome = outcomes[name]

    created = sorted(set(outcome.after) - set(outcome.before))
    removed = sorted(set(outcome.before) - set(outcome.after))
    changed = sorted(path for path in outcome.before.keys() & outcome.after.keys() if outcome.before[path] != outcome.after[path])
    assert created == [], outcome.result.output
    assert removed == [], outcome.result.output
    assert changed == [], outcome.result.output


@pytest.mark.parametrize("name", ["debug-after-command", "debug-before-command"])
def test_debug_shows_traceback(outcomes, name):
    outcome = outcomes[name]
    output = outcome.result.output

    assert outcome.result.returncode == 1, output
    assert "Traceback" in output
    assert "RestoreCliError" in output
    last_line = message_lines(outcome.result)[-1]
    assert last_line.startswith("error: "), output
    assert "missing.png" in last_line
    assert outcome.after == outcome.before


def test_restore_overwrite_replaces_output(outcomes):
    outcome = outcomes["restore-with-overwrite"]

    assert outcome.result.returncode == 0, outcome.result.output
    assert outcome.after["existing.png"] != outcome.before["existing.png"]
    assert set(outcome.after) == set(outcome.before)
    with Image.open(outcome.folder / "existing.png") as image:
        assert image.format == "PNG"
        assert image.size == (28, 28)
