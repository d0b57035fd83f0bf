"""MeanFlow for restoration: time sampling, the training objectives and the 1..N-step sampler.

Objectives (`ObjectiveConfig.kind`): `meanflow` trains the average velocity u by the MeanFlow
identity; `imf` (improved MeanFlow) adds a v head and trains u through the compound velocity;
`flow_matching` trains only the instantaneous velocity (r = t everywhere); `regression` is the
one-step reference x_hat = y - f(y).

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
    The `flow_matching` objective sets r = t on every row and ignores both shares.
    """
    normal = torch.randn((2, n), generator=generator, device=device)
    times = torch.sigmoid(objective.time_mu + objective.time_sigma * normal)  # (2, N)
    t, r = times.max(dim=0).values, times.min(dim=0).values  # (N,), (N,)
    if objective.kind == "flow_matching":
        return t.clone(), t

    share = torch.rand((n,), generator=generator, device=device)  # (N,)
    equal = share < objective.equal_fraction
    corner = (share >= objective.equal_fraction) & (share < objective.equal_fraction + objective.corner_fraction)
    r = torch.where(equal, t, r)
    t = torch.where(corner, torch.ones_like(t), t)
    r = torch.where(corner, torch.zeros_like(r), r)
    return r, t


def output_channels(channels: int, objective: ObjectiveConfig) -> int:
    """Return the network's output channels: 2C for `imf` (u and v heads, see `split_heads`), else C."""
    return 2 * channels if objective.kind == "imf" else channels


def split_heads(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an `imf` output (N, 2C, H, W) into the u head (first C channels) and the v head (last C).

    This is the one place that fixes the channel order of the two heads.
    """
    if output.shape[1] != 2 * channels:
        raise ValueError(
            f"an imf network output needs {2 * channels} channels (u, then v) for {channels}-channel "
            f"images, got {output.shape[1]}"
        )
    return output[:, :channels], output[:, channels:]


def average_velocity(
    model: nn.Module,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    objective: ObjectiveConfig,
) -> torch.Tensor:
    """Evaluate u(z, r, t | cond), (N, C, H, W): the u head for `imf`, the whole output otherwise."""
    output = model(z, r, t, cond)
    if objective.kind == "imf":
        return split_heads(output, z.shape[1])[0]
    return output


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
    """Return the total derivative d/dt = (∂/∂z) v + ∂/∂t of the network output by one forward-mode JVP.

    The tangent is (v, 0, 1) on (z, r, t); the condition is closed over, so it gets no tangent.
    `v` is the conditional velocity for `meanflow` and the v head's prediction for `imf`. The
    result has the output's channels, so for `imf` the caller takes the u head with `split_heads`.
    """

    def u_of(z_in: torch.Tensor, r_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        return model(z_in, r_in, t_in, cond)

    _, dudt = jvp(u_of, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return dudt  # (N, C_out, H, W)


@dataclass
class _PathBatch:
    """One training batch on the path: condition, times and the point z_t with its velocity v."""

    cond: torch.Tensor | None  # (N, C, H, W) or None
    r: torch.Tensor  # (N,)
    t: torch.Tensor  # (N,)
    z: torch.Tensor  # (N, C, H, W)
    v: torch.Tensor  # (N, C, H, W)

    @property
    def gap(self) -> torch.Tensor:
        return (self.t - self.r)[:, None, None, None]  # (N, 1, 1, 1)


def _path_batch(
    x: torch.Tensor, y: torch.Tensor, objective: ObjectiveConfig, generator: torch.Generator | None
) -> _PathBatch:
    """Sample (r, t) and the source, then build z_t = (1 - t) x + t s and v = s - x."""
    cond = condition(y, objective)
    r, t = sample_times(x.shape[0], objective, generator, x.device)  # (N,), (N,)
    s = draw_source(y, objective, generator)  # (N, C, H, W)
    t_img = t[:, None, None, None]
    z = (1 - t_img) * x + t_img * s  # (N, C, H, W)
    return _PathBatch(cond=cond, r=r, t=t, z=z, v=s - x)


def _derivative_on_moving_rows(
    jvp_model: nn.Module, output: torch.Tensor, batch: _PathBatch, tangent: torch.Tensor
) -> torch.Tensor:
    """Return the output's d/dt (no gradient), shaped like `output`, computed on rows with r != t only.

    Rows with r = t get zeros, because every objective multiplies the derivative by t - r = 0
    there, so they need no JVP.
    """
    dudt = torch.zeros_like(output)  # (N, C_out, H, W)
    moving = ((batch.t - batch.r) > 0).nonzero().squeeze(1)
    if len(moving):
        sub_cond = None if batch.cond is None else batch.cond[moving]
        with torch.no_grad():
            rows = time_derivative(
                jvp_model, batch.z[moving], batch.r[moving], batch.t[moving], tangent[moving], sub_cond
            )
        dudt = dudt.index_copy(0, moving, rows.to(dudt.dtype))
    return dudt


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
    # 1. Sample (r, t) and build the path point z_t and its velocity v.
    batch = _path_batch(x, y, objective, generator)

    # 2. Predict u on every row, with gradients.
    u = model(batch.z, batch.r, batch.t, batch.cond)  # (N, C, H, W)

    # 3. du/dt along the path with tangent (v, 0, 1).
    dudt = _derivative_on_moving_rows(model if jvp_model is None else jvp_model, u, batch, batch.v)

    # 4. Stop-gradient target from the MeanFlow identity u = v - (t - r) du/dt.
    target = (batch.v - batch.gap * dudt).detach()  # (N, C, H, W)

    # 5. Adaptive L2.
    return _adaptive((u.float() - target.float()) ** 2, objective)


def imf_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
    jvp_model: nn.Module | None = None,
) -> LossOutput:
    """Compute the improved MeanFlow (iMF) loss on clean x and corrupted y, (N, C, H, W) in [-1, 1].

    The network outputs 2C channels, the u head and then the v head (see `split_heads`). With
    v_hat the v head's prediction, du/dt the JVP of the u head with tangent (sg(v_hat), 0, 1) and
    sg the stop-gradient, the compound velocity is V = u + (t - r) sg(du/dt), and

        loss = adaptive_L2(V - v) + adaptive_L2(v_hat - v)

    with weight 1 on each term, as in the iMF authors' JAX code (github.com/Lyy-iiis/imeanflow,
    imf.py), which also weights both terms adaptively. Each term is the adaptive L2 of
    `meanflow_loss` (per-sample pixel mean, then batch mean). The JVP runs on rows with r != t
    only, since V = u where r = t. The logged `mse` is the unweighted mean of (V - v)^2.
    `jvp_model` has the same role as in `meanflow_loss`.
    """
    channels = x.shape[1]

    # 1. Sample (r, t) and build the path point z_t and its velocity v.
    batch = _path_batch(x, y, objective, generator)

    # 2. Both heads on every row, with gradients. The v head's target v does not depend on r, so
    #    the v head learns to ignore r and its prediction at (r, t) serves as the velocity at t.
    #    NOTE: the authors' JAX code takes the tangent from a second pass at r = t instead. This
    #    pass saves that forward but matches it only as far as the v head has learned to ignore r.
    output = model(batch.z, batch.r, batch.t, batch.cond)  # (N, 2C, H, W)
    u, v_hat = split_heads(output, channels)  # (N, C, H, W) each

    # 3. du/dt of the u head with the predicted velocity as tangent, in the primal's dtype.
    tangent = v_hat.detach().to(batch.z.dtype)  # (N, C, H, W)
    derivative = _derivative_on_moving_rows(model if jvp_model is None else jvp_model, output, batch, tangent)
    dudt = split_heads(derivative, channels)[0]  # (N, C, H, W), no gradient

    # 4. The compound velocity regresses onto v (u head); the v head does flow matching.
    compound = u + batch.gap * dudt  # (N, C, H, W)
    u_term = _adaptive((compound.float() - batch.v.float()) ** 2, objective)
    v_term = _adaptive((v_hat.float() - batch.v.float()) ** 2, objective)
    return LossOutput(loss=u_term.loss + v_term.loss, mse=u_term.mse)


def flow_matching_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """Flow matching on clean x and corrupted y, (N, C, H, W) in [-1, 1]: u(z_t, t, t) regresses onto v.

    `sample_times` gives r = t on every row, so no JVP runs and the target is v itself. The
    reduction and the adaptive weight are those of `meanflow_loss`.
    """
    batch = _path_batch(x, y, objective, generator)
    velocity = model(batch.z, batch.r, batch.t, batch.cond)  # (N, C, H, W)
    return _adaptive((velocity.float() - batch.v.float()) ** 2, objective)


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
    """Compute the loss of `objective.kind` on clean x and corrupted y, (N, C, H, W) in [-1, 1]."""
    if objective.kind == "regression":
        return regression_loss(model, x, y)
    if objective.kind == "flow_matching":
        return flow_matching_loss(model, x, y, objective, generator)
    if objective.kind == "imf":
        return imf_loss(model, x, y, objective, generator, jvp_model)
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
    z <- z - (t_k - t_{k+1}) u(z, t_{k+1}, t_k); `imf` uses its u head. A `flow_matching` model
    is queried at r = t, u(z, t_k, t_k), which is its instantaneous velocity, so its N steps are
    Euler steps. A regression model always takes one step. The source noise is scaled by
    `temperature`, by default the objective's `restore_temperature`.
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
        r = t if objective.kind == "flow_matching" else grid[k + 1].expand(n)  # (N,)
        u = average_velocity(model, z, r, t, cond, objective)  # (N, C, H, W)
        z = z - (grid[k] - grid[k + 1]) * u.to(z.dtype)
    return z
