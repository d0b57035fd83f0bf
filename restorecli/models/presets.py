"""Named size presets of both backbones, e.g. "DiT-S/4" (width 128, depth 4, patch 4) and "UNet-S".

"UNet-S" has about the parameter count of "DiT-S/4", and `restorecli presets` prints every count.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from restorecli.errors import UsageError
from restorecli.models.dit import DiT
from restorecli.models.unet import UNet

# DiT presets: name -> (width, depth, heads, patch)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "DiT-T/4": (32, 2, 2, 4),
    "DiT-S/4": (128, 4, 4, 4),
    "DiT-S/2": (128, 4, 4, 2),
    "DiT-B/4": (256, 6, 4, 4),
    "DiT-B/2": (256, 6, 4, 2),
}


class UNetPreset(NamedTuple):
    """Size of a UNet preset, with fields named after the `UNet` constructor keywords they set."""

    width: int
    multipliers: tuple[int, ...]
    blocks: int
    heads: int


UNET_PRESETS: dict[str, UNetPreset] = {
    "UNet-T": UNetPreset(width=8, multipliers=(1, 2, 2), blocks=1, heads=2),
    "UNet-S": UNetPreset(width=32, multipliers=(1, 2, 4), blocks=1, heads=4),
}


def preset_names() -> list[str]:
    """Return every preset name, DiT presets first."""
    return [*PRESETS, *UNET_PRESETS]


def build_model(
    preset: str,
    channels: int,
    cond_channels: int,
    qk_norm: bool = True,
    time_scale: float = 1000.0,
    out_channels: int | None = None,
    num_classes: int = 0,
    conv_head_channels: int = 0,
    conv_stem_channels: int = 0,
    saturation_masks: bool = False,
    output_gate: bool = False,
) -> nn.Module:
    """Build the preset's network; `out_channels` defaults to `channels` (one prediction head).

    `num_classes > 0` adds class-label (with a null class) and guidance-scale inputs.
    `conv_head_channels > 0` adds a DiT's full-resolution convolution head, and
    `conv_stem_channels > 0` a convolution stem before its patch embedding.
    `saturation_masks` gives those two the masks of black and white pixels. `output_gate`
    scales the output by a per-pixel gate that the transformer and the head predict.
    """
    if saturation_masks and conv_stem_channels == 0 and conv_head_channels == 0:
        raise UsageError(
            "model.saturation_masks feeds the convolution stem and head, and both are off; "
            "set model.conv_stem_channels or model.conv_head_channels above 0, or saturation_masks = false"
        )
    if output_gate and conv_head_channels == 0:
        raise UsageError(
            "model.output_gate needs the convolution head, which starts the gate almost open, and "
            "model.conv_head_channels is 0; set conv_head_channels above 0 (e.g. 32) or output_gate = false"
        )
    if preset in UNET_PRESETS:
        if conv_stem_channels > 0:
            raise UsageError(
                f"model.conv_stem_channels {conv_stem_channels} is for DiT presets, and {preset} is a UNet, "
                "which already works at full resolution; set it to 0 or choose a DiT preset"
            )
        if conv_head_channels > 0:
            raise UsageError(
                f"model.conv_head_channels {conv_head_channels} is for DiT presets, and {preset} is a UNet, "
                "which already works at full resolution; set it to 0 or choose a DiT preset"
            )
        size = UNET_PRESETS[preset]
        return UNet(
            channels=channels,
            cond_channels=cond_channels,
            width=size.width,
            multipliers=size.multipliers,
            blocks=size.blocks,
            heads=size.heads,
            qk_norm=qk_norm,
            time_scale=time_scale,
            out_channels=out_channels,
            num_classes=num_classes,
        )
    if preset not in PRESETS:
        raise UsageError(f"unknown model preset {preset!r}; choose one of {', '.join(preset_names())}")
    width, depth, heads, patch = PRESETS[preset]
    return DiT(
        channels=channels,
        cond_channels=cond_channels,
        patch=patch,
        dim=width,
        depth=depth,
        heads=heads,
        qk_norm=qk_norm,
        time_scale=time_scale,
        out_channels=out_channels,
        num_classes=num_classes,
        conv_head_channels=conv_head_channels,
        conv_stem_channels=conv_stem_channels,
        saturation_masks=saturation_masks,
        output_gate=output_gate,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def describe_presets(channels: int = 1) -> str:
    """Describe each preset on one line with its parameter count for a `channels`-channel restorer."""
    lines = []
    for name, (width, depth, heads, patch) in PRESETS.items():
        count = count_parameters(build_model(name, channels, 0))
        lines.append(f"{name}: width {width}, depth {depth}, {heads} heads, patch {patch}, {count / 1e6:.2f}M parameters")
    for name, size in UNET_PRESETS.items():
        count = count_parameters(build_model(name, channels, 0))
        level_channels = "-".join(str(size.width * multiplier) for multiplier in size.multipliers)
        blocks = f"{size.blocks} block" + ("s" if size.blocks != 1 else "")
        lines.append(
            f"{name}: channels {level_channels}, {blocks} per level, {size.heads} heads, {count / 1e6:.2f}M parameters"
        )
    return "\n".join(lines)
