"""Network backbones and their named size presets."""

from restorecli.models.presets import PRESETS, build_model, count_parameters, describe_presets

__all__ = ["PRESETS", "build_model", "count_parameters", "describe_presets"]
