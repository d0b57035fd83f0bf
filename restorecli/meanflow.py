"""MeanFlow for restoration: time sampling, the training objectives and the 1..N-step sampler.

Objectives (`ObjectiveConfig.kind`): `meanflow` trains the average velocity u by the MeanFlow
identity; `imf` (improved MeanFlow) adds a v head and trains u through the compound velocity;
`flow_matching` trains only the instantaneous velocity (r = t everywhere); `regression` is the
one-step reference x_hat = y - f(y).

Class-conditional generation (`task = "generate"`) uses the meanflow or flow_matching objective with
the source s = noise, no image condition, class labels with dropout to a null class, and the
guided velocity of `guided_velocity` in place of v (classifier-free guidance with the guidance
scale as a network input). `generate` is its sampler.

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

from restorecli.config import GenerateConfig, ObjectiveConfig

# The values of `ObjectiveConfig.restore_velocity`: which head the sampler steps with.
VELOCITIES = ("average", "instantaneous")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, what is minimised
    mse: torch.Tensor  # scalar, unweighted mean squared error of the prediction, for logging


@dataclass
class ClassCondition:
    """Class inputs of a generator batch: labels after dropout, guidance scales and the null class."""

    labels: torch.Tensor  # (N,) long, `null_class` on label-dropped rows
    guidance: torch.Tensor  # (N,) float, the guidance scale omega of each row
    null_class: int

    @property
    def conditional(self) -> torch.Tensor:
        """Rows that keep their label, (N,) bool."""
        return self.labels != self.null_class

    def rows(self, index: torch.Tensor) -> "ClassCondition":
        return ClassCondition(self.labels[index], self.guidance[index], self.null_class)

    def unconditional(self) -> "ClassCondition":
        """Return a copy with the same guidance scales and every label set to the null class."""
        return ClassCondition(torch.full_like(self.labels, self.null_class), self.guidance, self.null_class)


def draw_class_condition(
    labels: torch.Tensor, settings: GenerateConfig, null_class: int, generator: torch.Generator | None
) -> ClassCondition:
    """Drop a share `label_dropout` of the labels (N,) to the null class and draw a guidance scale per row.

    The scale is uniform on `guidance_range`. Label-dropped rows get a scale too, because the
    network is queried unconditionally at the scale of the conditional row it guides.
    """
    n = labels.shape[0]
    dropped = torch.rand((n,), generator=generator, device=labels.device) < settings.label_dropout  # (N,)
    low, high = settings.guidance_range
    guidance = low + (high - low) * torch.rand((n,), generator=generator, device=labels.device)  # (N,)
    null = torch.full_like(labels, null_class)
    return ClassCondition(torch.where(dropped, null, labels), guidance, null_class)


def _forward(
    model: nn.Module,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    classes: ClassCondition | None,
) -> torch.Tensor:
    """Call the network, passing labels and guidance only when there are some, so restorers keep their call."""
    if classes is None:
        return model(z, r, t, cond)
    return model(z, r, t, cond, labels=classes.labels, guidance=classes.guidance)


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


def step_velocity(
    model: nn.Module,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    objective: ObjectiveConfig,
    classes: ClassCondition | None = None,
    velocity: str = "average",
) -> torch.Tensor:
    """Evaluate the velocity a sampler step uses, (N, C, H, W), at (z, r, t | cond, classes).

    That is the average velocity u: the u head for `imf`, the whole output otherwise. With
    `velocity` 'instantaneous' an `imf` network returns its v head instead, the velocity at t,
    which it learns to predict whatever r is.
    """
    output = _forward(model, z, r, t, cond, classes)
    if objective.kind == "imf":
        u, v = split_heads(output, z.shape[1])
        return v if velocity == "instantaneous" else u
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
    labels: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the total derivative d/dt = (∂/∂z) v + ∂/∂t of the network output by one forward-mode JVP.

    The tangent is (v, 0, 1) on (z, r, t). The condition, the class labels and the guidance scale
    are closed over, so they get no tangent.
    `v` is the conditional velocity for `meanflow` and the v head's prediction for `imf`. The
    result has the output's channels, so for `imf` the caller takes the u head with `split_heads`.
    """

    def u_of(z_in: torch.Tensor, r_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        if labels is None and guidance is None:
            return model(z_in, r_in, t_in, cond)
        return model(z_in, r_in, t_in, cond, labels=labels, guidance=guidance)

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
    classes: ClassCondition | None = None

    @property
    def gap(self) -> torch.Tensor:
        return (self.t - self.r)[:, None, None, None]  # (N, 1, 1, 1)


def _path_batch(
    x: torch.Tensor,
    y: torch.Tensor | None,
    objective: ObjectiveConfig,
    generator: torch.Generator | None,
    classes: ClassCondition | None = None,
) -> _PathBatch:
    """Sample (r, t) and the source, then build z_t = (1 - t) x + t s and v = s - x.

    Without y (generation) the source is pure noise and there is no image condition.
    """
    cond = None if y is None else condition(y, objective)
    r, t = sample_times(x.shape[0], objective, generator, x.device)  # (N,), (N,)
    if y is None:
        s = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)  # (N, C, H, W)
    else:
        s = draw_source(y, objective, generator)  # (N, C, H, W)
    t_img = t[:, None, None, None]
    z = (1 - t_img) * x + t_img * s  # (N, C, H, W)
    return _PathBatch(cond=cond, r=r, t=t, z=z, v=s - x, classes=classes)


@torch.no_grad()
def guided_velocity(
    model: nn.Module,
    z: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    classes: ClassCondition,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the classifier-free guided velocity (N, C, H, W) that replaces v in the target.

    With omega the row's guidance scale, c its label and sg the stop-gradient,

        v_g = omega * v + (1 - omega) * sg(u(z_t, t, t | null class, omega))   if c != null class
        v_g = v                                                                 if c == null class

    following the classifier-free guidance of MeanFlow (Geng et al. 2025, arXiv 2505.13447), with
    omega also a network input so that one model serves every scale. u(z_t, t, t) is the
    network's own unconditional instantaneous velocity. The network runs on the conditional rows
    only, without gradient.
    """
    guided = v.clone()
    rows = classes.conditional.nonzero().squeeze(1)
    if len(rows) == 0:
        return guided
    sub_cond = None if cond is None else cond[rows]
    t_rows = t[rows]
    unconditional = _forward(model, z[rows], t_rows, t_rows, sub_cond, classes.rows(rows).unconditional())
    omega = classes.guidance[rows].to(v.dtype)[:, None, None, None]  # (N_cond, 1, 1, 1)
    mixed = omega * v[rows] + (1 - omega) * unconditional.to(v.dtype)  # (N_cond, C, H, W)
    return guided.index_copy(0, rows, mixed)


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
        class_inputs = {}
        if batch.classes is not None:
            class_inputs = {"labels": batch.classes.labels[moving], "guidance": batch.classes.guidance[moving]}
        with torch.no_grad():
            rows = time_derivative(
                jvp_model, batch.z[moving], batch.r[moving], batch.t[moving], tangent[moving], sub_cond,
                **class_inputs,
            )
        dudt = dudt.index_copy(0, moving, rows.to(dudt.dtype))
    return dudt


def meanflow_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
    jvp_model: nn.Module | None = None,
    classes: ClassCondition | None = None,
) -> LossOutput:
    """MeanFlow loss on a batch of clean x and corrupted y, both (N, C, H, W) in [-1, 1].

    `jvp_model` is the module the JVP runs through, by default `model`. Under DDP it is the inner
    module: the JVP only builds the stop-gradient target, so gradients (and their all-reduce) come
    from the ordinary forward pass through the DDP wrapper. For a class-conditional generator, y is
    None (the source is noise) and `classes` holds the labels and guidance scales. The velocity in
    the target and the JVP tangent is then the guided velocity v_g of `guided_velocity`.
    """
    inner = model if jvp_model is None else jvp_model

    # 1. Sample (r, t) and build the path point z_t and its velocity v.
    batch = _path_batch(x, y, objective, generator, classes)

    # 2. Predict u on every row, with gradients.
    u = _forward(model, batch.z, batch.r, batch.t, batch.cond, classes)  # (N, C, H, W)

    # 3. The velocity the target uses: v, or the guided v_g for a class-conditional generator.
    velocity = batch.v if classes is None else guided_velocity(inner, batch.z, batch.t, batch.v, classes, batch.cond)

    # 4. du/dt along the path with tangent (velocity, 0, 1).
    dudt = _derivative_on_moving_rows(inner, u, batch, velocity)

    # 5. Stop-gradient target from the MeanFlow identity u = v - (t - r) du/dt.
    target = (velocity - batch.gap * dudt).detach()  # (N, C, H, W)

    # 6. Adaptive L2.
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
    #    The authors' JAX code takes the tangent from a second pass at r = t instead. On a 7000-step
    #    restorer the two tangents differ by 5% of the v head's own squared error (bench/imf_tangent.py).
    #    NOTE: whether training with the second pass restores better is not measured.
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
    y: torch.Tensor | None,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
    jvp_model: nn.Module | None = None,
    classes: ClassCondition | None = None,
) -> LossOutput:
    """Compute the flow-matching loss on clean x and corrupted y, (N, C, H, W) in [-1, 1], where u(z_t, t, t) regresses onto v.

    `sample_times` gives r = t on every row, so no JVP runs and the target is v itself, or for a
    class-conditional generator (y None, `classes` given) the guided v_g of `guided_velocity`,
    computed through `jvp_model` as in `meanflow_loss`. The reduction and the adaptive weight are
    those of `meanflow_loss`.
    """
    batch = _path_batch(x, y, objective, generator, classes)
    velocity = _forward(model, batch.z, batch.r, batch.t, batch.cond, classes)  # (N, C, H, W)
    target = batch.v
    if classes is not None:
        inner = model if jvp_model is None else jvp_model
        target = guided_velocity(inner, batch.z, batch.t, batch.v, classes, batch.cond)
    return _adaptive((velocity.float() - target.float()) ** 2, objective)


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
    classes: ClassCondition | None = None,
) -> LossOutput:
    """Compute the loss of `objective.kind` on clean x and corrupted y, (N, C, H, W) in [-1, 1].

    A class-conditional generator passes y = None and `classes`; it trains meanflow or flow_matching.
    """
    if classes is not None and objective.kind not in ("meanflow", "flow_matching"):
        raise ValueError(f"class-conditional training supports meanflow and flow_matching, not {objective.kind!r}")
    if objective.kind == "regression":
        return regression_loss(model, x, y)
    if objective.kind == "flow_matching":
        return flow_matching_loss(model, x, y, objective, generator, jvp_model, classes)
    if objective.kind == "imf":
        return imf_loss(model, x, y, objective, generator, jvp_model)
    return meanflow_loss(model, x, y, objective, generator, jvp_model, classes)


def check_velocity(velocity: str, kind: str) -> None:
    """Raise ValueError unless a network of objective `kind` can step with `velocity`."""
    if velocity not in VELOCITIES:
        raise ValueError(f"velocity {velocity!r} is invalid; choose one of {', '.join(VELOCITIES)}")
    if velocity == "instantaneous" and kind == "meanflow":
        raise ValueError(
            "velocity 'instantaneous' needs a v head, and a meanflow network has none; "
            "use velocity 'average' or an imf checkpoint"
        )


@torch.no_grad()
def restore(
    model: nn.Module,
    y: torch.Tensor,
    objective: ObjectiveConfig,
    steps: int = 1,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
    velocity: str | None = None,
) -> torch.Tensor:
    """Run the sampler from the source of y (N, C, H, W) back to t = 0 in `steps` network calls.

    One step is x_hat = s - u(s, 0, 1). N steps walk the grid t_k = 1 - k / N with
    z <- z - (t_k - t_{k+1}) u(z, t_{k+1}, t_k); `imf` uses its u head. A `flow_matching` model
    is queried at r = t, u(z, t_k, t_k), which is its instantaneous velocity, so its N steps are
    Euler steps. A regression model always takes one step. The source noise is scaled by
    `temperature`, by default the objective's `restore_temperature`.

    `velocity` 'instantaneous' (default: the objective's `restore_velocity`) makes an `imf` model
    step with its v head in the same calls, so its steps are Euler steps too. In the bridge form
    without source noise one such step is x_hat = y - v(y, 1), and v(y, 1) is trained towards
    y - x, so it estimates the posterior mean E[x | y], the estimate with the lowest squared error.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    velocity = objective.restore_velocity if velocity is None else velocity
    check_velocity(velocity, objective.kind)
    cond = condition(y, objective)
    scale = objective.restore_temperature if temperature is None else temperature
    z = draw_source(y, objective, generator, scale)  # (N, C, H, W)
    return _integrate(model, z, cond, objective, steps, velocity=velocity)


def _integrate(
    model: nn.Module,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    objective: ObjectiveConfig,
    steps: int,
    classes: ClassCondition | None = None,
    velocity: str = "average",
) -> torch.Tensor:
    """Walk z (N, C, H, W) from t = 1 to t = 0 on the grid t_k = 1 - k / steps."""
    n = z.shape[0]
    grid = torch.linspace(1.0, 0.0, steps + 1, device=z.device, dtype=z.dtype)
    for k in range(steps):
        t = grid[k].expand(n)  # (N,)
        r = t if objective.kind == "flow_matching" else grid[k + 1].expand(n)  # (N,)
        u = step_velocity(model, z, r, t, cond, objective, classes, velocity)  # (N, C, H, W)
        z = z - (grid[k] - grid[k + 1]) * u.to(z.dtype)
    return z


@torch.no_grad()
def generate(
    model: nn.Module,
    labels: torch.Tensor,
    guidance: float,
    image_shape: tuple[int, int, int],
    objective: ObjectiveConfig,
    null_class: int,
    steps: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate one image (N, C, H, W) in [-1, 1] per label (N,) from noise at guidance scale `guidance`.

    The guidance scale is a network input, so each step is one network call. The sampler is that
    of `restore`, started from pure noise with no image condition.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n = labels.shape[0]
    z = torch.randn((n, *image_shape), generator=generator, device=labels.device)  # (N, C, H, W)
    scales = torch.full((n,), float(guidance), device=labels.device)  # (N,)
    return _integrate(model, z, None, objective, steps, ClassCondition(labels, scales, null_class))
