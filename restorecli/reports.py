"""Evaluation reports as files: JSON for programs and a Markdown table for docs, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from restorecli.atomic import write_atomically
from restorecli.classifier import ConfusionPair
from restorecli.data import mnist
from restorecli.evaluation import MethodResult, Report

# Confusions listed per model row; the JSON report keeps all of them.
SHOWN_CONFUSIONS = 5


def report_payload(reports: list[Report]) -> dict:
    """Return one report as a dict, or several as {"protocol": ..., "reports": [...]}."""
    if len(reports) == 1:
        return reports[0].to_dict()
    return {"protocol": mnist.PROTOCOL_NAME, "reports": [report.to_dict() for report in reports]}


def write_report(path: Path, reports: list[Report]) -> None:
    text = json.dumps(report_payload(reports), indent=2) + "\n"
    write_atomically(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))


def has_mask_metrics(reports: list[Report]) -> bool:
    return any(method.psnr_in_mask_db is not None for report in reports for method in report.methods)


def method_label(method: MethodResult) -> str:
    return method.kind + (" (oracle)" if method.oracle else "")


def format_cell(value: float | int | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def format_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_confusions(confusions: list[dict], limit: int = SHOWN_CONFUSIONS) -> str:
    """Render confusions as '5→6: 3 images, 4→9: 1 image', at most `limit` of them."""
    if not confusions:
        return "none"
    pairs = [ConfusionPair(item["true"], item["predicted"], item["count"]) for item in confusions]
    parts = [pair.describe() for pair in pairs[:limit]]
    rest = sum(pair.count for pair in pairs[limit:])
    if rest:
        parts.append(f"{rest} more")
    return ", ".join(parts)


def method_cells(method: MethodResult, masks: bool) -> list[str]:
    """Format one method's table cells from its name to images/s, with the mask columns when `masks`."""
    cells = [
        method.name,
        method_label(method),
        format_cell(method.nfe, "d"),
        f"{method.psnr_db:.2f}",
        f"{method.ssim:.3f}",
        format_accuracy(method.digit_accuracy),
    ]
    if masks:
        cells += [format_cell(method.psnr_in_mask_db, ".2f"), format_cell(method.psnr_out_mask_db, ".2f")]
    cells.append(format_cell(method.images_per_s, ",.0f"))
    return cells


def markdown_table(reports: list[Report]) -> str:
    """Return the evaluate table of one or more kinds as Markdown, with the settings above it."""
    first = reports[0]
    masks = has_mask_metrics(reports)
    lines = [
        f"Protocol {first.protocol}, {first.n_images} test images; checkpoint `{first.checkpoint}` "
        f"(sha256 {first.checkpoint_sha256[:16]}); {first.device}, {first.threads} thread{'s' if first.threads != 1 else ''}, batch {first.batch_size}.",
    ]
    if first.clean_digit_accuracy is not None:
        lines.append(
            f"Digit accuracy of the reference classifier on the clean test images: "
            f"{format_accuracy(first.clean_digit_accuracy)}."
        )
    lines.append("")

    header = ["noise", "method", "kind", "NFE", "PSNR dB", "SSIM", "digit accuracy"]
    if masks:
        header += ["PSNR in mask dB", "PSNR outside mask dB"]
    header.append("images/s")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))

    for report in reports:
        for method in report.methods:
            cells = [report.noise, *method_cells(method, masks)]
            lines.append("| " + " | ".join(cells) + " |")

    confusion_lines = [
        f"- {report.noise}, {method.name}, {method.nfe} NFE: {format_confusions(method.confusions)}"
        for report in reports
        for method in report.methods
        if method.kind == "model" and method.digit_accuracy is not None
    ]
    if confusion_lines:
        lines += ["", "Digits misread after restoration that the classifier reads correctly when clean:", *confusion_lines]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, reports: list[Report]) -> None:
    text = markdown_table(reports)
    write_atomically(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))
