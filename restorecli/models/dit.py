"""Pixel-space diffusion transformer (DiT) conditioned on two times, t and t - r.

Shape letters: N batch, C channels, H x W image, p patch side, T = (H / p) * (W / p) tokens,
D width. Attention is written out with matmuls rather than `scaled_dot_product_attention`, whose
fused kernels have no forward-mode AD, so `torch.func.jvp` runs through the whole network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# ----------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions, (height * width, dim): half the width per axis."""
    quarter = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows = torch.arange(height, dtype=torch.float64)[:, None] * frequencies  # (h, D/4)
    cols = torch.arange(width, dtype=torch.float64)[:, None] * frequencies  # (w, D/4)
    row_part = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    col_part = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([row_part, col_part], dim=-1).reshape(height * width, 4 * quarter).float()


class TimeEmbedder(nn.Module):
    """Sinusoidal features of a time in [0, 1], then an MLP.

    Times are multiplied by `scale` before the sinusoids; 1000 (as in DDPM-style step embeddings)
    gives times 1e-3 apart distinct features but also makes du/dt large, and the JVP target with it.
    """

    def __init__(self, dim: int, frequencies: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        dtype = torch.float64 if time.dtype == torch.float64 else torch.float32  # never below fp32
        exponents = torch.arange(half, device=time.device, dtype=dtype) / half
        frequencies = torch.exp(-math.log(10000.0) * exponents)  # (F/2,)
        angles = self.scale * time.to(dtype)[:, None] * frequencies[None]  # (N, F/2)
        features = torch.cat([angles.cos(), angles.sin()], dim=-1)  # (N, F)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # (N, D)


class ClassEmbedder(nn.Module):
    """Class-label and guidance-scale embeddings, summed into one conditioning vector (N, D).

    The label table has `num_classes + 1` rows. Row `num_classes` is the null class that
    classifier-free guidance drops labels to. It is never row 0, because row 0 is a real class (the
    digit 0 on MNIST). The guidance scale is embedded like a time, by sinusoids times `scale` and an MLP.
    Neither input is differentiated by the MeanFlow JVP: callers close over them.
    """

    def __init__(self, num_classes: int, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"a class embedder needs at least one class, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.labels = nn.Embedding(num_classes + 1, dim)
        self.guidance = TimeEmbedder(dim, scale=scale)
        nn.init.normal_(self.labels.weight, std=0.02)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor | None, guidance: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Embed labels (N,) long and guidance scales (N,); None means the null class and scale 1."""
        if labels is None:
            labels = torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        if guidance is None:
            guidance = torch.ones((batch,), device=device)
        if labels.numel() and (labels.min() < 0 or labels.max() > self.null_class):
            raise ValueError(
                f"class labels must lie in 0..{self.null_class} ({self.null_class} is the null class), "
                f"got {labels.min().item()}..{labels.max().item()}"
            )
        return self.labels(labels) + self.guidance(guidance)  # (N, D)


def check_no_class_inputs(labels: torch.Tensor | None, guidance: torch.Tensor | None) -> None:
    """Reject labels or a guidance scale given to a network built without a class embedder."""
    if labels is not None or guidance is not None:
        raise ValueError(
            "this network was built with num_classes=0 and takes no labels or guidance; "
            "build it with num_classes > 0 for class-conditional generation"
        )


class ConditionedBackbone(nn.Module):
    """Base of the backbones: builds the conditioning vector from the time and class embedders.

    A subclass sets `t_embed`, `gap_embed` (embeds t - r) and `class_embed` (None without classes).
    """

    def condition_vector(
        self,
        r: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return c = embed(t) + embed(t - r) (+ embed(label) + embed(guidance)), (N, D)."""
        c = self.t_embed(t) + self.gap_embed(t - r)  # (N, D)
        if self.class_embed is None:
            check_no_class_inputs(labels, guidance)
            return c
        return c + self.class_embed(labels, guidance, t.shape[0], t.device).to(c.dtype)


def saturation_masks(z: torch.Tensor) -> torch.Tensor:
    """Mark the pixels at the ends of the network range [-1, 1] with two 0/1 masks per channel, z <= -1 then z >= 1.

    Clipping and impulses put pixels exactly at black or white, and such a pixel carries little
    information about its clean value, while a value strictly inside the range is at most noisy.
    A convolution can hardly learn a test this sharp, so the stem and head can be given it.
    """
    return torch.cat([(z <= -1.0).to(z.dtype), (z >= 1.0).to(z.dtype)], dim=1)  # (N, 2C, H, W)


def join_and_pad(z: torch.Tensor, cond: torch.Tensor | None, multiple: int) -> torch.Tensor:
    """Stack z and cond on the channel axis and pad the bottom and right edges to a multiple of `multiple`."""
    height, width = z.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple

    x = z if cond is None else torch.cat([z, cond], dim=1)  # (N, C + C_cond, H, W)
    if pad_h or pad_w:
        # Reflect padding needs the pad to be smaller than the side; replicate covers tiny images.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x  # (N, C + C_cond, H', W'), H' and W' multiples of `multiple`


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


# ----------------------------------------------------------------------------------------------
# Transformer block
# ----------------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)  # (N, heads, T, D/heads)
        weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (N, heads, T, T)
        out = weights.softmax(dim=-1) @ v  # (N, heads, T, D/heads)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))  # (N, T, D)


class DiTBlock(nn.Module):
    """RMSNorm, adaLN modulation, attention, gated residual; the same again with an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm)
        self.norm2 = nn.RMSNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=-1)  # 6 x (N, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (N, T, D)
        x = x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (N, T, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch * patch * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (N, T, p*p*C_out)


class ConvHead(nn.Module):
    """Full-resolution refinement added to the unpatchified output.

    The final linear layer maps each token to its own p x p pixels, so two neighbouring pixels on
    either side of a patch edge come from different tokens. This head applies a 3x3 convolution to
    the prediction and the input pixels z, scales and shifts the features by the condition vector
    (times, label), and maps them back with a second 3x3 convolution. The second convolution
    starts at zero, so a new head adds nothing until it is trained.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, dim: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * width))
        self.conv_out = nn.Conv2d(width, out_channels, kernel_size=3, padding=1)

    def forward(self, prediction: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        features = self.conv_in(torch.cat([prediction, z], dim=1))  # (N, width, H', W')
        shift, scale = self.adaLN(c).chunk(2, dim=-1)  # 2 x (N, width)
        features = features * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.conv_out(F.gelu(features, approximate="tanh"))  # (N, C_out, H', W')


class ConvStem(nn.Module):
    """Full-resolution features of the input pixels, patchified beside them.

    The patch embedding is linear in each token's p x p pixels. So a nonlinear local test, such as
    whether a bright pixel is isolated on a dark background, is left to the transformer blocks,
    which see each patch as one vector. Two 3x3 convolutions with a GELU between them compute such
    features at full resolution before the pixels are grouped into tokens.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.conv_out = nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = F.gelu(self.conv_in(z), approximate="tanh")  # (N, width, H', W')
        return self.conv_out(features)  # (N, width, H', W')


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class DiT(ConditionedBackbone):
    """u_theta(z, r, t | y): average velocity from time t back to time r, in image space."""

    def __init__(
        self,
        channels: int = 1,
        cond_channels: int = 0,
        patch: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        time_scale: float = 1000.0,
        out_channels: int | None = None,
        num_classes: int = 0,
        conv_head_channels: int = 0,
        conv_stem_channels: int = 0,
        saturation_masks: bool = False,
        output_gate: bool = False,
    ) -> None:
        super().__init__()
        if saturation_masks and conv_stem_channels == 0 and conv_head_channels == 0:
            raise ValueError("saturation masks feed the convolution stem and head, and this DiT has neither")
        if output_gate and conv_head_channels == 0:
            raise ValueError("the output gate needs the convolution head, which starts the gate almost open, and this DiT has none")
        self.output_gate = output_gate
        self.channels = channels
        self.saturation_masks = saturation_masks
        self.num_classes = num_classes
        # A second prediction head (e.g. improved MeanFlow's v next to u) stacks more output channels.
        self.out_channels = channels if out_channels is None else out_channels
        self.cond_channels = cond_channels
        self.patch = patch
        self.dim = dim

        # The stem reads z and its saturation masks but not the condition channels, like the
        # head below. Token features are laid out per pixel as (z, stem features, condition channels).
        pixel_features = 3 * channels if saturation_masks else channels
        self.stem = ConvStem(pixel_features, conv_stem_channels) if conv_stem_channels > 0 else None
        self.patch_embed = nn.Linear((channels + conv_stem_channels + cond_channels) * patch * patch, dim)
        self.t_embed = TimeEmbedder(dim, scale=time_scale)
        self.gap_embed = TimeEmbedder(dim, scale=time_scale)  # embeds t - r
        # Only class-conditional generators have label and guidance inputs, so restorers keep their weights.
        self.class_embed = ClassEmbedder(num_classes, dim, scale=time_scale) if num_classes > 0 else None
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, mlp_ratio, qk_norm) for _ in range(depth))
        # With the output gate the transformer also predicts one gate logit per output channel.
        predicted = 2 * self.out_channels if output_gate else self.out_channels
        self.final = FinalLayer(dim, patch, predicted)
        # The head reads z but not the condition channels, so `widen_input_weight` stays the only
        # weight that depends on them. It refines the gate logits too.
        self.head = (
            ConvHead(predicted + pixel_features, conv_head_channels, predicted, dim)
            if conv_head_channels > 0
            else None
        )
        self._positions: dict[tuple[int, int], torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        embedders = [self.t_embed, self.gap_embed]
        if self.class_embed is not None:
            embedders.append(self.class_embed.guidance)
        for embedder in embedders:
            nn.init.normal_(embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: every block starts as the identity and the output as zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN[-1].weight)
            nn.init.zeros_(block.adaLN[-1].bias)
        nn.init.zeros_(self.final.adaLN[-1].weight)
        nn.init.zeros_(self.final.adaLN[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        if self.head is not None:
            nn.init.zeros_(self.head.adaLN[-1].weight)
            nn.init.zeros_(self.head.adaLN[-1].bias)
            nn.init.zeros_(self.head.conv_out.weight)
            nn.init.zeros_(self.head.conv_out.bias)
        if self.output_gate:
            # The gate starts almost open (sigmoid(3) = 0.95), so it scales the output little at first.
            nn.init.constant_(self.head.conv_out.bias[self.out_channels :], 3.0)

    input_weight = "patch_embed.weight"

    def widen_input_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Turn the patch embedding of a network without condition channels into one with them.

        Patch features are laid out (p1 p2 c), so the new channels' columns sit inside every
        pixel's group. They start at zero: the widened network ignores the condition at first.
        """
        p = self.patch
        grouped = rearrange(weight, "d (pp c) -> d pp c", pp=p * p)  # (D, p*p, C)
        zeros = grouped.new_zeros(grouped.shape[0], p * p, self.cond_channels)  # (D, p*p, C_cond)
        return rearrange(torch.cat([grouped, zeros], dim=-1), "d pp c -> d (pp c)")  # (D, p*p*(C + C_cond))

    def positions(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        key = (rows, cols)
        if key not in self._positions:
            self._positions[key] = sincos_2d(rows, cols, self.dim)
        return self._positions[key].to(device)

    def forward(
        self,
        z: torch.Tensor,
        r: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z (N, C, H, W), r and t (N,), cond (N, C_cond, H, W) or None; returns (N, C_out, H, W).

        `labels` (N,) long and `guidance` (N,) are for networks built with `num_classes > 0`. Left
        out, they default to the null class and scale 1.
        """
        height, width = z.shape[-2:]
        p = self.patch
        x = join_and_pad(z, cond, p)  # (N, C + C_cond, H', W')
        rows, cols = x.shape[-2] // p, x.shape[-1] // p
        pixels = x[:, : self.channels]  # (N, C, H', W')
        if self.saturation_masks:
            features = torch.cat([pixels, saturation_masks(pixels)], dim=1)  # (N, 3C, H', W')
        else:
            features = pixels
        if self.stem is not None:
            x = torch.cat([pixels, self.stem(features), x[:, self.channels :]], dim=1)  # (N, C + S + C_cond, H', W')

        tokens = rearrange(x, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)  # (N, T, p*p*C_in)
        tokens = self.patch_embed(tokens) + self.positions(rows, cols, x.device)  # (N, T, D)
        c = self.condition_vector(r, t, labels, guidance)  # (N, D)

        for block in self.blocks:
            tokens = block(tokens, c)  # (N, T, D)

        out = self.final(tokens, c)  # (N, T, p*p*C_out), or p*p*2C_out with the gate logits
        out = rearrange(out, "n (h w) (p1 p2 c) -> n c (h p1) (w p2)", h=rows, w=cols, p1=p, p2=p)
        if self.head is not None:
            out = out + self.head(out, features, c)  # (N, C_out or 2 C_out, H', W')
        if self.output_gate:
            # A closed gate gives exactly zero velocity, so the pixel is kept as it is. An
            # additive output reaches zero only approximately.
            logits = out[:, self.out_channels :]  # (N, C_out, H', W')
            out = out[:, : self.out_channels] * torch.sigmoid(logits)  # (N, C_out, H', W')
        return out[..., :height, :width]  # (N, C_out, H, W)
