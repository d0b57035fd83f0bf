"""Network backbones and their named size presets."""

from restorecli.models.dit import DiT
from restorecli.models.presets import (
    PRESETS,
    UNET_PRESETS,
    UNetPreset,
    build_model,
    count_parameters,
    describe_presets,
    preset_names,
)
from restorecli.models.unet import UNet

__all__ = [
    "PRESETS",
    "UNET_PRESETS",
    "DiT",
    "UNet",
    "UNetPreset",
    "build_model",
    "count_parameters",
    "describe_presets",
    "preset_names",
]
