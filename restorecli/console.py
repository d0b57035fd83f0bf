"""Human-facing output: the rich console, progress bars and tables. Only the CLI imports this."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from restorecli.evaluation import Report
from restorecli.reports import format_accuracy, format_confusions, has_mask_metrics, method_cells

console = Console(stderr=False)
error_console = Console(stderr=True)


class RichMonitor:
    """Training progress: a bar with step, loss, unweighted MSE, validation PSNR, steps/s and ETA."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  mse {task.fields[mse]}  val {task.fields[val]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = None

    def start(self, total_steps: int, first_step: int, description: str) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            description, total=total_steps, completed=first_step, loss="-", mse="-", val="-", rate="-"
        )

    def update(self, step: int, stats: dict[str, float]) -> None:
        fields = {}
        if "loss" in stats:
            fields = {
                "loss": f"{stats['loss']:.4f}",
                "mse": f"{stats['mse']:.4f}",
                "rate": f"{stats['steps_per_s']:.2f} steps/s",
            }
        if "val_psnr_db" in stats:
            fields["val"] = f"{stats['val_psnr_db']:.2f} dB"
        self.progress.update(self.task, completed=step, **fields)

    def note(self, text: str) -> None:
        console.print(text)

    def stop(self) -> None:
        self.progress.stop()


def report_table(reports: list[Report]) -> Table:
    """The evaluate table: one row per method and kind with NFE, PSNR, SSIM, digit accuracy and images/s."""
    first = reports[0]
    masks = has_mask_metrics(reports)
    caption = None
    if first.clean_digit_accuracy is not None:
        caption = f"digit accuracy on the clean images: {format_accuracy(first.clean_digit_accuracy)}"
    kinds = "" if len(reports) > 1 else f" · {first.noise}"
    table = Table(
        title=f"{first.protocol}{kinds} · {first.n_images} test images · {first.device}, "
        f"{first.threads} thread{'s' if first.threads != 1 else ''}, batch {first.batch_size}",
        caption=caption,
    )
    several = len(reports) > 1
    if several:
        table.add_column("noise")
    table.add_column("method", min_width=16)
    table.add_column("kind")
    for name in ("NFE", "PSNR dB", "SSIM", "digit acc."):
        table.add_column(name, justify="right")
    if masks:
        table.add_column("PSNR in mask", justify="right")
        table.add_column("PSNR outside", justify="right")
    table.add_column("images/s", justify="right")

    for index, report in enumerate(reports):
        if index:
            table.add_section()
        best = max(method.psnr_db for method in report.methods)
        for method in report.methods:
            cells = ([report.noise] if several else []) + method_cells(method, masks)
            table.add_row(*cells, style="bold green" if method.psnr_db == best else None)
    return table


def confusion_lines(reports: list[Report]) -> list[str]:
    """List, per model row, the digits that restoration turned into other digits."""
    return [
        f"{report.noise}, {method.nfe} NFE, misread after restoration: {format_confusions(method.confusions)}"
        for report in reports
        for method in report.methods
        if method.kind == "model" and method.digit_accuracy is not None
    ]
