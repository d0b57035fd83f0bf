"""The commands' happy paths, run through the real entry point (`python -m restorecli`) on real files."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CliResult, file_bytes, rgba_png, run_cli
from restorecli.checkpoint import load_checkpoint
from restorecli.corruptions import KINDS
from restorecli.data import mnist
from restorecli.data.images import write_png

COMMANDS = ("train", "finetune", "corrupt", "restore", "evaluate", "presets")

# A level option and a value other than the kind's evaluation level (mixed has no single level).
LEVEL_OPTIONS = {
    "gaussian": ("--sigma", "0.05"),
    "salt-pepper": ("--amount", "0.05"),
    "block": ("--side", "4"),
    "blur": ("--blur-sigma", "0.6"),
    "mixed": None,
}

# Subprocess start-up (importing torch) dominates each call, so independent calls run side by side.
WORKERS = max(2, min(4, os.cpu_count() or 2))


def run_side_by_side(*calls: tuple) -> list[CliResult]:
    """Run several `restorecli` argument lists at once; return their results in order."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda args: run_cli(*args), calls))


def read_png(path: Path) -> np.ndarray:
    """Read a PNG file's pixels, failing the test if the file is not a PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        return np.asarray(image)


def write_digits(folder: Path, count: int) -> list[Path]:
    """Write the first `count` protocol test digits as grey PNGs named 0.png, 1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    images = mnist.load_test_split().images[:count]
    paths = [folder / f"{index}.png" for index in range(count)]
    for path, image in zip(paths, images):
        write_png(path, image)
    return paths


# ----------------------------------------------------------------------------------------------
# corrupt
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_runs(tmp_path_factory) -> tuple[Path, dict[str, CliResult]]:
    """Corrupt one digit with each kind: twice with seed 3, and once at another level.

    Gaussian noise also runs with seed 4. Returns the folder and each output file's name mapped to the result of the call that wrote it.
    """
    folder = tmp_path_factory.mktemp("corrupt")
    clean = folder / "clean.png"
    write_png(clean, mnist.load_test_split().images[0])
    calls: dict[str, tuple] = {}
    for kind in KINDS:
        calls[f"{kind}-a.png"] = ("--noise", kind, "--seed", "3")
        calls[f"{kind}-b.png"] = ("--noise", kind, "--seed", "3")
        if LEVEL_OPTIONS[kind] is not None:
            calls[f"{kind}-level.png"] = ("--noise", kind, "--seed", "3", *LEVEL_OPTIONS[kind])
    calls["gaussian-seed4.png"] = ("--noise", "gaussian", "--seed", "4")

    results = run_side_by_side(*[("corrupt", clean, folder / name, *options) for name, options in calls.items()])
    return folder, dict(zip(calls, results))


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_each_kind(corrupt_runs, kind):
    folder, results = corrupt_runs

    for name, result in results.items():
        if name.startswith(f"{kind}-"):
            assert result.returncode == 0, result.output
            assert "Traceback" not in result.output
    clean = read_png(folder / "clean.png")
    corrupted = read_png(folder / f"{kind}-a.png")
    assert corrupted.shape == (28, 28)
    assert corrupted.dtype == np.uint8
    assert not np.array_equal(corrupted, clean)
    assert file_bytes(folder / f"{kind}-a.png") == file_bytes(folder / f"{kind}-b.png")


def test_corrupt_seed_changes_output(corrupt_runs):
    folder, results = corrupt_runs

    assert results["gaussian-seed4.png"].returncode == 0, results["gaussian-seed4.png"].output
    assert not np.array_equal(read_png(folder / "gaussian-seed4.png"), read_png(folder / "gaussian-a.png"))


@pytest.mark.parametrize("kind", [kind for kind in KINDS if LEVEL_OPTIONS[kind] is not None])
def test_corrupt_level_option_changes_output(corrupt_runs, kind):
    folder, results = corrupt_runs

    assert results[f"{kind}-level.png"].returncode == 0, results[f"{kind}-level.png"].output
    other_level = read_png(folder / f"{kind}-level.png")
    assert other_level.shape == (28, 28)
    assert not np.array_equal(other_level, read_png(folder / f"{kind}-a.png"))


def test_corrupt_test_split(tmp_path, digit_png):
    folder = tmp_path / "split"

    result = run_cli("corrupt", "--test-split", folder, "--noise", "block")

    assert result.returncode == 0, result.output
    corrupted = sorted(folder.glob("*_corrupted.png"))
    clean = sorted(folder.glob("*_clean.png"))
    assert len(list(folder.iterdir())) == 1000
    assert len(corrupted) == 500
    assert len(clean) == 500
    assert {path.name.replace("_corrupted", "_clean") for path in corrupted} == {path.name for path in clean}

    # The first pair: row 0 of the csv file, whose clean twin is the first protocol test digit.
    first_label = int(mnist.load_test_split().labels[0])
    clean_pixels = read_png(folder / f"0000_{first_label}_clean.png")
    corrupted_pixels = read_png(folder / f"0000_{first_label}_corrupted.png")
    np.testing.assert_array_equal(clean_pixels, read_png(digit_png))
    changed = corrupted_pixels != clean_pixels
    assert changed.any()
    assert (corrupted_pixels[changed] == 255).all()  # the block is filled with white
    rows, cols = np.nonzero(changed)
    assert rows.max() - rows.min() < 12  # the protocol's block side is 12 pixels
    assert cols.max() - cols.min() < 12


def test_corrupt_folder(tmp_path):
    inputs = write_digits(tmp_path / "clean", 3)
    output = tmp_path / "noisy"

    result = run_cli("corrupt", tmp_path / "clean", output, "--noise", "salt-pepper", "--seed", "1")

    assert result.returncode == 0, result.output
    assert sorted(path.name for path in output.iterdir()) == ["0.png", "1.png", "2.png"]
    for path in inputs:
        corrupted = read_png(output / path.name)
        assert corrupted.shape == (28, 28)
        assert not np.array_equal(corrupted, read_png(path))
    assert not np.array_equal(read_png(output / "0.png"), read_png(output / "1.png"))


def test_corrupt_keeps_16_bit_brightness(tmp_path):
    """A 16-bit grey PNG is scaled to [0, 1], not clipped to white."""
    source = tmp_path / "grey16.png"
    Image.fromarray(np.full((28, 28), 30000, dtype=np.uint16)).save(source)
    output = tmp_path / "out.png"

    result = run_cli("corrupt", source, output, "--noise", "gaussian", "--sigma", "0")

    assert result.returncode == 0, result.output
    expected = round(30000 / 65535 * 255)  # 117
    pixels = read_png(output)
    assert abs(int(pixels.max()) - expected) <= 1
    assert abs(int(pixels.min()) - expected) <= 1


# ----------------------------------------------------------------------------------------------
# restore
# ----------------------------------------------------------------------------------------------


def test_restore_png_one_and_two_steps(tmp_path, digit_png, tiny_checkpoint):
    one_step, two_steps = tmp_path / "one.png", tmp_path / "two.png"

    results = run_side_by_side(
        ("restore", digit_png, one_step, "--checkpoint", tiny_checkpoint),
        ("restore", digit_png, two_steps, "--checkpoint", tiny_checkpoint, "--steps", "2"),
    )

    for result in results:
        assert result.returncode == 0, result.output
        assert "note:" not in result.output
    assert "1 network evaluation)" in results[0].output
    assert "2 network evaluations" in results[1].output
    assert read_png(one_step).shape == (28, 28)
    assert read_png(two_steps).shape == (28, 28)
    assert not np.array_equal(read_png(one_step), read_png(two_steps))


def test_restore_odd_size_rgba(tmp_path, tiny_checkpoint):
    source = rgba_png(tmp_path / "colour.png", 30, 45)
    output = tmp_path / "restored.png"

    result = run_cli("restore", source, output, "--checkpoint", tiny_checkpoint)

    assert result.returncode == 0, result.output
    with Image.open(output) as image:
        assert image.size == (45, 30)  # (width, height)
        assert image.mode == "L"
    notices = [line for line in result.output.splitlines() if "converted" in line]
    assert len(notices) == 1
    assert "colour.png" in notices[0]


def test_restore_large_image_notes_scale(tmp_path, tiny_checkpoint):
    source = rgba_png(tmp_path / "large.png", 40, 90)
    output = tmp_path / "restored.png"

    result = run_cli("restore", source, output, "--checkpoint", tiny_checkpoint)

    assert result.returncode == 0, result.output
    assert read_png(output).shape == (40, 90)
    notices = [line for line in result.output.splitlines() if "trained on" in line]
    assert len(notices) == 1
    assert "large.png is 40x90 pixels" in notices[0]
    assert "28x28" in notices[0]


def test_restore_folder(tmp_path, tiny_checkpoint):
    source = tmp_path / "noisy"
    write_digits(source, 2)
    rgba_png(source / "2.png", 30, 45)
    output = tmp_path / "restored"

    result = run_cli("restore", source, output, "--checkpoint", tiny_checkpoint)

    assert result.returncode == 0, result.output
    assert sorted(path.name for path in output.iterdir()) == ["0.png", "1.png", "2.png"]
    assert read_png(output / "0.png").shape == (28, 28)
    assert read_png(output / "1.png").shape == (28, 28)
    assert read_png(output / "2.png").shape == (30, 45)


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def test_evaluate_report(tmp_path, tiny_checkpoint):
    report_path = tmp_path / "r.json"

    result = run_cli("evaluate", "--noise", "salt-pepper", "--checkpoint", tiny_checkpoint, "--report", report_path)

    assert result.returncode == 0, result.output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert {"protocol", "noise", "n_images", "checkpoint", "methods"} <= set(report)
    assert report["protocol"] == "mnist5k-v1"
    assert report["noise"] == "salt-pepper"
    assert report["n_images"] == 500
    assert Path(report["checkpoint"]).resolve() == Path(tiny_checkpoint).resolve()

    methods = report["methods"]
    assert {method["kind"] for method in methods} == {"model", "baseline", "input"}
    for method in methods:
        assert {"name", "kind", "nfe", "psnr_db", "ssim", "images_per_s"} <= set(method)
        assert isinstance(method["psnr_db"], float)
        assert 0.0 <= method["ssim"] <= 1.0
    model_rows = [method for method in methods if method["kind"] == "model"]
    assert len(model_rows) == 1
    assert model_rows[0]["nfe"] == 1

    assert "PSNR" in result.stdout
    for method in methods:
        assert method["name"] in result.stdout


def test_evaluate_keeps_existing_report(tmp_path, tiny_checkpoint):
    report_path = tmp_path / "r.json"
    report_path.write_text('{"kept": true}', encoding="utf-8")
    args = ("evaluate", "--noise", "gaussian", "--limit", "2", "--no-baselines", "--checkpoint", tiny_checkpoint,
            "--report", report_path)

    rejected = run_cli(*args)
    replaced = run_cli(*args, "--overwrite")

    assert rejected.returncode == 2
    assert f"--report {report_path} already exists; pass --overwrite" in rejected.output
    assert "Traceback" not in rejected.output
    assert replaced.returncode == 0, replaced.output
    assert json.loads(report_path.read_text(encoding="utf-8"))["noise"] == "gaussian"


def test_evaluate_all_kinds_sweep_grid_markdown(tmp_path, tiny_checkpoint):
    report_path, grid_path, markdown_path = tmp_path / "r.json", tmp_path / "g.png", tmp_path / "t.md"

    result = run_cli(
        "evaluate", "--noise", "all", "--steps", "1,2", "--limit", "6", "--checkpoint", tiny_checkpoint,
        "--grid", grid_path, "--report", report_path, "--markdown", markdown_path,
    )

    assert result.returncode == 0, result.output
    payload = json.loads(report_path.read_text(encoding="utf-8"))
    assert payload["protocol"] == "mnist5k-v1"
    assert [report["noise"] for report in payload["reports"]] == ["gaussian", "salt-pepper", "block", "blur", "mixed"]
    for report in payload["reports"]:
        assert report["n_images"] == 6
        assert 0.0 <= report["clean_digit_accuracy"] <= 1.0
        models = [method for method in report["methods"] if method["kind"] == "model"]
        assert [method["nfe"] for method in models] == [1, 2]
        assert any(method["kind"] == "baseline" for method in report["methods"])
        for method in report["methods"]:
            assert 0.0 <= method["digit_accuracy"] <= 1.0
            has_mask = method["psnr_in_mask_db"] is not None
            assert has_mask == (report["noise"] == "block")

    markdown = markdown_path.read_text(encoding="utf-8")
    assert markdown.count("| block |") == len(payload["reports"][2]["methods"])
    with Image.open(grid_path) as grid:
        assert grid.format == "PNG"
    assert "digit accuracy on the clean images" in result.stdout
    assert "misread after restoration" in result.stdout


# ----------------------------------------------------------------------------------------------
# train and finetune
# ----------------------------------------------------------------------------------------------


def test_train_config_json_holds_file_and_options(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text(encoding="utf-8"))

    # From the command line (conftest's TINY_TRAIN_ARGS).
    assert config["model"]["preset"] == "DiT-T/4"
    assert config["train"]["steps"] == 6
    assert config["train"]["batch_size"] == 8
    assert config["corruption"]["noise"] == "mixed"
    assert config["device"] == "cpu"
    # From the config file (conftest's TINY_CONFIG).
    assert config["train"]["val_every"] == 3
    assert config["train"]["val_images"] == 16
    assert config["train"]["checkpoint_every"] == 3
    assert config["train"]["warmup_steps"] == 2


def test_train_resume_continues_run(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    metrics_before = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").meta["step"] == 6
    # The file overrides the saved config, and the command line overrides the file.
    override = tmp_path / "more.toml"
    override.write_text("[train]\nsteps = 100\nlog_every = 1\n", encoding="utf-8")

    result = run_cli("train", "--resume", "--run-dir", run_dir, "--config", override, "--steps", "8")

    assert result.returncode == 0, result.output
    metrics_after = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(metrics_after) > len(metrics_before)
    assert metrics_after[: len(metrics_before)] == metrics_before
    logged_steps = [json.loads(line)["step"] for line in metrics_after[len(metrics_before) :]]
    assert min(logged_steps) == 7
    assert max(logged_steps) == 8
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").meta["step"] == 8
    assert load_checkpoint(run_dir / "checkpoints" / "final.safetensors").meta["step"] == 8

    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["train"]["steps"] == 8
    assert config["train"]["log_every"] == 1
    assert config["train"]["val_every"] == 3  # kept from the run's saved config
    assert config["model"]["preset"] == "DiT-T/4"


def test_train_init_from_restorer_checkpoint(tmp_path, tiny_checkpoint, tiny_config):
    run_dir = tmp_path / "continued"

    result = run_cli(
        "train", "--init-from", tiny_checkpoint, "--steps", "3", "--run-dir", run_dir,
        "--config", tiny_config, "--batch-size", "8", "--noise", "blur", "--device", "cpu", "--threads", "1",
    )

    assert result.returncode == 0, result.output
    final = load_checkpoint(run_dir / "checkpoints" / "final.safetensors")
    assert final.meta["step"] == 3
    assert final.config.threads == 1
    assert final.config.model == load_checkpoint(tiny_checkpoint).config.model
    assert final.config.corruption.noise == "blur"
    assert (run_dir / "metrics.jsonl").is_file()


# ----------------------------------------------------------------------------------------------
# help
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_example(command):
    result = run_cli(command, "--help")

    assert result.returncode == 0, result.output
    assert "example" in result.stdout.lower()


def test_top_level_help_lists_commands():
    result = run_cli("--help")

    assert result.returncode == 0, result.output
    for command in COMMANDS:
        assert command in result.stdout
