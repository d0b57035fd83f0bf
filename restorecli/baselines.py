"""Classical restorers from scikit-image and scipy, with the parameters tuned for protocol v1.

Every restorer takes a corrupted image (C, H, W) in [0, 1] and the CorruptionRecord of its draw,
and returns the restored image as float32 (C, H, W) clipped to [0, 1]. Only oracle restorers read
the record: the true block mask or the true blur sigma.

Each restorer is a Pipeline of steps. The values of its tuned parameters come from
restorecli/baselines.json, which `python -m restorecli.baseline_tuning` writes after a grid search by
mean PSNR on the validation rows (row % 10 == 1) of MNIST-5k. Settings that are not tuned are
constants here: the 100 Richardson-Lucy iterations of protocol v1's oracle-kernel restorer and the
5x5 non-local means patches searched within distance 6.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import bm3d
import numpy as np
from scipy import ndimage
from skimage import filters, restoration

from restorecli.corruptions import KINDS, CorruptionRecord, gaussian_kernel
from restorecli.errors import RestoreCliError

Restorer = Callable[[np.ndarray, CorruptionRecord], np.ndarray]

PARAMETERS_PATH = Path(__file__).with_name("baselines.json")
TUNING_COMMAND = "python -m restorecli.baseline_tuning"

RICHARDSON_LUCY_ITERATIONS = 100
NL_MEANS_PATCH_SIZE = 5
NL_MEANS_PATCH_DISTANCE = 6
# Width of the Gaussian that smooths away noise and impulses before a bright block is thresholded.
BLOCK_DETECTION_SIGMA = 1.0
# Donoho's factor: the median absolute value of Gaussian noise of standard deviation 1.
MAD_TO_SIGMA = 0.6745

# Parameters that count iterations or pixels must be integers. The others may be any finite number.
INTEGER_PARAMETERS = frozenset({"iterations", "passes", "side", "grow"})


@dataclass(frozen=True)
class Baseline:
    """A classical restorer for one corruption kind, named with its parameters."""

    name: str
    kind: str
    oracle: bool
    description: str
    restore: Restorer


class BaselineParametersError(RestoreCliError):
    """The file of tuned baseline parameters is missing, unreadable or malformed."""


# ----------------------------------------------------------------------------------------------
# Steps: float64 (C, H, W) in, float64 (C, H, W) out, each channel restored on its own.
# ----------------------------------------------------------------------------------------------


def gaussian_smoothing(image: np.ndarray, sigma: float) -> np.ndarray:
    return filters.gaussian(image, sigma=sigma, channel_axis=0)


def tv_chambolle(image: np.ndarray, weight: float) -> np.ndarray:
    return restoration.denoise_tv_chambolle(image, weight=weight, channel_axis=0)


def nl_means(image: np.ndarray, h: float) -> np.ndarray:
    """Denoise with fast non-local means (5x5 patches, search distance 6) channel by channel."""
    # denoise_nl_means expects channels last, so each channel goes in as a 2-D image.
    return np.stack(
        [
            restoration.denoise_nl_means(
                channel,
                h=h,
                fast_mode=True,
                patch_size=NL_MEANS_PATCH_SIZE,
                patch_distance=NL_MEANS_PATCH_DISTANCE,
            )
            for channel in image
        ]
    )


def contrast_stretch(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1], so values below `low` become 0 and values above `high` become 1."""
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def median_3x3(image: np.ndarray) -> np.ndarray:
    return ndimage.median_filter(image, size=(1, 3, 3), mode="reflect")


def switching_median(image: np.ndarray) -> np.ndarray:
    """Replace only the pixels exactly equal to 0 or 1 by their 3x3 median and keep all others."""
    # Salt-and-pepper noise sets pixels to exactly 0 or 1, so a pixel with any other value cannot be an impulse.
    impulses = (image == 0.0) | (image == 1.0)
    return np.where(impulses, median_3x3(image), image)


def inpaint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the pixels under `mask` (H, W) by biharmonic inpainting in every channel."""
    if not mask.any():
        return image
    filled = restoration.inpaint_biharmonic(image, mask, channel_axis=0)
    return np.clip(filled, 0.0, 1.0)


def blind_inpaint(image: np.ndarray) -> np.ndarray:
    """Inpaint every pixel that equals 1 in all channels, the value a filled block has."""
    # Saturated stroke pixels of the clean digit are inpainted too, which costs a little PSNR.
    mask = np.all(image == 1.0, axis=0)
    return inpaint(image, mask)


def estimate_noise_sigma(channel: np.ndarray) -> float:
    """Estimate the standard deviation of white Gaussian noise in a 2-D image by Donoho's MAD rule.

    Uses the finest diagonal Haar wavelet coefficients, as skimage.restoration.estimate_sigma does
    with wavelet="db1". That function needs PyWavelets, which restorecli does not depend on.
    """
    height, width = channel.shape
    even = channel[: height - height % 2, : width - width % 2]
    diagonal = (even[0::2, 0::2] - even[0::2, 1::2] - even[1::2, 0::2] + even[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(diagonal)) / MAD_TO_SIGMA)


def bm3d_denoise(image: np.ndarray, sigma: float) -> np.ndarray:
    """Denoise each channel with BM3D (the `bm3d` package) for white noise of std `sigma`."""
    return np.stack([bm3d.bm3d(channel, sigma_psd=sigma) for channel in image])


def nl_means_estimated_sigma(image: np.ndarray, factor: float) -> np.ndarray:
    """Denoise each channel with fast non-local means, h = `factor` times its estimated noise sigma.

    The estimate also goes in as `sigma`, which fast mode subtracts from the patch distances. A
    channel whose estimate is 0 has no noise to remove and is returned unchanged.
    """
    channels = []
    for channel in image:
        sigma = estimate_noise_sigma(channel)
        if sigma == 0.0:
            channels.append(channel)
            continue
        channels.append(
            restoration.denoise_nl_means(
                channel,
                h=factor * sigma,
                sigma=sigma,
                fast_mode=True,
                patch_size=NL_MEANS_PATCH_SIZE,
                patch_distance=NL_MEANS_PATCH_DISTANCE,
            )
        )
    return np.stack(channels)


def final_smoothing(image: np.ndarray, final_sigma: float) -> np.ndarray:
    """Smooth with a Gaussian of width `final_sigma`, which softens the hard edges that a stretch leaves."""
    return gaussian_smoothing(image, final_sigma)


def inpaint_impulses(image: np.ndarray, passes: int) -> np.ndarray:
    """Inpaint the likely impulses, then look for impulses again in the result, `passes` times in all.

    A likely impulse equals 0 or 1 in every channel and differs from its 3x3 median in some channel,
    which is the set of pixels that switching_median changes. Biharmonic inpainting estimates them
    from all the other pixels instead of from the 3x3 window alone.
    """
    for _ in range(passes):
        candidates = np.all((image == 0.0) | (image == 1.0), axis=0)
        changed = np.any(median_3x3(image) != image, axis=0)
        image = inpaint(image, candidates & changed)
    return image


def inpaint_opened_mask(image: np.ndarray, side: int) -> np.ndarray:
    """Inpaint the pixels equal to 1 that survive a binary opening with a `side` x `side` square.

    The opening keeps a filled block but drops the saturated pixels of thin digit strokes.
    """
    mask = np.all(image == 1.0, axis=0)
    mask = ndimage.binary_opening(mask, structure=np.ones((side, side), dtype=bool))
    return inpaint(image, mask)


def inpaint_bright_block(image: np.ndarray, threshold: float, side: int, grow: int) -> np.ndarray:
    """Find a bright block that blur and noise have altered, and inpaint it.

    The mask is the set of pixels whose Gaussian-smoothed value (sigma 1) is at least `threshold` in
    every channel, opened with a `side` x `side` square to drop digit strokes, then dilated `grow`
    times to cover the block's blurred border.
    """
    mask = np.all(gaussian_smoothing(image, BLOCK_DETECTION_SIGMA) >= threshold, axis=0)
    mask = ndimage.binary_opening(mask, structure=np.ones((side, side), dtype=bool))
    if grow > 0:
        mask = ndimage.binary_dilation(mask, iterations=grow)
    return inpaint(image, mask)


def richardson_lucy(image: np.ndarray, sigma: float, iterations: int = RICHARDSON_LUCY_ITERATIONS) -> np.ndarray:
    """Deconvolve the Gaussian blur of width `sigma` with `iterations` Richardson-Lucy iterations."""
    kernel = gaussian_kernel(sigma)
    return np.stack(
        [restoration.richardson_lucy(channel, kernel, num_iter=iterations, clip=True) for channel in image]
    )


def wiener(image: np.ndarray, sigma: float, balance: float) -> np.ndarray:
    """Deconvolve the Gaussian blur of width `sigma` with a Wiener filter of the given balance."""
    kernel = gaussian_kernel(sigma)
    return np.stack([restoration.wiener(channel, kernel, balance=balance, clip=True) for channel in image])


# ----------------------------------------------------------------------------------------------
# Oracle steps: they read the truth about the corruption from its record.
# ----------------------------------------------------------------------------------------------


def _block_mask(record: CorruptionRecord | None) -> np.ndarray:
    if record is None or record.block_mask is None:
        raise ValueError(
            "the oracle inpainting baseline needs a record with a block mask; "
            "pass the record of a 'block' corruption"
        )
    return record.block_mask


def _blur_sigma(record: CorruptionRecord | None, method: str) -> float:
    if record is None or record.blur_sigma is None:
        raise ValueError(
            f"the oracle {method} baseline needs a record with a blur sigma; "
            "pass the record of a 'blur' corruption"
        )
    return record.blur_sigma


def inpaint_oracle_mask(image: np.ndarray, record: CorruptionRecord | None) -> np.ndarray:
    """Inpaint the true block mask stored in `record`."""
    return inpaint(image, _block_mask(record))


def richardson_lucy_oracle_kernel(image: np.ndarray, record: CorruptionRecord | None) -> np.ndarray:
    """Deconvolve with the true blur kernel stored in `record` (Richardson-Lucy, 100 iterations)."""
    return richardson_lucy(image, _blur_sigma(record, "Richardson-Lucy"))


def wiener_oracle_kernel(image: np.ndarray, record: CorruptionRecord | None, balance: float) -> np.ndarray:
    """Deconvolve with the true blur kernel stored in `record` (Wiener)."""
    return wiener(image, _blur_sigma(record, "Wiener"), balance)


# ----------------------------------------------------------------------------------------------
# Pipelines: a chain of stages between the input check and the float32 output.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline, called as `apply(image, record, **values)`, and its tuned parameters."""

    apply: Callable[..., np.ndarray]
    parameters: tuple[str, ...] = ()


def blind_stage(step: Callable[..., np.ndarray], *parameters: str) -> Stage:
    """Make a stage of `step(image, **values)`, which never reads the corruption record."""
    return Stage(lambda image, record, **values: step(image, **values), parameters)


def _as_float64(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected one image of shape (C, H, W), got shape {image.shape}")
    return image.astype(np.float64)


def _as_output(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Pipeline:
    """A restorer without its parameter values: its stages and the templates of its name and description.

    `key` names the pipeline within its kind in baselines.json. `name` and `description` are
    str.format templates that the parameter values fill in.
    """

    key: str
    kind: str
    oracle: bool
    name: str
    description: str
    stages: tuple[Stage, ...]

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(name for stage in self.stages for name in stage.parameters)

    def start(self, image: np.ndarray) -> np.ndarray:
        """Check one input image and convert it to the float64 that the stages take."""
        return _as_float64(image)

    def finish(self, image: np.ndarray) -> np.ndarray:
        """Convert the last stage's output to the restorer's float32 output in [0, 1]."""
        return _as_output(image)

    def restorer(self, parameters: Mapping[str, float]) -> Restorer:
        """Return the restorer that runs every stage with its values from `parameters`."""
        stage_values = [{name: parameters[name] for name in stage.parameters} for stage in self.stages]

        def restore(image: np.ndarray, record: CorruptionRecord | None = None) -> np.ndarray:
            result = self.start(image)
            for stage, values in zip(self.stages, stage_values):
                result = stage.apply(result, record, **values)
            return self.finish(result)

        return restore

    def baseline(self, parameters: Mapping[str, float]) -> Baseline:
        return Baseline(
            name=self.name.format(**parameters),
            kind=self.kind,
            oracle=self.oracle,
            description=self.description.format(**parameters),
            restore=self.restorer(parameters),
        )


PIPELINES = (
    Pipeline(
        key="gaussian-filter",
        kind="gaussian",
        oracle=False,
        name="Gaussian filter sigma {sigma:g}",
        description="skimage.filters.gaussian with sigma {sigma:g}",
        stages=(blind_stage(gaussian_smoothing, "sigma"),),
    ),
    Pipeline(
        key="tv-chambolle",
        kind="gaussian",
        oracle=False,
        name="TV Chambolle weight {weight:g}",
        description="total-variation denoising (Chambolle) with weight {weight:g}",
        stages=(blind_stage(tv_chambolle, "weight"),),
    ),
    Pipeline(
        key="nl-means",
        kind="gaussian",
        oracle=False,
        name="non-local means h {h:g}",
        description="fast non-local means, 5x5 patches, distance 6, h {h:g}",
        stages=(blind_stage(nl_means, "h"),),
    ),
    Pipeline(
        key="bm3d",
        kind="gaussian",
        oracle=False,
        name="BM3D sigma {sigma:g}",
        description="BM3D denoising (bm3d package) for noise std {sigma:g}",
        stages=(blind_stage(bm3d_denoise, "sigma"),),
    ),
    Pipeline(
        key="nl-means-stretch",
        kind="gaussian",
        oracle=False,
        name="non-local means h {h:g} + contrast stretch",
        description="fast non-local means with h {h:g}, then [{low:g}, {high:g}] stretched to [0, 1]",
        # The stretch turns the denoised grey haze back into black background and white strokes,
        # which MNIST digits mostly are.
        stages=(blind_stage(nl_means, "h"), blind_stage(contrast_stretch, "low", "high")),
    ),
    Pipeline(
        key="gaussian-filter-stretch-smoothing",
        kind="gaussian",
        oracle=False,
        name="Gaussian filter sigma {sigma:g} + contrast stretch + Gaussian filter sigma {final_sigma:g}",
        description=(
            "skimage.filters.gaussian with sigma {sigma:g}, then [{low:g}, {high:g}] stretched to [0, 1], "
            "then skimage.filters.gaussian with sigma {final_sigma:g}"
        ),
        stages=(
            blind_stage(gaussian_smoothing, "sigma"),
            blind_stage(contrast_stretch, "low", "high"),
            blind_stage(final_smoothing, "final_sigma"),
        ),
    ),
    Pipeline(
        key="median",
        kind="salt-pepper",
        oracle=False,
        name="3x3 median",
        description="3x3 median filter on every pixel",
        stages=(blind_stage(median_3x3),),
    ),
    Pipeline(
        key="switching-median",
        kind="salt-pepper",
        oracle=False,
        name="switching 3x3 median",
        description="3x3 median on the pixels equal to 0 or 1 only",
        stages=(blind_stage(switching_median),),
    ),
    Pipeline(
        key="impulse-inpainting-stretch",
        kind="salt-pepper",
        oracle=False,
        name="impulse inpainting, {passes} passes + contrast stretch",
        description=(
            "{passes} passes of biharmonic inpainting of the pixels equal to 0 or 1 that differ from "
            "their 3x3 median, then [{low:g}, {high:g}] stretched to [0, 1]"
        ),
        stages=(blind_stage(inpaint_impulses, "passes"), blind_stage(contrast_stretch, "low", "high")),
    ),
    Pipeline(
        key="inpaint-oracle-mask",
        kind="block",
        oracle=True,
        name="biharmonic inpainting (oracle mask)",
        description="biharmonic inpainting of the true block mask",
        stages=(Stage(inpaint_oracle_mask),),
    ),
    Pipeline(
        key="inpaint-blind-mask",
        kind="block",
        oracle=False,
        name="biharmonic inpainting (blind mask)",
        description="biharmonic inpainting of the pixels equal to 1",
        stages=(blind_stage(blind_inpaint),),
    ),
    Pipeline(
        key="inpaint-opened-mask",
        kind="block",
        oracle=False,
        name="biharmonic inpainting (blind mask opened {side}x{side})",
        description="biharmonic inpainting of the pixels equal to 1 that survive an opening with a {side}x{side} square",
        stages=(blind_stage(inpaint_opened_mask, "side"),),
    ),
    Pipeline(
        key="richardson-lucy-oracle-kernel",
        kind="blur",
        oracle=True,
        name="Richardson-Lucy (oracle kernel)",
        description="100 Richardson-Lucy iterations with the true Gaussian kernel",
        stages=(Stage(richardson_lucy_oracle_kernel),),
    ),
    Pipeline(
        key="wiener-oracle-kernel",
        kind="blur",
        oracle=True,
        name="Wiener (oracle kernel)",
        description="Wiener deconvolution with the true Gaussian kernel, balance {balance:g}",
        stages=(Stage(wiener_oracle_kernel, ("balance",)),),
    ),
    Pipeline(
        key="richardson-lucy-stretch",
        kind="blur",
        oracle=False,
        name="Richardson-Lucy sigma {sigma:g}, {iterations} iterations + contrast stretch",
        description=(
            "{iterations} Richardson-Lucy iterations with a Gaussian kernel of sigma {sigma:g}, a tuned "
            "value rather than the record's, then [{low:g}, {high:g}] stretched to [0, 1]"
        ),
        stages=(
            blind_stage(richardson_lucy, "sigma", "iterations"),
            blind_stage(contrast_stretch, "low", "high"),
        ),
    ),
    Pipeline(
        key="median",
        kind="mixed",
        oracle=False,
        name="3x3 median",
        description="3x3 median filter on every pixel",
        stages=(blind_stage(median_3x3),),
    ),
    Pipeline(
        key="switching-median-tv",
        kind="mixed",
        oracle=False,
        name="switching median + TV {weight:g}",
        description="switching 3x3 median, then TV Chambolle with weight {weight:g}",
        stages=(blind_stage(switching_median), blind_stage(tv_chambolle, "weight")),
    ),
    Pipeline(
        key="inpaint-switching-median-tv",
        kind="mixed",
        oracle=False,
        name="blind inpainting + switching median + TV {weight:g}",
        description="biharmonic inpainting of the pixels equal to 1, switching 3x3 median, TV weight {weight:g}",
        stages=(blind_stage(blind_inpaint), blind_stage(switching_median), blind_stage(tv_chambolle, "weight")),
    ),
    Pipeline(
        key="inpaint-switching-median-nl-means-stretch",
        kind="mixed",
        oracle=False,
        name="blind inpainting + switching median + NLM + stretch",
        description=(
            "biharmonic inpainting of the pixels equal to 1, switching 3x3 median, "
            "fast non-local means with h {h:g}, then [{low:g}, {high:g}] stretched to [0, 1]"
        ),
        stages=(
            blind_stage(blind_inpaint),
            blind_stage(switching_median),
            blind_stage(nl_means, "h"),
            blind_stage(contrast_stretch, "low", "high"),
        ),
    ),
    Pipeline(
        key="impulse-block-inpainting-nl-means-stretch-smoothing",
        kind="mixed",
        oracle=False,
        name="impulse inpainting + block inpainting + NLM (estimated sigma) + stretch + Gaussian",
        description=(
            "{passes} passes of impulse inpainting; biharmonic inpainting of the pixels at least {threshold:g} "
            "after a Gaussian of sigma 1, opened with a {side}x{side} square and dilated {grow} times; fast "
            "non-local means with h {factor:g} times the estimated noise sigma; [{low:g}, {high:g}] stretched "
            "to [0, 1]; skimage.filters.gaussian with sigma {final_sigma:g}"
        ),
        stages=(
            blind_stage(inpaint_impulses, "passes"),
            blind_stage(inpaint_bright_block, "threshold", "side", "grow"),
            blind_stage(nl_means_estimated_sigma, "factor"),
            blind_stage(contrast_stretch, "low", "high"),
            blind_stage(final_smoothing, "final_sigma"),
        ),
    ),
)

# Keys of the pipelines with the highest mean test PSNR per kind, as bench/baselines_reference.py measures.
# On block, the blind opened-mask pipeline restores all 500 test images exactly as the oracle mask
# does, so the tie keeps protocol v1's oracle.
_BEST_KEYS = {
    "gaussian": "gaussian-filter-stretch-smoothing",
    "salt-pepper": "impulse-inpainting-stretch",
    "block": "inpaint-oracle-mask",
    "blur": "richardson-lucy-stretch",
    "mixed": "impulse-block-inpainting-nl-means-stretch-smoothing",
}


# ----------------------------------------------------------------------------------------------
# Tuned parameters: read from baselines.json once.
# ----------------------------------------------------------------------------------------------


def _malformed(path: Path, detail: str) -> BaselineParametersError:
    return BaselineParametersError(
        f"baseline parameters file {path} is malformed: {detail}; rewrite it with: {TUNING_COMMAND}"
    )


def _check_value(path: Path, label: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _malformed(path, f"parameter {name!r} of {label} is {value!r}, expected a finite number")
    if name in INTEGER_PARAMETERS and not isinstance(value, int):
        raise _malformed(path, f"parameter {name!r} of {label} is {value!r}, expected an integer")


def parse_parameters(document: Any, path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Check the parsed JSON `document` and return the parameters of every pipeline by (kind, key).

    `path` only names the file in error messages.
    """
    tuned = document.get("baselines") if isinstance(document, dict) else None
    if not isinstance(tuned, dict):
        raise _malformed(path, 'expected a JSON object with a "baselines" object')

    parameters = {}
    for pipeline in PIPELINES:
        label = f'"baselines" -> "{pipeline.kind}" -> "{pipeline.key}"'
        by_key = tuned.get(pipeline.kind)
        entry = by_key.get(pipeline.key) if isinstance(by_key, dict) else None
        if not isinstance(entry, dict):
            raise _malformed(path, f"{label} is missing")
        values = entry.get("parameters")
        if not isinstance(values, dict):
            raise _malformed(path, f'{label} has no "parameters" object')
        if set(values) != set(pipeline.parameters):
            expected = ", ".join(pipeline.parameters) or "none"
            raise _malformed(path, f"{label} has parameters {sorted(values)}, expected: {expected}")
        for name, value in values.items():
            _check_value(path, label, name, value)
        parameters[(pipeline.kind, pipeline.key)] = values
    return parameters


def read_parameters(path: Path = PARAMETERS_PATH) -> dict[tuple[str, str], dict[str, float]]:
    """Read the tuned parameters in `path`, check them, and return them by (kind, key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineParametersError(
            f"baseline parameters file {path} not found; create it with: {TUNING_COMMAND}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineParametersError(f"cannot read baseline parameters file {path}: {error}") from error

    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _malformed(path, f"invalid JSON ({error})") from error
    return parse_parameters(document, path)


def build_baselines(parameters: Mapping[tuple[str, str], Mapping[str, float]]) -> dict[tuple[str, str], Baseline]:
    """Build every pipeline's restorer with its values from `parameters`, keyed by (kind, key)."""
    return {
        (pipeline.kind, pipeline.key): pipeline.baseline(parameters[(pipeline.kind, pipeline.key)])
        for pipeline in PIPELINES
    }


@lru_cache(maxsize=1)
def stored_baselines() -> Mapping[tuple[str, str], Baseline]:
    """Return every restorer built with the parameters in baselines.json, keyed by (kind, key).

    The file is read on the first successful call only, and the result is read-only because it is shared.
    """
    return MappingProxyType(build_baselines(read_parameters(PARAMETERS_PATH)))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown corruption kind {kind!r}; choose one of {', '.join(KINDS)}")


def baselines_for(kind: str) -> list[Baseline]:
    """Return the classical restorers compared against for `kind`, protocol v1's first."""
    _check_kind(kind)
    return [baseline for (baseline_kind, _), baseline in stored_baselines().items() if baseline_kind == kind]


def best_baseline(kind: str) -> Baseline:
    """Return the restorer with the highest mean test PSNR for `kind`, oracles included."""
    _check_kind(kind)
    return stored_baselines()[(kind, _BEST_KEYS[kind])]
