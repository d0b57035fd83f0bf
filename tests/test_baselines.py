"""Classical baselines on real test digits with their protocol corruptions, and their tuning."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

from restorecli import baseline_tuning
from restorecli.baseline_tuning import GRIDS, ValidationImages, search_grid, validation_images
from restorecli.baselines import (
    PARAMETERS_PATH,
    PIPELINES,
    Baseline,
    BaselineParametersError,
    Pipeline,
    Stage,
    baselines_for,
    best_baseline,
    build_baselines,
    read_parameters,
    stored_baselines,
    switching_median,
)
from restorecli.corruptions import KINDS, SINGLE_KINDS, CorruptionRecord, protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr

DIGIT_COUNT = 8

ALL_BASELINES = [(kind, baseline) for kind in KINDS for baseline in baselines_for(kind)]
BASELINE_IDS = [f"{kind}: {baseline.name}" for kind, baseline in ALL_BASELINES]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first eight test digits (all of class 0) and their rows in the csv file."""
    split = mnist.load_test_split()
    return split.images[:DIGIT_COUNT], split.rows[:DIGIT_COUNT]


def corrupt_digits(digits, kind: str) -> tuple[np.ndarray, list[CorruptionRecord]]:
    images, rows = digits
    pairs = [protocol_corrupt(image, kind, int(row)) for image, row in zip(images, rows)]
    return np.stack([y for y, _ in pairs]), [record for _, record in pairs]


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_baseline_output_shape_dtype_range(digits, kind, baseline):
    corrupted, records = corrupt_digits(digits, kind)

    for y, record in zip(corrupted, records):
        restored = baseline.restore(y, record)
        assert restored.shape == y.shape
        assert restored.dtype == np.float32
        assert restored.min() >= 0.0
        assert restored.max() <= 1.0


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_baseline_improves_psnr(digits, kind, baseline):
    images, _ = digits
    corrupted, records = corrupt_digits(digits, kind)

    restored = np.stack([baseline.restore(y, record) for y, record in zip(corrupted, records)])

    gain = psnr(images, restored) - psnr(images, corrupted)
    assert gain.mean() > 1.0
    # A mixture can be mild enough that smoothing loses more than it removes on some digits.
    if kind in SINGLE_KINDS:
        assert np.all(gain > 0.0), f"PSNR gain per digit: {np.round(gain, 2)}"


def test_switching_median_keeps_other_pixels(digits):
    corrupted, _ = corrupt_digits(digits, "mixed")

    for y in corrupted:
        restored = switching_median(y.astype(np.float64))
        intact = (y != 0.0) & (y != 1.0)
        np.testing.assert_array_equal(restored[intact], y[intact])


def test_switching_median_replaces_impulses():
    image = np.full((1, 5, 5), 0.4)
    image[0, 2, 2] = 1.0
    image[0, 0, 0] = 0.0

    restored = switching_median(image)

    assert restored[0, 2, 2] == 0.4
    assert restored[0, 0, 0] == 0.4


def test_switching_median_baseline_keeps_other_pixels(digits):
    corrupted, records = corrupt_digits(digits, "salt-pepper")
    baseline = stored_baselines()[("salt-pepper", "switching-median")]

    for y, record in zip(corrupted, records):
        restored = baseline.restore(y, record)
        intact = (y != 0.0) & (y != 1.0)
        np.testing.assert_array_equal(restored[intact], y[intact])


@pytest.mark.parametrize("kind", KINDS)
def test_best_baseline_is_listed(kind):
    best = best_baseline(kind)

    assert isinstance(best, Baseline)
    assert best in baselines_for(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_baseline_names_unique_per_kind(kind):
    names = [baseline.name for baseline in baselines_for(kind)]

    assert len(names) == len(set(names))


@pytest.mark.parametrize(("kind", "baseline"), ALL_BASELINES, ids=BASELINE_IDS)
def test_oracle_named_as_oracle(kind, baseline):
    assert baseline.kind == kind
    assert ("oracle" in baseline.name) == baseline.oracle


def test_baselines_for_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown corruption kind 'speckle'"):
        baselines_for("speckle")


@pytest.mark.parametrize("kind", ["block", "blur"])
def test_oracle_rejects_record_without_truth(digits, kind):
    corrupted, _ = corrupt_digits(digits, "gaussian")
    oracles = [baseline for baseline in baselines_for(kind) if baseline.oracle]

    for baseline in oracles:
        with pytest.raises(ValueError, match="needs a record"):
            baseline.restore(corrupted[0], CorruptionRecord(kinds=["gaussian"]))


# ----------------------------------------------------------------------------------------------
# Parameters stored in restorecli/baselines.json
# ----------------------------------------------------------------------------------------------

TUNED_PIPELINES = [pipeline for pipeline in PIPELINES if pipeline.parameters]
TUNED_PARAMETERS = [(pipeline, name) for pipeline in TUNED_PIPELINES for name in pipeline.parameters]
TUNED_PARAMETER_IDS = [f"{pipeline.kind}/{pipeline.key}: {name}" for pipeline, name in TUNED_PARAMETERS]


@pytest.fixture(scope="module")
def varied_digits() -> tuple[np.ndarray, np.ndarray]:
    """One test digit of each class (the test split is sorted by class, 50 per class), and digit 8.

    Test digit 8 (csv row 80) has 123 pixels equal to 1, far more than most digits, so it shows
    whether a blind block mask keeps saturated strokes.
    """
    split = mnist.load_test_split()
    indices = [8, *range(0, len(split.rows), 50)]
    return split.images[indices], split.rows[indices]


@pytest.fixture(scope="module")
def stored_document() -> dict:
    return json.loads(PARAMETERS_PATH.read_text(encoding="utf-8"))


def test_stored_parameters_cover_every_pipeline(stored_document):
    parameters = read_parameters()

    assert set(parameters) == {(pipeline.kind, pipeline.key) for pipeline in PIPELINES}
    for (kind, key), values in parameters.items():
        entry = stored_document["baselines"][kind][key]
        assert values == entry["parameters"]
        assert set(values) == set(entry["grid"])
        assert entry["validation_rows"]["selection"] == "row % 10 == 1"


def test_stored_parameters_build_listed_baselines():
    built = build_baselines(read_parameters())

    for kind in KINDS:
        assert [baseline.name for baseline in baselines_for(kind)] == [
            baseline.name for (baseline_kind, _), baseline in built.items() if baseline_kind == kind
        ]


@pytest.mark.parametrize("pipeline", TUNED_PIPELINES, ids=lambda pipeline: f"{pipeline.kind}/{pipeline.key}")
def test_stored_values_lie_in_grid(stored_document, pipeline):
    entry = stored_document["baselines"][pipeline.kind][pipeline.key]

    for name, value in entry["parameters"].items():
        assert value in entry["grid"][name]
    assert entry["grid"] == GRIDS[(pipeline.kind, pipeline.key)]


@pytest.mark.parametrize(("pipeline", "name"), TUNED_PARAMETERS, ids=TUNED_PARAMETER_IDS)
def test_baseline_uses_stored_parameter(varied_digits, pipeline, name):
    # Setting one parameter to the grid value farthest from the stored one must change the restored
    # images, so the restorer cannot be using a value of its own.
    parameters = read_parameters()
    stored = parameters[(pipeline.kind, pipeline.key)]
    grid = GRIDS[(pipeline.kind, pipeline.key)][name]
    other = max(grid, key=lambda value: abs(value - stored[name]))
    changed = {**parameters, (pipeline.kind, pipeline.key): {**stored, name: other}}
    corrupted, records = corrupt_digits(varied_digits, pipeline.kind)

    before = stored_baselines()[(pipeline.kind, pipeline.key)]
    after = build_baselines(changed)[(pipeline.kind, pipeline.key)]
    difference = max(
        np.abs(before.restore(y, record) - after.restore(y, record)).max() for y, record in zip(corrupted, records)
    )

    assert difference > 0.0


def test_stored_psnr_matches_recomputation(stored_document):
    # The cheap pipelines are recomputed on all the validation rows that the file names.
    for kind, key in [("gaussian", "gaussian-filter"), ("salt-pepper", "median"), ("salt-pepper", "switching-median")]:
        entry = stored_document["baselines"][kind][key]
        images = validation_images(kind, entry["validation_rows"]["count"])
        baseline = stored_baselines()[(kind, key)]

        restored = np.stack([baseline.restore(y, record) for y, record in zip(images.corrupted, images.records)])

        assert int(images.rows[-1]) == entry["validation_rows"]["last"]
        assert float(psnr(images.clean, restored).mean()) == pytest.approx(entry["validation_psnr_db"], abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Errors for a missing or malformed parameters file
# ----------------------------------------------------------------------------------------------


def test_missing_parameters_file_names_file(tmp_path):
    path = tmp_path / "baselines.json"

    with pytest.raises(BaselineParametersError, match="not found") as raised:
        read_parameters(path)

    assert str(path) in str(raised.value)
    assert "python -m restorecli.baseline_tuning" in str(raised.value)


def _without_key(document: dict, kind: str, key: str) -> dict:
    del document["baselines"][kind][key]
    return document


def _with_value(document: dict, kind: str, key: str, name: str, value) -> dict:
    document["baselines"][kind][key]["parameters"][name] = value
    return document


MALFORMED_CASES = {
    "invalid JSON": (lambda document: "{not json", "invalid JSON"),
    "top-level list": (lambda document: [], 'expected a JSON object with a "baselines" object'),
    "entry missing": (
        lambda document: _without_key(document, "gaussian", "nl-means"),
        '"baselines" -> "gaussian" -> "nl-means" is missing',
    ),
    "unknown parameter": (
        lambda document: _with_value(document, "gaussian", "nl-means", "patch", 7),
        r"has parameters \['h', 'patch'\], expected: h",
    ),
    "string value": (
        lambda document: _with_value(document, "gaussian", "nl-means", "h", "0.15"),
        "parameter 'h' .* is '0.15', expected a finite number",
    ),
    "boolean value": (
        lambda document: _with_value(document, "blur", "wiener-oracle-kernel", "balance", True),
        "parameter 'balance' .* is True, expected a finite number",
    ),
    "fractional count": (
        lambda document: _with_value(document, "salt-pepper", "impulse-inpainting-stretch", "passes", 2.5),
        "parameter 'passes' .* is 2.5, expected an integer",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_parameters_file_names_file(tmp_path, stored_document, case):
    change, message = MALFORMED_CASES[case]
    changed = change(json.loads(json.dumps(stored_document)))
    path = tmp_path / "baselines.json"
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed), encoding="utf-8")

    with pytest.raises(BaselineParametersError, match=message) as raised:
        read_parameters(path)

    assert f"baseline parameters file {path} is malformed" in str(raised.value)


# ----------------------------------------------------------------------------------------------
# Grid search
# ----------------------------------------------------------------------------------------------


def _offset_pipeline() -> Pipeline:
    """A pipeline that replaces every pixel by `offset`, then scales it by `scale`."""
    return Pipeline(
        key="offset",
        kind="gaussian",
        oracle=False,
        name="offset {offset:g} scale {scale:g}",
        description="offset {offset:g} scale {scale:g}",
        stages=(
            Stage(lambda image, record, offset: np.full_like(image, offset), ("offset",)),
            Stage(lambda image, record, scale: image * scale, ("scale",)),
        ),
    )


def _constant_images(value: float, count: int = 3) -> ValidationImages:
    clean = np.full((count, 1, 28, 28), value, dtype=np.float32)
    return ValidationImages(
        clean=clean, corrupted=np.zeros_like(clean), records=[CorruptionRecord()] * count, rows=np.arange(count)
    )


def test_search_grid_picks_exact_point():
    # Of the six products, only 1.0 * 0.25 equals the clean value 0.25: an exact restoration, 100 dB.
    # Every value here is a short binary fraction, so float32 and float64 hold it exactly.
    grid = {"offset": [0.5, 1.0], "scale": [0.25, 0.75, 1.0]}

    result = search_grid(_offset_pipeline(), grid, _constant_images(0.25))

    assert result.parameters == {"offset": 1.0, "scale": 0.25}
    assert result.psnr_db == 100.0
    assert result.grid_points == 6


@pytest.mark.parametrize("offsets", [[0.75, 0.25], [0.25, 0.75]])
def test_search_grid_breaks_tie_by_grid_order(offsets):
    # 0.25 and 0.75 are both exactly 0.25 from the clean value 0.5, so both score 12.04 dB.
    grid = {"offset": offsets, "scale": [1.0]}

    result = search_grid(_offset_pipeline(), grid, _constant_images(0.5))

    assert result.parameters == {"offset": offsets[0], "scale": 1.0}
    assert result.psnr_db == pytest.approx(-10.0 * np.log10(0.0625))


def test_search_grid_rejects_incomplete_grid():
    with pytest.raises(ValueError, match="covers \\['offset'\\]"):
        search_grid(_offset_pipeline(), {"offset": [0.5]}, _constant_images(0.3))


def test_tuning_run_writes_best_grid_point(tmp_path):
    output = tmp_path / "baselines.json"

    status = baseline_tuning.main(["--kinds", "salt-pepper", "--limit", "3", "--output", str(output)])

    assert status == 0
    document = json.loads(output.read_text(encoding="utf-8"))
    assert list(document["baselines"]) == ["salt-pepper"]
    entry = document["baselines"]["salt-pepper"]["impulse-inpainting-stretch"]
    assert entry["validation_rows"] == {"selection": "row % 10 == 1", "count": 3, "first": 1, "last": 21}

    # Score every grid point again through the public restorer and compare with the stored choice.
    pipeline = next(pipeline for pipeline in PIPELINES if pipeline.key == "impulse-inpainting-stretch")
    images = validation_images("salt-pepper", 3)
    scores = {}
    for values in itertools.product(*(entry["grid"][name] for name in pipeline.parameters)):
        parameters = dict(zip(pipeline.parameters, values))
        restorer = pipeline.restorer(parameters)
        restored = np.stack([restorer(y, record) for y, record in zip(images.corrupted, images.records)])
        scores[values] = float(psnr(images.clean, restored).mean())
    chosen = tuple(entry["parameters"][name] for name in pipeline.parameters)

    assert len(scores) == 48
    assert entry["validation_psnr_db"] == pytest.approx(scores[chosen], abs=1e-9)
    assert scores[chosen] == max(scores.values())


def test_partial_tuning_keeps_other_kinds(tmp_path, stored_document):
    output = tmp_path / "baselines.json"
    shutil.copyfile(PARAMETERS_PATH, output)

    status = baseline_tuning.main(["--kinds", "block", "--limit", "2", "--output", str(output)])

    assert status == 0
    document = json.loads(output.read_text(encoding="utf-8"))
    assert list(document["baselines"]) == list(KINDS)
    for kind in KINDS:
        if kind != "block":
            assert document["baselines"][kind] == stored_document["baselines"][kind]
    assert document["baselines"]["block"]["inpaint-blind-mask"]["validation_rows"]["count"] == 2
    assert set(read_parameters(output)) == set(read_parameters())


def test_partial_tuning_rejects_malformed_file(tmp_path, capsys):
    output = tmp_path / "baselines.json"
    output.write_text("{not json", encoding="utf-8")

    status = baseline_tuning.main(["--kinds", "block", "--limit", "2", "--output", str(output)])

    assert status == 1
    assert f"cannot keep the other kinds of baseline parameters file {output}" in capsys.readouterr().err
    assert output.read_text(encoding="utf-8") == "{not json"
