"""The one typed config that every command shares: TOML file first, command-line overrides on top."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from restorecli.corruptions import CorruptionSpec
from restorecli.errors import UsageError

NoiseKind = Literal["gaussian", "salt-pepper", "block", "blur", "mixed"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_range(value: tuple[float, float], low: float, high: float, name: str) -> tuple[float, float]:
    lo, hi = value
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{name} range {list(value)} must satisfy {low} <= lo <= hi <= {high}")
    return value


class ModelConfig(Section):
    """Network architecture; a checkpoint stores it so that it alone rebuilds the model."""

    preset: str = Field("DiT-S/4", description="size preset, e.g. DiT-S/4 or UNet-S (`restorecli presets` lists all)")
    qk_norm: bool = Field(True, description="RMS-normalise queries and keys, which keeps the JVP bounded")
    time_scale: float = Field(
        10.0, gt=0.0,
        description="times are multiplied by this before their sinusoidal embedding; 1000 made the MeanFlow JVP target spike in pilots",
    )
    conv_head_channels: int = Field(
        0, ge=0, le=512,
        description=(
            "DiT only: channels of a 3x3 convolution head at full resolution that refines the patch "
            "output from it and the input pixels; 0 = no head (the plain DiT)"
        ),
    )
    conv_stem_channels: int = Field(
        0, ge=0, le=512,
        description=(
            "DiT only: channels of two 3x3 convolutions at full resolution whose features are "
            "patchified beside the input pixels; 0 = no stem (the plain DiT)"
        ),
    )
    saturation_masks: bool = Field(
        False,
        description=(
            "DiT only: the convolution stem and head also read two masks per channel, of the "
            "black and the white pixels, where clipping and impulses put values; needs a stem or head"
        ),
    )
    output_gate: bool = Field(
        False,
        description=(
            "DiT only: the transformer and the convolution head also predict a gate in (0, 1) per "
            "pixel that scales the output, so a pixel the network trusts gets exactly no change; needs a head"
        ),
    )
    num_classes: int = Field(
        0, ge=0, le=100_000,
        description=(
            "class labels the network embeds, plus one null class at index num_classes; "
            "0 means no label input (restorers). task = 'generate' sets 10, the MNIST digits"
        ),
    )


class ObjectiveConfig(Section):
    """Training target of the network and the distribution of its (t, r) pairs."""

    kind: Literal["meanflow", "imf", "flow_matching", "regression"] = Field(
        "meanflow",
        description=(
            "meanflow (average velocity u by the MeanFlow identity, 1..N steps); imf (improved MeanFlow: "
            "a second head predicts v, doubling the output channels, and u is trained so that "
            "u + (t - r) du/dt matches v); flow_matching (instantaneous velocity only, r = t, N Euler steps); "
            "or regression (x_hat = f(y) by MSE in one step: the reference)"
        ),
    )
    source: Literal["bridge", "noise"] = Field(
        "bridge", description="bridge: start from y + source_sigma * noise; noise: start from pure noise"
    )
    source_sigma: float = Field(0.1, ge=0.0, le=2.0, description="bridge source noise, in [-1, 1] units")
    condition_on_y: bool = Field(
        False, description="also feed y as input channels in the bridge form (always on for noise)"
    )
    restore_temperature: float = Field(
        1.0, ge=0.0, le=1.0,
        description="scale of the source noise when restoring: 1 as in training, 0 starts at its mean (deterministic)",
    )
    restore_velocity: Literal["average", "instantaneous"] = Field(
        "average",
        description=(
            "velocity the sampler steps with when restoring: average (u, MeanFlow steps) or instantaneous "
            "(Euler steps with imf's v head; one step then estimates the posterior mean E[x | y]). "
            "meanflow has no v head, flow_matching's one head is instantaneous, regression takes one step"
        ),
    )
    equal_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of rows with r = t (meanflow, imf; flow_matching ignores it)"
    )
    corner_fraction: float = Field(
        0.25, ge=0.0, le=1.0,
        description="share of rows at (r, t) = (0, 1), the 1-step query (meanflow, imf; flow_matching ignores it)",
    )
    time_mu: float = Field(-0.4, description="logit-normal mean of the (t, r) draws")
    time_sigma: float = Field(1.0, gt=0.0, description="logit-normal standard deviation")
    adaptive_p: float = Field(1.0, ge=0.0, description="adaptive L2 power p (0 = plain MSE)")
    adaptive_c: float = Field(1e-3, gt=0.0, description="adaptive L2 constant c, for per-pixel mean squared error")

    @model_validator(mode="after")
    def _fractions_fit(self) -> "ObjectiveConfig":
        if self.equal_fraction + self.corner_fraction > 1.0:
            raise ValueError("equal_fraction + corner_fraction must be at most 1")
        if self.kind == "meanflow" and self.restore_velocity == "instantaneous":
            raise ValueError(
                "restore_velocity 'instantaneous' needs a v head, and objective kind 'meanflow' has none; "
                "set restore_velocity = 'average' or train objective kind 'imf'"
            )
        if self.kind != "regression" and self.source == "bridge" and self.condition_on_y and self.source_sigma == 0:
            # The bridge shortcut: from z_t and y the network solves x = (z_t - t*y) / (1 - t).
            raise ValueError(
                "the bridge source with y as input channels (condition_on_y, which `finetune --source "
                "bridge` turns on) needs source_sigma > 0, or the network can solve x from z_t and y by "
                "algebra instead of learning to restore; set source_sigma = 0.2 under [objective] in the config file"
            )
        return self


class CorruptionConfig(Section):
    """Training corruption: the kind and the ranges its levels are drawn from (uniformly)."""

    noise: NoiseKind = Field("mixed", description="corruption kind to train on")
    gaussian_sigma: tuple[float, float] = Field((0.05, 0.35), description="Gaussian noise std, [0, 1] pixel units")
    salt_pepper_amount: tuple[float, float] = Field((0.02, 0.25), description="share of pixels replaced")
    block_side: tuple[int, int] = Field((6, 14), description="square side in pixels")
    blur_sigma: tuple[float, float] = Field((0.5, 1.6), description="Gaussian blur std in pixels")
    blur_noise: float = Field(0.01, ge=0.0, le=1.0, description="noise std added after blurring")
    mixed_probability: float = Field(0.5, gt=0.0, le=1.0, description="chance each kind joins a mixture")
    single_kind_share: float = Field(
        0.0, ge=0.0, le=1.0, description="mixed only: share of images corrupted by exactly one random kind"
    )

    def to_spec(self, kind: str | None = None) -> CorruptionSpec:
        """Return the corruption spec of these ranges, for `kind` or else the configured kind."""
        return CorruptionSpec(
            kind=kind or self.noise,
            gaussian_sigma=tuple(self.gaussian_sigma),
            salt_pepper_amount=tuple(self.salt_pepper_amount),
            block_side=tuple(self.block_side),
            blur_sigma=tuple(self.blur_sigma),
            blur_noise=self.blur_noise,
            mixed_probability=self.mixed_probability,
            single_kind_share=self.single_kind_share,
        )

    @field_validator("gaussian_sigma")
    @classmethod
    def _gaussian(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, 0.0, 1.0, "gaussian_sigma")

    @field_validator("salt_pepper_amount")
    @classmethod
    def _amount(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, 0.0, 1.0, "salt_pepper_amount")

    @field_validator("block_side")
    @classmethod
    def _side(cls, value: tuple[int, int]) -> tuple[int, int]:
        return _check_range(value, 1, 4096, "block_side")

    @field_validator("blur_sigma")
    @classmethod
    def _blur(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, 0.05, 10.0, "blur_sigma")


class DataConfig(Section):
    """Training images: the bundled MNIST subset or a folder of PNG/JPEG files."""

    source: str = Field("mnist", description="'mnist' (bundled, offline) or a folder of PNG/JPEG images")
    channels: int = Field(1, ge=1, le=3, description="image channels: 1 grey, 3 RGB")
    image_size: int = Field(28, ge=4, le=1024, description="training crop side in pixels")

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        return value


class GenerateConfig(Section):
    """Class-conditional generator settings, used when `task` is 'generate'."""

    label_dropout: float = Field(
        0.1, ge=0.0, le=1.0,
        description="share of training rows whose label is replaced by the null class (classifier-free guidance)",
    )
    guidance_range: tuple[float, float] = Field(
        (1.0, 4.0),
        description="guidance scale drawn uniformly per training row; equal ends train one fixed scale",
    )
    sample_guidance: float = Field(
        2.0, gt=0.0, description="guidance scale `restorecli sample` and the validation samples use"
    )

    @field_validator("guidance_range")
    @classmethod
    def _guidance(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, 0.0, 100.0, "guidance_range")


class TrainConfig(Section):
    """Optimisation, logging and checkpoint schedule."""

    steps: int = Field(20_000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(6e-4, gt=0.0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    warmup_steps: int = Field(500, ge=0, description="linear warm-up steps before the cosine decay")
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0, description="final learning rate / peak")
    grad_clip: float = Field(1.0, gt=0.0, description="gradient norm clip")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="EMA decay per step")
    val_every: int = Field(
        1000, ge=1, description="steps between validation checks: PSNR, or for task 'generate' a sample grid"
    )
    val_images: int = Field(
        450, ge=1, description="validation images per check (generate: samples, rounded up to a multiple of 10)"
    )
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    keep_every: int = Field(
        0, ge=0,
        description="also keep the EMA weights every N steps as checkpoints/step-NNNNNN.safetensors; 0 keeps none",
    )
    log_every: int = Field(50, ge=1, description="steps between metrics.jsonl lines")
    seed: int = Field(0, description="seed of every random draw in the run")
    run_dir: str = Field("runs/default", description="run folder for config, metrics and checkpoints")


# MNIST has the ten digits 0..9 as classes; a generator's null class is index 10.
MNIST_CLASSES = 10


class Config(Section):
    """Everything a run needs; saved as JSON in each run folder and checkpoint.

    `task` chooses what `restorecli train` builds: a restorer of corrupted images ('restore') or a
    class-conditional generator of MNIST digits from noise ('generate'), with the `generate` section.
    """

    task: Literal["restore", "generate"] = Field(
        "restore",
        description=(
            "restore: map corrupted images to clean ones; generate: class-conditional generator from "
            "noise (MNIST labels, no image condition; objective meanflow or flow_matching)"
        ),
    )
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    data: DataConfig = DataConfig()
    generate: GenerateConfig = GenerateConfig()
    train: TrainConfig = TrainConfig()
    device: str = Field("auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default")

    @model_validator(mode="before")
    @classmethod
    def _generator_defaults(cls, data: Any) -> Any:
        """Fill in what a generator implies unless set: 10 classes and the noise source."""
        if not isinstance(data, dict) or data.get("task") != "generate":
            return data
        data = dict(data)
        for section, key, value in (("model", "num_classes", MNIST_CLASSES), ("objective", "source", "noise")):
            if isinstance(data.get(section, {}), dict):
                data[section] = {key: value, **data.get(section, {})}
        return data

    @model_validator(mode="after")
    def _generator_fits(self) -> "Config":
        if self.task != "generate":
            return self
        if self.objective.kind not in ("meanflow", "flow_matching"):
            raise ValueError(
                f"task 'generate' trains objective meanflow or flow_matching, not {self.objective.kind!r}"
            )
        if self.objective.source != "noise" or self.objective.condition_on_y:
            raise ValueError("task 'generate' starts from noise with no image condition; remove objective.source and condition_on_y")
        if self.data.source != "mnist" or self.model.num_classes != MNIST_CLASSES:
            raise ValueError(
                f"task 'generate' needs labelled data: data.source 'mnist' with model.num_classes = {MNIST_CLASSES}"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def config_changes(reference: Config, other: Config, keys: tuple[str, ...]) -> list[str]:
    """List the settings under `keys` where `other` differs from `reference`, as 'key value (was value)'.

    A key names a field ('data.channels') or a whole section ('model'), which expands to its fields.
    """
    changes = []
    for key in keys:
        old, new = reference, other
        for part in key.split("."):
            old, new = getattr(old, part), getattr(new, part)
        if isinstance(old, BaseModel):
            nested = tuple(f"{key}.{name}" for name in type(old).model_fields)
            changes.extend(config_changes(reference, other, nested))
        elif old != new:
            changes.append(f"{key} {new!r} (was {old!r})")
    return changes


def format_validation_error(error: ValidationError, origin: str) -> str:
    """Render a pydantic error as one line per field, naming the value and the fix."""
    lines = [f"invalid config ({origin}):"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {location}: unknown key; remove it or check its spelling and section")
        else:
            lines.append(f"  {location}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Read a TOML config file into a plain dict (empty when no file is given)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} not found; pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"config file {path} is not valid TOML: {error}") from error


def build_config(path: Path | None = None, overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Config:
    """Resolve defaults < `base` (e.g. a checkpoint's config) < file < command-line overrides."""
    data = _merge(base or {}, read_config_file(path))
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        origin = str(path) if path else "command line"
        raise UsageError(format_validation_error(error, origin)) from error


def config_from_json(text: str) -> Config:
    return Config.model_validate(json.loads(text))
