"""Human-facing output: the rich console, progress bars and tables. Only the CLI imports this."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from restorecli.evaluation import Report

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


def report_table(report: Report) -> Table:
    """The evaluate table: one row per method with NFE, PSNR, SSIM and images/s."""
    table = Table(
        title=f"{report.protocol} · {report.noise} · {report.n_images} test images · {report.device}, "
        f"{report.threads} threads, batch {report.batch_size}"
    )
    table.add_column("method")
    table.add_column("kind")
    table.add_column("NFE", justify="right")
    table.add_column("PSNR dB", justify="right")
    table.add_column("SSIM", justify="right")
    table.add_column("images/s", justify="right")
    best = max(method.psnr_db for method in report.methods)
    for method in report.methods:
        style = "bold green" if method.psnr_db == best else None
        kind = method.kind + (" (oracle)" if method.oracle else "")
        table.add_row(
            method.name,
            kind,
            "-" if method.nfe is None else str(method.nfe),
            f"{method.psnr_db:.2f}",
            f"{method.ssim:.3f}",
            "-" if method.images_per_s is None else f"{method.images_per_s:,.0f}",
            style=style,
        )
    return table
