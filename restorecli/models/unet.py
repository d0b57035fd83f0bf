"""Small convolutional UNet with the DiT's call: u_theta(z, r, t | cond) at the input's size.

Shape letters: N batch, C channels, H x W image, E time-vector width. With width 32 and channel
multipliers (1, 2, 4), the defaults, a 28 x 28 input has levels (N, 32, 28, 28) and (N, 64, 14, 14)
and the bottleneck (N, 128, 7, 7).

The network must stay usable under `torch.func.jvp`, so it avoids three things. Attention is written
with matmuls, because the fused `scaled_dot_product_attention` kernels have no forward-mode AD. There
is no dropout, because the JVP pass and the plain forward pass must see the same network. There is no
BatchNorm, because batch statistics would make one image's output and its JVP depend on the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from restorecli.models.dit import ClassEmbedder, ConditionedBackbone, TimeEmbedder, join_and_pad

# GroupNorm uses at most 8 groups and, where the layer is wide enough, at least 4 channels per group,
# so that the narrow levels of the tiny preset are not normalised channel by channel.
MAX_GROUPS = 8
MIN_GROUP_CHANNELS = 4


def group_count(channels: int) -> int:
    """Return the largest GroupNorm group count within those limits that divides `channels`."""
    limit = max(1, min(MAX_GROUPS, channels // MIN_GROUP_CHANNELS))
    return max(groups for groups in range(1, limit + 1) if channels % groups == 0)


class ResBlock(nn.Module):
    """Residual block: GroupNorm, SiLU and a 3x3 conv, then a GroupNorm that the time vector scales and
    shifts, SiLU and a second 3x3 conv.

    The second convolution starts at zero, so every block starts as the identity (or as its 1x1 skip
    projection), as the DiT's adaLN-Zero blocks do.
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_channels))
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, C_out, H, W)
        shift, scale = self.time_proj(c)[:, :, None, None].chunk(2, dim=1)  # 2 x (N, C_out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))  # (N, C_out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, added as a residual.

    The output projection starts at zero, so the layer starts as the identity.
    """

    def __init__(self, channels: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(
                f"attention width {channels} is not divisible by {heads} heads; choose a head count that divides it"
            )
        self.heads = heads
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.q_norm = nn.RMSNorm(channels // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(channels // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")  # (N, T, C) with T = h * w
        q, k, v = rearrange(self.qkv(tokens), "n t (three m d) -> three n m t d", three=3, m=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)  # (N, heads, T, C/heads)
        weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (N, heads, T, T)
        out = weights.softmax(dim=-1) @ v  # (N, heads, T, C/heads)
        out = self.proj(rearrange(out, "n m t d -> n t (m d)"))  # (N, T, C)
        return x + rearrange(out, "n (h w) c -> n c h w", h=height, w=width)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (N, C, H/2, W/2) for even H and W


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (N, C, 2H, 2W)


class UNet(ConditionedBackbone):
    """u_theta(z, r, t | y): average velocity from time t back to time r, by a convolutional UNet.

    `multipliers` gives each resolution's width as a multiple of `width`. The last entry is the
    bottleneck, so the input is downsampled len(multipliers) - 1 times, by 2 each time. Every
    resolution above the bottleneck has `blocks` residual blocks on the way down and on the way up.
    The bottleneck is a residual block, self-attention (if `attention`) and a residual block.
    `qk_norm` RMS-normalises the attention's queries and keys per head, as in the DiT.
    `num_classes > 0` adds class-label and guidance-scale inputs, as in the DiT.
    """

    def __init__(
        self,
        channels: int = 1,
        cond_channels: int = 0,
        width: int = 32,
        multipliers: tuple[int, ...] = (1, 2, 4),
        blocks: int = 1,
        attention: bool = True,
        heads: int = 4,
        qk_norm: bool = True,
        time_scale: float = 1000.0,
        out_channels: int | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if len(multipliers) < 2:
            raise ValueError(
                f"a UNet needs at least two channel multipliers, got {multipliers}; pass e.g. (1, 2, 2)"
            )
        self.channels = channels
        # A second prediction head (e.g. improved MeanFlow's v next to u) stacks more output channels.
        self.out_channels = channels if out_channels is None else out_channels
        self.cond_channels = cond_channels
        self.downsampling_factor = 2 ** (len(multipliers) - 1)
        level_widths = [width * multiplier for multiplier in multipliers]
        time_dim = 4 * width

        self.t_embed = TimeEmbedder(time_dim, scale=time_scale)
        self.gap_embed = TimeEmbedder(time_dim, scale=time_scale)  # embeds t - r
        self.num_classes = num_classes
        self.class_embed = ClassEmbedder(num_classes, time_dim, scale=time_scale) if num_classes > 0 else None
        self.stem = nn.Conv2d(channels + cond_channels, level_widths[0], 3, padding=1)

        # Encoder: `blocks` residual blocks per level, then a downsampling to the next level.
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        current = level_widths[0]
        for level_width in level_widths[:-1]:
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(current, level_width, time_dim))
                current = level_width
            self.down_blocks.append(level)
            self.downsamples.append(Downsample(current))

        # Bottleneck at the lowest resolution.
        bottleneck_width = level_widths[-1]
        self.mid_in = ResBlock(current, bottleneck_width, time_dim)
        self.mid_attention = SelfAttention(bottleneck_width, heads, qk_norm) if attention else nn.Identity()
        self.mid_out = ResBlock(bottleneck_width, bottleneck_width, time_dim)
        current = bottleneck_width

        # Decoder: upsample, concatenate the encoder's output at that level, `blocks` residual blocks.
        self.upsamples = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level_width in reversed(level_widths[:-1]):
            self.upsamples.append(Upsample(current))
            level = nn.ModuleList()
            for index in range(blocks):
                skip_width = level_width if index == 0 else 0
                level.append(ResBlock(current + skip_width, level_width, time_dim))
                current = level_width
            self.up_blocks.append(level)

        self.out_norm = nn.GroupNorm(group_count(current), current)
        self.out_conv = nn.Conv2d(current, self.out_channels, 3, padding=1)
        # The output starts at u = 0, like the DiT's zero-initialised final layer.
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    input_weight = "stem.weight"

    def widen_input_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Turn the stem of a network without condition channels into one with them, starting at zero."""
        zeros = weight.new_zeros(weight.shape[0], self.cond_channels, *weight.shape[2:])  # (W, C_cond, 3, 3)
        return torch.cat([weight, zeros], dim=1)  # (W, C + C_cond, 3, 3)

    def forward(
        self,
        z: torch.Tensor,
        r: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Map z (N, C, H, W), times r and t (N,) and cond (N, C_cond, H, W) or None to (N, C_out, H, W).

        `labels` (N,) long and `guidance` (N,) are for networks built with `num_classes > 0`. Left
        out, they default to the null class and scale 1.
        """
        height, width = z.shape[-2:]
        factor = self.downsampling_factor
        x = join_and_pad(z, cond, factor)  # (N, C + C_cond, H', W'), multiples of factor

        c = self.condition_vector(r, t, labels, guidance)  # (N, E)
        h = self.stem(x)  # (N, width, H', W')

        skips = []
        for level, downsample in zip(self.down_blocks, self.downsamples):
            for block in level:
                h = block(h, c)  # (N, width * multiplier, H' / 2^level, W' / 2^level)
            skips.append(h)
            h = downsample(h)

        h = self.mid_in(h, c)  # (N, width * multipliers[-1], H' / factor, W' / factor)
        h = self.mid_attention(h)
        h = self.mid_out(h, c)

        for upsample, level in zip(self.upsamples, self.up_blocks):
            h = torch.cat([upsample(h), skips.pop()], dim=1)  # (N, upper width + level width, ...)
            for block in level:
                h = block(h, c)  # (N, level width, ...)

        out = self.out_conv(F.silu(self.out_norm(h)))  # (N, C_out, H', W')
        return out[..., :height, :width]  # (N, C_out, H, W)
