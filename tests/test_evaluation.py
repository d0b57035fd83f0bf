"""The evaluation core: digit accuracy and confusions, the step sweep, block region metrics,
Markdown and JSON reports, and the PNG figures, on a tiny trained checkpoint and real digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from restorecli.evaluation import DigitJudge, evaluate, protocol_images
from restorecli.metrics import psnr, region_psnr
from restorecli.plots import plot_evaluation_grid, plot_training_curves
from restorecli.reports import format_confusions, markdown_table, report_payload, write_report
from restorecli.restoration import Restorer
from restorecli.training import read_metrics


class ScriptedClassifier:
    """Return prepared predictions, one array per call, in order."""

    def __init__(self, answers: list[list[int]]) -> None:
        self.answers = [np.asarray(answer) for answer in answers]

    def predict(self, images: np.ndarray) -> np.ndarray:
        assert len(images) == len(self.answers[0])
        return self.answers.pop(0)


class BrightnessClassifier:
    """A deterministic stand-in for a digit classifier: the digit is the mean brightness, scaled."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1).mean(axis=1) * 60).astype(np.int64) % 10


@pytest.fixture(scope="module")
def block_evaluation(tiny_checkpoint):
    restorer = Restorer.load(tiny_checkpoint, "cpu")
    return evaluate(restorer, "block", steps=(1, 2), limit=12, classifier=BrightnessClassifier(), classifier_name="brightness")


def test_judge_counts_created_confusions():
    labels = np.array([5, 5, 4, 3, 3])
    clean_predictions = [5, 5, 4, 3, 8]  # the last digit is misread even when clean
    restored_predictions = [6, 6, 9, 3, 6]
    judge = DigitJudge(ScriptedClassifier([clean_predictions, restored_predictions]), np.zeros((5, 1, 28, 28)), labels)

    accuracy, confusions = judge.score(np.zeros((5, 1, 28, 28)))

    assert judge.clean_accuracy == pytest.approx(0.8)
    assert accuracy == pytest.approx(0.2)
    assert confusions == [{"true": 5, "predicted": 6, "count": 2}, {"true": 4, "predicted": 9, "count": 1}]


def test_judge_without_confusions():
    labels = np.array([1, 2])
    judge = DigitJudge(ScriptedClassifier([[1, 2], [1, 2]]), np.zeros((2, 1, 28, 28)), labels)

    accuracy, confusions = judge.score(np.zeros((2, 1, 28, 28)))

    assert accuracy == 1.0
    assert confusions == []
    assert format_confusions(confusions) == "none"


def test_format_confusions_reads_as_text():
    confusions = [{"true": 5, "predicted": 6, "count": 3}, {"true": 4, "predicted": 9, "count": 1}]
    assert format_confusions(confusions) == "5→6: 3 images, 4→9: 1 image"
    assert format_confusions(confusions, limit=1) == "5→6: 3 images, 1 more"


def test_step_sweep_gives_one_model_row_per_nfe(block_evaluation):
    models = [method for method in block_evaluation.report.methods if method.kind == "model"]

    assert [method.nfe for method in models] == [1, 2]
    for method in models:
        restored = block_evaluation.output_of(method)
        assert restored.shape == (12, 1, 28, 28)
        assert method.psnr_db == pytest.approx(psnr(block_evaluation.images.clean, restored).mean(), abs=1e-4)
        assert method.images_per_s > 0


def test_block_rows_have_region_metrics(block_evaluation):
    images = block_evaluation.images
    masks = images.block_masks()
    assert masks.shape == (12, 28, 28)
    assert (masks.sum(axis=(1, 2)) == 144).all()  # the protocol's 12x12 square

    for method in block_evaluation.report.methods:
        restored = block_evaluation.output_of(method)
        inside = region_psnr(images.clean, restored, masks).mean()
        assert method.psnr_in_mask_db == pytest.approx(inside, abs=1e-4)
        assert method.psnr_out_mask_db is not None

    corrupted = next(method for method in block_evaluation.report.methods if method.kind == "input")
    assert corrupted.psnr_out_mask_db == 100.0  # the block corruption leaves the rest untouched


def test_rows_have_digit_accuracy(block_evaluation):
    report = block_evaluation.report
    classifier = BrightnessClassifier()
    labels = block_evaluation.images.labels

    assert report.clean_digit_accuracy == pytest.approx(np.mean(classifier.predict(block_evaluation.images.clean) == labels), abs=1e-4)
    for method in report.methods:
        expected = np.mean(classifier.predict(block_evaluation.output_of(method)) == labels)
        assert method.digit_accuracy == pytest.approx(expected, abs=1e-4)


def test_other_kinds_have_no_region_metrics(tiny_checkpoint):
    evaluation = evaluate(Restorer.load(tiny_checkpoint, "cpu"), "gaussian", limit=4, with_baselines=False)

    assert [method.kind for method in evaluation.report.methods] == ["model", "input"]
    for method in evaluation.report.methods:
        assert method.psnr_in_mask_db is None
        assert method.digit_accuracy is None


def test_json_report_of_several_kinds(tmp_path, block_evaluation):
    path = tmp_path / "r.json"

    write_report(path, [block_evaluation.report, block_evaluation.report])

    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload["protocol"] == "mnist5k-v1"
    assert len(payload["reports"]) == 2
    assert payload["reports"][0] == report_payload([block_evaluation.report])
    method = payload["reports"][0]["methods"][0]
    assert {"digit_accuracy", "psnr_in_mask_db", "psnr_out_mask_db", "nfe"} <= set(method)


def test_markdown_table_lists_every_row(block_evaluation):
    text = markdown_table([block_evaluation.report])
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| noise"))
    rows = [line for line in lines if line.startswith("| block")]

    assert "PSNR in mask dB" in header
    assert "digit accuracy" in header
    assert len(rows) == len(block_evaluation.report.methods)
    assert any("| model | 2 |" in row for row in rows)
    assert "misread after restoration" in text.lower() or "Digits misread" in text


def test_evaluation_grid_png(tmp_path, block_evaluation):
    single, double = tmp_path / "single.png", tmp_path / "double.png"

    plot_evaluation_grid([block_evaluation], single)
    plot_evaluation_grid([block_evaluation, block_evaluation], double)

    with Image.open(single) as first, Image.open(double) as second:
        assert first.format == "PNG"
        assert second.size[1] > 1.5 * first.size[1]  # one panel per kind


def test_training_writes_curves_png(tiny_run, tmp_path):
    with Image.open(tiny_run / "curves.png") as picture:
        assert picture.format == "PNG"
        assert picture.size[0] > 400

    records = read_metrics(tiny_run / "metrics.jsonl")
    assert any("val_psnr_db" in record for record in records)
    plot_training_curves(records, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_limit_spreads_over_digits():
    images = protocol_images("gaussian", limit=20)

    assert len(images.clean) == 20
    assert sorted(set(images.labels.tolist())) == list(range(10))
