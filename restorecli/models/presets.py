"""Named size presets: "DiT-S/4" is width 128, depth 4, patch 4."""

from __future__ import annotations

from torch import nn

from restorecli.errors import UsageError
from restorecli.models.dit import DiT

# name -> (width, depth, heads, patch)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "DiT-T/4": (32, 2, 2, 4),
    "DiT-S/4": (128, 4, 4, 4),
    "DiT-S/2": (128, 4, 4, 2),
    "DiT-B/4": (256, 6, 4, 4),
    "DiT-B/2": (256, 6, 4, 2),
}


def build_model(
    preset: str,
    channels: int,
    cond_channels: int,
    qk_norm: bool = True,
    time_scale: float = 1000.0,
    out_channels: int | None = None,
) -> nn.Module:
    """Build the preset's network; `out_channels` defaults to `channels` (one prediction head)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
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
    )


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def describe_presets(channels: int = 1) -> str:
    """Describe each preset on one line with its parameter count for a `channels`-channel restorer."""
    lines = []
    for name, (width, depth, heads, patch) in PRESETS.items():
        count = count_parameters(build_model(name, channels, 0))
        lines.append(f"{name}: width {width}, depth {depth}, {heads} heads, patch {patch}, {count / 1e6:.2f}M parameters")
    return "\n".join(lines)
