"""The restorecli command line: parse options, build the config, call the core, print results."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from restorecli.errors import RestoreCliError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Train MeanFlow diffusion transformers that restore corrupted images in one network "
    "evaluation, and measure them against classical restorers.",
)

KINDS_HELP = "gaussian, salt-pepper, block, blur or mixed"
RESTORER_FIX = "pass a restorer checkpoint (task 'restore'), or draw digits from a generator with `restorecli sample`"

# Options that several commands share, defined once.
ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML config file; command-line options override its values. Example: --config my.toml"),
]
DeviceOption = Annotated[
    Optional[str],
    typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps. Default: auto"),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
CheckpointOption = Annotated[
    Optional[Path],
    typer.Option("--checkpoint", help="restorecli .safetensors checkpoint. Default: the shipped restorer"),
]
StepsOption = Annotated[int, typer.Option("--steps", help="network evaluations (NFE) per image. Example: --steps 2")]
SeedOption = Annotated[int, typer.Option("--seed", help="seed of every random draw (corruption, source noise)")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
VelocityOption = Annotated[
    Optional[str],
    typer.Option(
        "--velocity",
        help=(
            "head an imf model steps with: average (u, MeanFlow steps) or instantaneous (v, Euler steps; "
            "1 step is then the posterior-mean estimate). Default: the checkpoint's restore_velocity. "
            "regression and flow_matching models have one head and ignore it; meanflow has no v head. "
            "Example: --velocity average"
        ),
    ),
]


class _State:
    debug = False


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `value` at a dotted key (e.g. 'train.steps') unless the option was left unset (None)."""
    if value is None:
        return
    *sections, key = dotted.split(".")
    node = tree
    for section in sections:
        node = node.setdefault(section, {})
    node[key] = value


@app.callback()
def _main(debug: DebugOption = False) -> None:
    """Train, corrupt, restore and evaluate; `restorecli COMMAND --help` explains each command."""
    _State.debug = _State.debug or debug


# ----------------------------------------------------------------------------------------------
# train and finetune
# ----------------------------------------------------------------------------------------------


def _training_overrides(
    noise, steps, batch_size, lr, seed, run_dir, data, device, model=None, objective=None, source=None, task=None
) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    _set(overrides, "task", task)
    _set(overrides, "corruption.noise", noise)
    _set(overrides, "train.steps", steps)
    _set(overrides, "train.batch_size", batch_size)
    _set(overrides, "train.lr", lr)
    _set(overrides, "train.seed", seed)
    _set(overrides, "train.run_dir", None if run_dir is None else str(run_dir))
    _set(overrides, "data.source", None if data is None else str(data))
    _set(overrides, "device", device)
    _set(overrides, "model.preset", model)
    _set(overrides, "objective.kind", objective)
    _set(overrides, "objective.source", source)
    return overrides


def _run_training(config, resume: bool, init_from: Path | None = None) -> None:
    from restorecli.console import RichMonitor, console
    from restorecli.training import train as run_training

    result = run_training(config, monitor=RichMonitor(), resume=resume, init_from=init_from)
    console.print(f"run folder: {result.run_dir}")
    console.print(f"weights:    {result.final_checkpoint}")
    if result.val_psnr_db is not None:
        console.print(f"validation PSNR (1 step, EMA weights): {result.val_psnr_db:.2f} dB")
    if result.sample_accuracy is not None:
        console.print(f"digit accuracy of 1-step samples (EMA weights): {result.sample_accuracy:.1%}")
    if result.sample_grid is not None:
        console.print(f"sample grid: {result.sample_grid}")


NoiseOption = Annotated[Optional[str], typer.Option("--noise", help=f"corruption to train on: {KINDS_HELP}. Default: mixed")]
TrainStepsOption = Annotated[Optional[int], typer.Option("--steps", help="optimizer steps. Default: 20000, about 2.5 hours of MeanFlow on one CPU core; try --steps 2000 first")]
BatchOption = Annotated[Optional[int], typer.Option("--batch-size", help="images per step. Default: 64")]
LrOption = Annotated[Optional[float], typer.Option("--lr", help="peak AdamW learning rate. Default: 6e-4")]
TrainSeedOption = Annotated[Optional[int], typer.Option("--seed", help="seed of every random draw in the run. Default: 0")]
RunDirOption = Annotated[Optional[Path], typer.Option("--run-dir", help="run folder for config, metrics.jsonl and checkpoints. Default: runs/default")]
DataOption = Annotated[Optional[str], typer.Option("--data", help="'mnist' (bundled) or a folder of PNG/JPEG images. Default: mnist")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoints/last.safetensors.")]


@app.command()
def train(
    config: ConfigOption = None,
    noise: NoiseOption = None,
    model: Annotated[Optional[str], typer.Option("--model", help="size preset: DiT-S/4 (transformer, 1.32M parameters), UNet-S (convolutional, 1.32M) and more; `restorecli presets` lists all")] = None,
    objective: Annotated[Optional[str], typer.Option("--objective", help="meanflow (average velocity, 1..N steps), imf (improved MeanFlow: extra v head), flow_matching (instantaneous velocity, N Euler steps), or regression (the reference). Default: meanflow")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="bridge (start from y plus noise) or noise. Default: bridge")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="restore (a restorer of corrupted images) or generate (a class-conditional MNIST digit generator from noise, for `restorecli sample`). Default: restore")] = None,
    steps: TrainStepsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: TrainSeedOption = None,
    run_dir: RunDirOption = None,
    data: DataOption = None,
    device: DeviceOption = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=0, help="CPU threads for torch; 0 keeps torch's default. A CPU run repeats its sums exactly only with the same count. Example: --threads 2")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="start from this checkpoint's weights, e.g. to keep training a restorer on another corruption; its model and objective are kept")] = None,
    resume: ResumeOption = False,
    debug: DebugOption = False,
) -> None:
    """Train a restorer (or, with --task generate, a digit generator) from scratch or from a checkpoint.

    Examples: restorecli train --noise mixed --steps 2000 --run-dir runs/try1;
    restorecli train --init-from runs/try1/checkpoints/final.safetensors --noise blur --steps 1000 --run-dir runs/blur
    """
    _State.debug = _State.debug or debug
    from restorecli.config import build_config, read_config_file

    overrides = _training_overrides(
        noise, steps, batch_size, lr, seed, run_dir, data, device, model, objective, source, task
    )
    _set(overrides, "threads", threads)
    if init_from is not None:
        if resume:
            raise UsageError("--resume continues a run folder and --init-from starts a new one; give one of them")
        _run_training(_config_from_checkpoint(init_from, config, overrides), resume=False, init_from=init_from)
        return
    base = None
    if resume:
        # A resumed run keeps its saved config; the file and options given now override it.
        from restorecli.config import Config

        folder = Path(overrides.get("train", {}).get("run_dir") or read_config_file(config).get("train", {}).get("run_dir") or Config().train.run_dir)
        saved = folder / "config.json"
        if saved.is_file():
            base = json.loads(saved.read_text(encoding="utf-8"))
    _run_training(build_config(config, overrides, base=base), resume=resume)


def _config_from_checkpoint(path: Path, config: Path | None, overrides: dict[str, Any]):
    """Resolve the config of a run that starts from a checkpoint of the same task, keeping its model and objective."""
    from restorecli.checkpoint import load_checkpoint
    from restorecli.config import build_config, config_changes

    checkpoint = load_checkpoint(path)
    base = {
        "task": checkpoint.config.task,
        "model": checkpoint.config.model.model_dump(),
        "objective": checkpoint.config.objective.model_dump(),
        "data": {"channels": checkpoint.config.data.channels},
    }
    if checkpoint.config.task == "generate" and "corruption" in overrides:
        raise UsageError(
            f"--init-from {path} is a generator, which trains on no corruption; to turn it into a "
            f"restorer use `restorecli finetune --from {path}`"
        )
    resolved = build_config(config, overrides, base=base)
    # The restore_* settings only choose how the sampler restores, so a new stage may change them.
    trained = tuple(f"objective.{name}" for name in type(resolved.objective).model_fields if not name.startswith("restore_"))
    changes = config_changes(checkpoint.config, resolved, ("task", "model", *trained, "data.channels"))
    if changes:
        raise UsageError(
            f"--init-from {path} keeps its task, model, objective and channels, but the config changes "
            + "; ".join(changes) + ". Remove those settings, or train without --init-from"
        )
    return resolved


@app.command()
def finetune(
    from_checkpoint: Annotated[Path, typer.Option("--from", help="generator checkpoint (from `restorecli train --task generate`) to turn into a restorer")],
    config: ConfigOption = None,
    noise: NoiseOption = None,
    source: Annotated[Optional[str], typer.Option("--source", help="noise (what the generator learnt) or bridge (y plus source_sigma noise; y is fed as channels too). Default: noise")] = None,
    steps: TrainStepsOption = None,
    batch_size: BatchOption = None,
    lr: LrOption = None,
    seed: TrainSeedOption = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="run folder for config, metrics.jsonl and checkpoints. Default: runs/finetune")] = None,
    data: DataOption = None,
    device: DeviceOption = None,
    debug: DebugOption = False,
) -> None:
    """Turn a class-conditional generator into a restorer and train it.

    The network comes from the generator, with new input channels for the corrupted image whose
    weights start at zero, and the label fixed to the null class. So at step 0 the restorer computes
    what the generator computes without a label. The config file and options set the rest.
    Example: restorecli finetune --from runs/gen/checkpoints/final.safetensors --noise mixed --steps 2000
    """
    _State.debug = _State.debug or debug
    from restorecli.checkpoint import load_checkpoint
    from restorecli.config import build_config
    from restorecli.finetuning import check_fits, restorer_settings

    checkpoint = load_checkpoint(from_checkpoint)
    if checkpoint.config.task != "generate":
        raise UsageError(
            f"--from {from_checkpoint} is a restorer checkpoint, not a generator; finetune starts "
            f"from `restorecli train --task generate`. To keep training a restorer use "
            f"`restorecli train --init-from {from_checkpoint}`"
        )
    overrides = _training_overrides(noise, steps, batch_size, lr, seed, run_dir, data, device, source=source)
    resolved = build_config(config, overrides, base=restorer_settings(checkpoint.config, source))
    check_fits(checkpoint.config, resolved, from_checkpoint)
    _run_training(resolved, resume=False, init_from=from_checkpoint)


@app.command()
def presets() -> None:
    """List the model size presets with their parameter counts (1-channel restorer).

    Example: restorecli presets
    """
    from restorecli.console import console
    from restorecli.models import describe_presets

    console.print(describe_presets())


# ----------------------------------------------------------------------------------------------
# corrupt
# ----------------------------------------------------------------------------------------------


@app.command()
def corrupt(
    source: Annotated[Optional[Path], typer.Argument(help="clean image (PNG/JPEG) or folder of images")] = None,
    target: Annotated[Optional[Path], typer.Argument(help="output PNG, or output folder for a folder input")] = None,
    noise: Annotated[str, typer.Option("--noise", help=f"corruption kind: {KINDS_HELP}")] = "gaussian",
    sigma: Annotated[Optional[float], typer.Option("--sigma", help="Gaussian noise std in [0, 1] pixel units. Default: 0.3")] = None,
    amount: Annotated[Optional[float], typer.Option("--amount", help="salt-and-pepper share of pixels replaced, 0..1. Default: 0.2")] = None,
    side: Annotated[Optional[int], typer.Option("--side", help="block mask side in pixels. Default: 12")] = None,
    blur_sigma: Annotated[Optional[float], typer.Option("--blur-sigma", help="blur std in pixels. Default: 1.5")] = None,
    seed: SeedOption = 0,
    test_split: Annotated[Optional[Path], typer.Option("--test-split", help="write the protocol's 500 corrupted test images and their clean twins to this folder")] = None,
    config: ConfigOption = None,
    overwrite: OverwriteOption = False,
    debug: DebugOption = False,
) -> None:
    """Corrupt an image, a folder of images, or the protocol's test split.

    Without level options a kind uses its evaluation level (mixed: the protocol's ranges). With
    --config, the ranges of the file's corruption section are used instead.
    Examples: restorecli corrupt digit.png noisy.png --noise salt-pepper --amount 0.2 --seed 3;
    restorecli corrupt --test-split data/test-mixed --noise mixed
    """
    _State.debug = _State.debug or debug
    from restorecli import corrupt_files as corrupting
    from restorecli.console import console

    spec = corrupting.spec_from_options(noise, sigma, amount, side, blur_sigma, config)
    if test_split is not None:
        if source is not None or target is not None:
            raise UsageError("--test-split writes the protocol's test images; give no input or output path with it")
        if any(value is not None for value in (sigma, amount, side, blur_sigma)) or config is not None:
            raise UsageError("--test-split always uses the protocol's evaluation levels; remove the level options")
        count = corrupting.write_test_split(test_split, noise, overwrite)
        console.print(f"wrote {count} corrupted test images and their clean twins to {test_split}")
        return
    if source is None or target is None:
        raise UsageError("give an input and an output path, e.g. restorecli corrupt in.png out.png, or use --test-split DIR")
    written = corrupting.corrupt_path(source, target, spec, seed, overwrite)
    console.print(f"wrote {written} image(s) to {target}")


# ----------------------------------------------------------------------------------------------
# restore
# ----------------------------------------------------------------------------------------------


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="corrupted image (PNG/JPEG) or folder of images")],
    target: Annotated[Path, typer.Argument(help="output PNG, or output folder for a folder input")],
    checkpoint: CheckpointOption = None,
    steps: StepsOption = 1,
    velocity: VelocityOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = None,
    config: ConfigOption = None,
    overwrite: OverwriteOption = False,
    debug: DebugOption = False,
) -> None:
    """Restore an image (or a folder of images), in one network evaluation by default.

    Any size is accepted: the image is padded to the patch size and cropped back. The model
    restores best at the scale it was trained on (28x28 digits for the shipped one), and restore
    prints a notice for an image more than twice that size. Colour input to a grey model is converted with a notice.
    Example: restorecli restore noisy.png clean.png --steps 1
    """
    _State.debug = _State.debug or debug
    from restorecli.checkpoint import require_task
    from restorecli.config import build_config
    from restorecli.console import console
    from restorecli.device import set_threads
    from restorecli.restoration import Restorer

    resolved = build_config(config, {"device": device} if device else {})
    set_threads(resolved.threads)
    restorer = Restorer.load(checkpoint, resolved.device, velocity)
    require_task(restorer.checkpoint, restorer.checkpoint_path, "restore", RESTORER_FIX)
    restorer.check_steps(steps)
    head = "" if restorer.head is None else f", {restorer.head}"
    if source.is_dir():
        from restorecli.data.images import folder_pairs

        pairs = folder_pairs(source, target, overwrite)
        for notice in restorer.restore_files(pairs, steps=steps, seed=seed):
            console.print(f"[yellow]note:[/] {notice}")
        console.print(f"restored {len(pairs)} image(s) into {target} with {steps} network evaluation(s) each{head}")
        return
    for notice in restorer.restore_file(source, target, steps=steps, seed=seed, overwrite=overwrite):
        console.print(f"[yellow]note:[/] {notice}")
    console.print(f"restored {source} -> {target} ({steps} network evaluation{'s' if steps > 1 else ''}{head})")


# ----------------------------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------------------------


@app.command()
def sample(
    target: Annotated[Path, typer.Argument(help="output PNG grid: one row per digit 0..9")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="generator checkpoint written by `restorecli train --task generate`. Example: --checkpoint gen.safetensors")
    ],
    guidance: Annotated[
        Optional[float],
        typer.Option("--guidance", help="classifier-free guidance scale (1 = none, larger = more typical digits). Default: the checkpoint's generate.sample_guidance, e.g. 2.0"),
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="samples per digit, the columns of the grid. Example: --per-class 8")] = 8,
    steps: StepsOption = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed of the source noise; the same seed gives the same grid. Example: --seed 3")] = 0,
    device: DeviceOption = None,
    config: ConfigOption = None,
    overwrite: OverwriteOption = False,
    debug: DebugOption = False,
) -> None:
    """Draw digits from a class-conditional generator into a PNG grid, one row per digit.

    Example: restorecli sample --checkpoint runs/gen/checkpoints/final.safetensors digits.png --guidance 2.0
    """
    _State.debug = _State.debug or debug
    from restorecli.config import build_config
    from restorecli.console import console
    from restorecli.device import set_threads
    from restorecli.sampling import DigitGenerator

    resolved = build_config(config, {"device": device} if device else {})
    set_threads(resolved.threads)
    digit_generator = DigitGenerator.load(checkpoint, resolved.device)
    for notice in digit_generator.write_grid(target, guidance, per_class, steps, seed, overwrite):
        console.print(f"[yellow]note:[/] {notice}")
    console.print(f"wrote {per_class} sample(s) per class to {target} ({steps} network evaluation(s) each)")


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


@app.command()
def evaluate(
    noise: Annotated[str, typer.Option("--noise", help=f"protocol corruption: {KINDS_HELP}, or all five")] = "mixed",
    checkpoint: CheckpointOption = None,
    steps: Annotated[
        str, typer.Option("--steps", help="NFE per image, one value or a comma list for a sweep. Example: --steps 1,2,4,8")
    ] = "1",
    report: Annotated[Optional[Path], typer.Option("--report", help="also write the results as JSON to this file. Example: --report r.json")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="also write the table as Markdown to this file. Example: --markdown table.md")] = None,
    grid: Annotated[
        Optional[Path],
        typer.Option("--grid", help="write a PNG of clean / corrupted / restored / best-baseline digits, the worst-restored included. Example: --grid g.png"),
    ] = None,
    classifier: Annotated[
        Optional[Path],
        typer.Option("--classifier", help="digit classifier for digit accuracy. Default: the shipped one"),
    ] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also run the classical restorers.")] = True,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", help="score only N test images spread evenly over the split (all digits), for a quick check; the numbers are then not protocol results"),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per network call")] = 256,
    velocity: VelocityOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = None,
    config: ConfigOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --report, --markdown and --grid files.")] = False,
    debug: DebugOption = False,
) -> None:
    """Score a restorer on the 500 protocol test images (mnist5k-v1) beside classical restorers.

    Columns: PSNR (dB), SSIM, digit accuracy of a reference classifier and images/s; block masks add
    PSNR inside and outside the square. Each model row shows its network evaluations (NFE).
    Example: restorecli evaluate --noise all --steps 1,2,4 --grid g.png --report r.json
    """
    _State.debug = _State.debug or debug
    from restorecli.checkpoint import require_task
    from restorecli.classifier import load_classifier
    from restorecli.config import build_config
    from restorecli.console import confusion_lines, console, report_table
    from restorecli.corruptions import KINDS
    from restorecli.device import set_threads
    from restorecli.evaluation import evaluate as run_evaluation
    from restorecli.plots import plot_evaluation_grid
    from restorecli.reports import write_markdown, write_report
    from restorecli.restoration import Restorer

    if noise != "all" and noise not in KINDS:
        raise UsageError(f"unknown --noise {noise!r}; choose one of {', '.join(KINDS)} or all")
    kinds = list(KINDS) if noise == "all" else [noise]
    step_counts = _parse_steps(steps)
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} is invalid; use 1 or more")
    if limit is not None and not 1 <= limit <= 500:
        raise UsageError(f"--limit {limit} is invalid; use 1 to 500 test images, or leave it out for all 500")
    for option, path in (("--report", report), ("--markdown", markdown), ("--grid", grid)):
        if path is not None and path.is_dir():
            raise UsageError(f"{option} {path} is a folder; pass a file name")
        # Checked before the evaluation runs, so a rejected path costs no minutes of work.
        if path is not None and path.exists() and not overwrite:
            raise UsageError(f"{option} {path} already exists; pass --overwrite to replace it, or choose another name")
    resolved = build_config(config, {"device": device} if device else {})
    set_threads(resolved.threads)
    restorer = Restorer.load(checkpoint, resolved.device, velocity)
    require_task(restorer.checkpoint, restorer.checkpoint_path, "restore", RESTORER_FIX)
    if restorer.channels != 1:
        raise UsageError(f"{restorer.checkpoint_path} restores {restorer.channels}-channel images; the protocol is 1-channel MNIST")
    for count in step_counts:
        restorer.check_steps(count)
    judge = load_classifier(classifier)

    evaluations = []
    with console.status("evaluating") as status:
        for kind in kinds:
            evaluations.append(
                run_evaluation(
                    restorer, kind, steps=step_counts, batch_size=batch_size, seed=seed, limit=limit, with_baselines=baselines,
                    classifier=judge, classifier_name=str(judge.path),
                    on_method=lambda name, kind=kind: status.update(f"evaluating {name} on {kind}"),
                )
            )
    reports = [evaluation.report for evaluation in evaluations]
    console.print(report_table(reports))
    for line in confusion_lines(reports):
        console.print(line)
    if report is not None:
        write_report(report, reports)
        console.print(f"report: {report}")
    if markdown is not None:
        write_markdown(markdown, reports)
        console.print(f"markdown table: {markdown}")
    if grid is not None:
        plot_evaluation_grid(evaluations, grid)
        console.print(f"picture grid: {grid}")


def _parse_steps(text: str) -> tuple[int, ...]:
    """Parse '1' or '1,2,4,8' into NFE counts, rejecting anything else with the fix."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--steps {text} is invalid; pass a count or a comma list such as 1,2,4,8") from None
    if any(count < 1 for count in counts):
        raise UsageError(f"--steps {text} is invalid; every count must be 1 or more network evaluations")
    if len(set(counts)) != len(counts):
        raise UsageError(f"--steps {text} repeats a count; list each NFE once")
    return counts


def main() -> None:
    """Entry point: run the app, turning restorecli errors into one line and an exit code."""
    if "--debug" in sys.argv[1:]:
        _State.debug = True
    # Typer prints its own usage errors (exit code 2) and exits; restorecli's errors come through.
    try:
        app()
    except RestoreCliError as error:
        if _State.debug:
            traceback.print_exc()
        _fail(str(error), error.exit_code)
    except OSError as error:
        if _State.debug:
            traceback.print_exc()
        _fail(f"{error}; check the path and its permissions", 1)


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    from restorecli.console import error_console

    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
