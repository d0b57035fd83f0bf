"""MeanFlow for restoration: time sampling, the training objectives and the 1..N-step sampler.

Time convention (no other module encodes it): t = 0 is the clean image x, t = 1 is the
source s (y + source noise for the bridge, pure noise otherwise). The path is z_t = (1 - t) x + t s
with velocity v = s - x, and u(z, r, t) is the average velocity from time t back to time r <= t,
so that z_r = z_t - (t - r) u(z_t, r, t). All tensors here are in network space [-1, 1].
Shape letters: N batch, C channels, H x W image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jvp

from restorecli.config import ObjectiveConfig


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, what is minimised
    mse: torch.Tensor  # scalar, unweighted mean squared error of the prediction, for logging


def condition(y: torch.Tensor, objective: ObjectiveConfig) -> torch.Tensor | None:
    """Return the extra input channels: y for the noise source or when asked, else None."""
    if objective.kind == "regression":
        return None
    if objective.source == "noise" or objective.condition_on_y:
        return y
    return None


def cond_channels(channels: int, objective: ObjectiveConfig) -> int:
    if objective.kind == "regression":
        return 0
    return channels if objective.source == "noise" or objective.condition_on_y else 0


def draw_source(
    y: torch.Tensor, objective: ObjectiveConfig, generator: torch.Generator | None, temperature: float = 1.0
) -> torch.Tensor:
    """Return the source s at t = 1: y + sigma * noise (bridge) or noise; regression starts at y.

    `temperature` scales the noise; 0 gives the mean of the source distribution.
    """
    if objective.kind == "regression":
        return y
    noise = temperature * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    if objective.source == "noise":
        return noise
    return y + objective.source_sigma * noise


def sample_times(
    n: int, objective: ObjectiveConfig, generator: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (r, t), each (N,), with 0 <= r <= t <= 1.

    Two logit-normal draws give t = max and r = min. Then a share `equal_fraction` of the rows
    sets r = t (plain flow matching) and a share `corner_fraction` sets (r, t) = (0, 1): the
    point that 1-step restoration queries, which logit-normal draws almost never reach.
    """
    normal = torch.randn((2, n), generator=generator, device=device)
    times = torch.sigmoid(objective.time_mu + objective.time_sigma * normal)  # (2, N)
    t, r = times.max(dim=0).values, times.min(dim=0).values  # (N,), (N,)

    share = torch.rand((n,), generator=generator, device=device)  # (N,)
    equal = share < objective.equal_fraction
    corner = (share >= objective.equal_fraction) & (share < objective.equal_fraction + objective.corner_fraction)
    r = torch.where(equal, t, r)
    t = torch.where(corner, torch.ones_like(t), t)
    r = torch.where(corner, torch.zeros_like(r), r)
    return r, t


def _adaptive(error: torch.Tensor, objective: ObjectiveConfig) -> LossOutput:
    """Adaptive L2 on per-sample squared error: mean over pixels, weight sg(1 / (err + c)^p)."""
    per_sample = error.flatten(1).mean(dim=1)  # (N,)
    weight = (per_sample.detach() + objective.adaptive_c) ** (-objective.adaptive_p)  # (N,)
    return LossOutput(loss=(weight * per_sample).mean(), mse=per_sample.mean().detach())


def time_derivative(
    model: nn.Module,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the total derivative du/dt = (∂u/∂z) v + ∂u/∂t of u(z, r, t | cond) by one forward-mode JVP.

    The tangent is (v, 0, 1) on (z, r, t); the condition is closed over, so it gets no tangent.
    """

    def u_of(z_in: torch.Tensor, r_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        return model(z_in, r_in, t_in, cond)

    _, dudt = jvp(u_of, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return dudt  # (N, C, H, W)


def meanflow_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
    jvp_model: nn.Module | None = None,
) -> LossOutput:
    """MeanFlow loss on a batch of clean x and corrupted y, both (N, C, H, W) in [-1, 1].

    `jvp_model` is the module the JVP runs through, by default `model`. Under DDP it is the inner
    module: the JVP only builds the stop-gradient target, so gradients (and their all-reduce) come
    from the ordinary forward pass through the DDP wrapper.
    """
    n = x.shape[0]
    cond = condition(y, objective)  # (N, C, H, W) or None

    # 1. Sample (r, t) and build the path point z_t and its velocity v.
    r, t = sample_times(n, objective, generator, x.device)  # (N,), (N,)
    s = draw_source(y, objective, generator)  # (N, C, H, W)
    t_img = t[:, None, None, None]
    z = (1 - t_img) * x + t_img * s  # (N, C, H, W)
    v = s - x  # (N, C, H, W)

    # 2. Predict u on every row, with gradients.
    u = model(z, r, t, cond)  # (N, C, H, W)

    # 3. du/dt along the path, only on rows with r != t, because the target multiplies it by t - r.
    dudt = torch.zeros_like(u)  # (N, C, H, W)
    moving = ((t - r) > 0).nonzero().squeeze(1)
    if len(moving):
        sub_cond = None if cond is None else cond[moving]
        with torch.no_grad():
            dudt_rows = time_derivative(model if jvp_model is None else jvp_model, z[moving], r[moving], t[moving], v[moving], sub_cond)
        dudt = dudt.index_copy(0, moving, dudt_rows.to(dudt.dtype))

    # 4. Stop-gradient target from the MeanFlow identity u = v - (t - r) du/dt.
    target = (v - (t - r)[:, None, None, None] * dudt).detach()  # (N, C, H, W)

    # 5. Adaptive L2.
    return _adaptive((u.float() - target.float()) ** 2, objective)


def regression_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LossOutput:
    """Plain regression: x_hat = y - f(y) at (r, t) = (0, 1), mean squared error to x."""
    n = x.shape[0]
    zeros, ones = torch.zeros(n, device=x.device), torch.ones(n, device=x.device)
    x_hat = y - model(y, zeros, ones, None)  # (N, C, H, W)
    mse = ((x_hat.float() - x.float()) ** 2).mean()
    return LossOutput(loss=mse, mse=mse.detach())


def training_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    generator: torch.Generator | None,
    jvp_model: nn.Module | None = None,
) -> LossOutput:
    if objective.kind == "regression":
        return regression_loss(model, x, y)
    return meanflow_loss(model, x, y, objective, generator, jvp_model)


@torch.no_grad()
def restore(
    model: nn.Module,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    steps: int = 1,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
) -> torch.Tensor:
    """Run the sampler from the source of y (N, C, H, W) back to t = 0 in `steps` network calls.

    One step is x_hat = s - u(s, 0, 1). N steps walk the grid t_k = 1 - k / N with
    z <- z - (t_k - t_{k+1}) u(z, t_{k+1}, t_k). A regression model always takes one step.
    The source noise is scaled by `temperature`, by default the objective's `restore_temperature`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n = y.shape[0]
    cond = condition(y, objective)
    scale = objective.restore_temperature if temperature is None else temperature
    z = draw_source(y, objective, generator, scale)  # (N, C, H, W)
    grid = torch.linspace(1.0, 0.0, steps + 1, device=y.device, dtype=y.dtype)

    for k in range(steps):
        t = grid[k].expand(n)  # (N,)
        r = grid[k + 1].expand(n)  # (N,)
        z = z - (grid[k] - grid[k + 1]) * model(z, r, t, cond).to(z.dtype)
    return z
