"""MeanFlow objective and sampler: the JVP, an exact single-point flow, time draws, the losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp

from restorecli.config import ObjectiveConfig
from restorecli.data import mnist
from restorecli.meanflow import (
    _adaptive,
    draw_source,
    flow_matching_loss,
    imf_loss,
    meanflow_loss,
    output_channels,
    regression_loss,
    restore,
    sample_times,
    split_heads,
    time_derivative,
    training_loss,
)
from restorecli.models.dit import DiT


def random_tiny_dit(
    cond_channels: int = 0, out_channels: int | None = None, time_scale: float = 1000.0, conv_head_channels: int = 0,
    conv_stem_channels: int = 0, saturation_masks: bool = False, output_gate: bool = False,
) -> DiT:
    """A tiny float64 DiT with every weight random, so that no zero-initialised layer hides a path."""
    torch.manual_seed(0)
    model = DiT(
        channels=1, cond_channels=cond_channels, patch=4, dim=16, depth=1, heads=2, time_scale=time_scale,
        out_channels=out_channels, conv_head_channels=conv_head_channels, conv_stem_channels=conv_stem_channels,
        saturation_masks=saturation_masks, output_gate=output_gate,
    ).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


class ExactSinglePointFlow(nn.Module):
    """The exact average velocity when all data is one image x0: u(z, r, t) = (z - x0) / t."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0

    def forward(self, z, r, t, cond=None):
        return (z - self.x0) / t[:, None, None, None]


class TwoHeadExactFlow(ExactSinglePointFlow):
    """An imf network for one image x0: u head (z - x0) / t, v head `v_head(z, t)` (by default the same)."""

    def __init__(self, x0: torch.Tensor, v_head=None) -> None:
        super().__init__(x0)
        self.v_head = v_head

    def forward(self, z, r, t, cond=None):
        u = super().forward(z, r, t, cond)
        v = u if self.v_head is None else self.v_head(z, t)
        return torch.cat([u, v], dim=1)  # (N, 2C, H, W)


class ExactVHeadOnly(ExactSinglePointFlow):
    """An imf network for one image x0 with the exact v head (z - x0) / t and a wrong constant u head."""

    def forward(self, z, r, t, cond=None):
        v = super().forward(z, r, t, cond)
        return torch.cat([torch.full_like(z, 3.0), v], dim=1)  # (N, 2C, H, W)


class TimeRecorder(ExactSinglePointFlow):
    """The exact single-point flow that also records the (r, t) of every call."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__(x0)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z, r, t, cond=None):
        self.calls.append((r.clone(), t.clone()))
        return super().forward(z, r, t, cond)


class CallCounter(nn.Module):
    """Wraps a network and counts its forward calls (a JVP through it counts as one)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, z, r, t, cond=None):
        self.calls += 1
        return self.inner(z, r, t, cond)


def finite_difference(model, z, r, t, v, cond, step=1e-7):
    """Central difference of u along (z, t) -> (z + h v, t + h), with r and cond held fixed."""
    ahead = model(z + step * v, r, t + step, cond)
    behind = model(z - step * v, r, t - step, cond)
    return (ahead - behind) / (2 * step)


@pytest.mark.parametrize(
    ("conv_head_channels", "conv_stem_channels", "masks_and_gate"),
    [(0, 0, False), (4, 0, False), (0, 4, False), (4, 4, True)],
)
def test_jvp_matches_finite_differences_float64(conv_head_channels, conv_stem_channels, masks_and_gate):
    model = random_tiny_dit(
        conv_head_channels=conv_head_channels, conv_stem_channels=conv_stem_channels,
        saturation_masks=masks_and_gate, output_gate=masks_and_gate,
    )
    generator = torch.Generator().manual_seed(1)
    z = torch.randn((3, 1, 8, 8), generator=generator, dtype=torch.float64)
    v = torch.randn((3, 1, 8, 8), generator=generator, dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.2, 0.0], dtype=torch.float64)

    dudt = time_derivative(model, z, r, t, v)
    expected = finite_difference(model, z, r, t, v, None)

    assert dudt.abs().max() > 1e-3
    torch.testing.assert_close(dudt, expected, rtol=1e-5, atol=1e-6)


def test_condition_gets_no_tangent():
    model = random_tiny_dit(cond_channels=1)
    generator = torch.Generator().manual_seed(2)
    z, v, cond = (torch.randn((2, 1, 8, 8), generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0.8, 0.6], dtype=torch.float64)
    r = torch.tensor([0.2, 0.1], dtype=torch.float64)

    dudt = time_derivative(model, z, r, t, v, cond)
    with_fixed_condition = finite_difference(model, z, r, t, v, cond)
    _, with_condition_tangent = jvp(
        lambda zz, rr, tt, cc: model(zz, rr, tt, cc), (z, r, t, cond), (v, torch.zeros_like(r), torch.ones_like(t), v)
    )

    torch.testing.assert_close(dudt, with_fixed_condition, rtol=1e-5, atol=1e-6)
    assert (dudt - with_condition_tangent).abs().max() > 1e-3


@pytest.mark.parametrize("source", ["bridge", "noise"])
@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_lands_on_single_point(source, steps):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    y = (x0 + 0.3 * torch.randn_like(x0)).expand(5, -1, -1, -1)
    objective = ObjectiveConfig(source=source, source_sigma=0.5)

    x_hat = restore(ExactSinglePointFlow(x0), y, objective, steps=steps, generator=torch.Generator().manual_seed(3))

    torch.testing.assert_close(x_hat, x0.expand_as(x_hat), rtol=0, atol=1e-10)


class SourceRecorder(nn.Module):
    """A network that predicts zero velocity, so that one restore step returns its source."""

    def forward(self, z, r, t, cond=None):
        return torch.zeros_like(z)


@pytest.mark.parametrize("source", ["bridge", "noise"])
def test_restore_temperature_scales_source_noise(source):
    y = torch.full((2, 1, 8, 8), 0.25, dtype=torch.float64)
    objective = ObjectiveConfig(source=source, source_sigma=0.5)
    mean = y if source == "bridge" else torch.zeros_like(y)

    full = restore(SourceRecorder(), y, objective, generator=torch.Generator().manual_seed(5))
    half = restore(SourceRecorder(), y, objective, generator=torch.Generator().manual_seed(5), temperature=0.5)
    cold = restore(SourceRecorder(), y, objective.model_copy(update={"restore_temperature": 0.0}))

    torch.testing.assert_close(half - mean, 0.5 * (full - mean))
    torch.testing.assert_close(cold, mean)
    assert (full - mean).abs().max() > 0.1


@pytest.mark.parametrize("source", ["bridge", "noise"])
def test_exact_flow_has_zero_meanflow_error(source):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    x = x0.expand(64, -1, -1, -1)
    y = x + 0.2 * torch.randn_like(x)
    objective = ObjectiveConfig(source=source, equal_fraction=0.25, corner_fraction=0.25)

    output = meanflow_loss(ExactSinglePointFlow(x0), x, y, objective, torch.Generator().manual_seed(4))

    assert output.mse.item() < 1e-12  # float32 rounding of a float64 zero


def test_time_draws_respect_order_and_fractions():
    objective = ObjectiveConfig(equal_fraction=0.4, corner_fraction=0.2)
    n = 40_000

    r, t = sample_times(n, objective, torch.Generator().manual_seed(0), torch.device("cpu"))

    assert (r >= 0).all()
    assert (r <= t).all()
    assert (t <= 1).all()
    corner = (r == 0) & (t == 1)
    equal = r == t
    assert corner.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert equal.float().mean().item() == pytest.approx(0.4, abs=0.01)
    # Without the forced rows, t is the max of two logit-normal(-0.4, 1) draws: its median is ~0.5.
    free = ~equal & ~corner
    assert t[free].median().item() == pytest.approx(0.5, abs=0.05)


def test_time_draws_repeat_with_seed():
    objective = ObjectiveConfig()
    first = sample_times(100, objective, torch.Generator().manual_seed(9), torch.device("cpu"))
    second = sample_times(100, objective, torch.Generator().manual_seed(9), torch.device("cpu"))

    torch.testing.assert_close(first, second)


def test_regression_restore_is_the_trained_prediction():
    model = random_tiny_dit().float()
    x = torch.rand((4, 1, 8, 8)) * 2 - 1
    y = x + 0.1 * torch.randn_like(x)
    objective = ObjectiveConfig(kind="regression")

    loss = regression_loss(model, x, y)
    x_hat = restore(model, y, objective, steps=1)

    assert loss.loss.item() == pytest.approx(((x_hat - x) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["meanflow", "imf", "flow_matching", "regression"])
def test_few_real_steps_improve_restoration(kind):
    torch.manual_seed(0)
    objective = ObjectiveConfig(kind=kind, source_sigma=0.0, equal_fraction=0.25, corner_fraction=0.25)
    model = DiT(channels=1, patch=4, dim=32, depth=2, heads=2, time_scale=10.0, out_channels=output_channels(1, objective))
    x = torch.from_numpy(mnist.load_train_split().images[:16]) * 2 - 1  # (16, 1, 28, 28)
    y = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def restoration_error() -> float:
        x_hat = restore(model, y, objective, steps=1, generator=torch.Generator().manual_seed(0))
        return ((x_hat - x) ** 2).mean().item()

    before = restoration_error()
    for step in range(120):
        output = training_loss(model, x, y, objective, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        assert torch.isfinite(output.loss)
    after = restoration_error()

    assert after < 0.7 * before


# ----------------------------------------------------------------------------------------------
# Two heads (imf) and flow matching
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_split_heads_shapes(channels):
    output = torch.randn((4, 2 * channels, 5, 6))

    u, v = split_heads(output, channels)

    assert u.shape == (4, channels, 5, 6)
    assert v.shape == (4, channels, 5, 6)
    torch.testing.assert_close(u, output[:, :channels])
    torch.testing.assert_close(v, output[:, channels:])
    with pytest.raises(ValueError, match="needs"):
        split_heads(output[:, :channels], channels)


def test_output_channels_per_kind():
    assert output_channels(3, ObjectiveConfig(kind="imf")) == 6
    for kind in ("meanflow", "flow_matching", "regression"):
        assert output_channels(3, ObjectiveConfig(kind=kind)) == 3


def replay_path(x, y, objective, seed):
    """Repeat the loss's random draws for `seed`: (r, t), z_t and v, in the loss's order."""
    generator = torch.Generator().manual_seed(seed)
    r, t = sample_times(x.shape[0], objective, generator, x.device)
    s = draw_source(y, objective, generator)
    t_img = t[:, None, None, None]
    return r, t, (1 - t_img) * x + t_img * s, s - x


def test_imf_jvp_uses_predicted_velocity():
    # Time scale 1 keeps the ∂u/∂t part of du/dt from drowning the (∂u/∂z) tangent part.
    model = random_tiny_dit(out_channels=2, time_scale=1.0)
    generator = torch.Generator().manual_seed(6)
    x = torch.rand((8, 1, 8, 8), generator=generator, dtype=torch.float64) * 2 - 1
    y = x + 0.3 * torch.randn((8, 1, 8, 8), generator=generator, dtype=torch.float64)
    objective = ObjectiveConfig(kind="imf", equal_fraction=0.25, corner_fraction=0.25)

    output = imf_loss(model, x, y, objective, torch.Generator().manual_seed(7))

    # The same loss by hand: a full-batch JVP of the u head, once per tangent.
    r, t, z, v = replay_path(x, y, objective, seed=7)
    assert ((t - r) > 0).any()
    with torch.no_grad():
        u, v_hat = split_heads(model(z, r, t), 1)

    def u_head(z_in, t_in):
        return split_heads(model(z_in, r, t_in), 1)[0]

    gap = (t - r)[:, None, None, None]
    with torch.no_grad():
        _, dudt_predicted = jvp(u_head, (z, t), (v_hat, torch.ones_like(t)))
        _, dudt_conditional = jvp(u_head, (z, t), (v, torch.ones_like(t)))
    compound = u + gap * dudt_predicted
    expected_loss = _adaptive((compound - v) ** 2, objective).loss + _adaptive((v_hat - v) ** 2, objective).loss
    expected_mse = ((compound - v) ** 2).mean()
    conditional_mse = ((u + gap * dudt_conditional - v) ** 2).mean()

    # The loss reduces in float32, so it matches the float64 reference only to float32 rounding.
    torch.testing.assert_close(output.mse, expected_mse.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(output.loss.detach(), expected_loss.float(), rtol=1e-5, atol=0)
    assert (output.mse - conditional_mse).abs() > 0.05 * conditional_mse


def test_imf_gradient_reaches_both_heads():
    model = random_tiny_dit(out_channels=2)
    x = torch.rand((6, 1, 8, 8), dtype=torch.float64) * 2 - 1
    y = x + 0.3 * torch.randn_like(x)
    objective = ObjectiveConfig(kind="imf")

    imf_loss(model, x, y, objective, torch.Generator().manual_seed(8)).loss.backward()

    # The final linear layer maps each token to (p1 p2 c) outputs, with c (u, then v) fastest.
    grad = model.final.linear.weight.grad.reshape(4 * 4, 2, -1)
    assert grad[:, 0].abs().max() > 0  # u head
    assert grad[:, 1].abs().max() > 0  # v head


@pytest.mark.parametrize("source", ["bridge", "noise"])
def test_exact_flow_has_zero_imf_loss(source):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    x = x0.expand(64, -1, -1, -1)
    y = x + 0.2 * torch.randn_like(x)
    objective = ObjectiveConfig(kind="imf", source=source, equal_fraction=0.25, corner_fraction=0.25)

    output = imf_loss(TwoHeadExactFlow(x0), x, y, objective, torch.Generator().manual_seed(4))

    assert output.mse.item() < 1e-12  # float32 rounding of a float64 zero
    assert output.loss.item() < 1e-8  # both adaptive terms, each about mse / c


@pytest.mark.parametrize("steps", [1, 4])
def test_imf_restore_uses_u_head(steps):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    y = (x0 + 0.3 * torch.randn_like(x0)).expand(5, -1, -1, -1)
    objective = ObjectiveConfig(kind="imf", source_sigma=0.5)
    model = TwoHeadExactFlow(x0, v_head=lambda z, t: torch.full_like(z, 3.0))  # a wrong v head

    x_hat = restore(model, y, objective, steps=steps, generator=torch.Generator().manual_seed(3))

    torch.testing.assert_close(x_hat, x0.expand_as(x_hat), rtol=0, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 4])
def test_imf_restore_instantaneous_uses_v_head(steps):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    y = (x0 + 0.3 * torch.randn_like(x0)).expand(5, -1, -1, -1)
    objective = ObjectiveConfig(kind="imf", source_sigma=0.5, restore_velocity="instantaneous")
    model = ExactVHeadOnly(x0)

    x_hat = restore(model, y, objective, steps=steps, generator=torch.Generator().manual_seed(3))
    x_average = restore(model, y, objective, steps=steps, generator=torch.Generator().manual_seed(3), velocity="average")

    torch.testing.assert_close(x_hat, x0.expand_as(x_hat), rtol=0, atol=1e-10)
    assert (x_average - x0).abs().max() > 1.0


def test_meanflow_has_no_instantaneous_velocity():
    with pytest.raises(ValueError, match="needs a v head"):
        ObjectiveConfig(kind="meanflow", restore_velocity="instantaneous")
    with pytest.raises(ValueError, match="needs a v head"):
        restore(random_tiny_dit(), torch.zeros((1, 1, 8, 8), dtype=torch.float64), ObjectiveConfig(), velocity="instantaneous")


def test_flow_matching_times_have_r_equal_t():
    objective = ObjectiveConfig(kind="flow_matching", equal_fraction=0.4, corner_fraction=0.3)

    r, t = sample_times(20_000, objective, torch.Generator().manual_seed(0), torch.device("cpu"))

    assert torch.equal(r, t)
    assert (t < 1).all()  # the corner share is ignored
    assert t.median().item() == pytest.approx(0.5, abs=0.05)  # max of two logit-normal draws


def test_flow_matching_targets_v_without_jvp():
    model = CallCounter(random_tiny_dit())
    x = torch.rand((8, 1, 8, 8), dtype=torch.float64) * 2 - 1
    y = x + 0.3 * torch.randn_like(x)
    objective = ObjectiveConfig(kind="flow_matching")

    output = flow_matching_loss(model, x, y, objective, torch.Generator().manual_seed(5))

    r, t, z, v = replay_path(x, y, objective, seed=5)
    with torch.no_grad():
        expected_mse = ((model.inner(z, t, t) - v) ** 2).mean()
    assert model.calls == 1  # the forward pass only, no JVP
    torch.testing.assert_close(r, t)
    torch.testing.assert_close(output.mse, expected_mse.float(), rtol=1e-5, atol=0)


def test_meanflow_loss_calls_jvp_once():
    model = CallCounter(random_tiny_dit())
    x = torch.rand((8, 1, 8, 8), dtype=torch.float64) * 2 - 1
    y = x + 0.3 * torch.randn_like(x)

    meanflow_loss(model, x, y, ObjectiveConfig(equal_fraction=0.25), torch.Generator().manual_seed(5))

    assert model.calls == 2  # the forward pass and one JVP over the rows with r != t


@pytest.mark.parametrize("kind", ["flow_matching", "meanflow"])
@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_time_queries_per_kind(kind, steps):
    torch.manual_seed(0)
    x0 = torch.rand((1, 1, 12, 12), dtype=torch.float64) * 2 - 1
    y = (x0 + 0.3 * torch.randn_like(x0)).expand(5, -1, -1, -1)
    objective = ObjectiveConfig(kind=kind, source_sigma=0.5)
    model = TimeRecorder(x0)

    x_hat = restore(model, y, objective, steps=steps, generator=torch.Generator().manual_seed(3))

    torch.testing.assert_close(x_hat, x0.expand_as(x_hat), rtol=0, atol=1e-10)
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    assert len(model.calls) == steps
    for k, (r, t) in enumerate(model.calls):
        expected_r = grid[k] if kind == "flow_matching" else grid[k + 1]
        assert torch.equal(t, grid[k].expand(5))
        assert torch.equal(r, expected_r.expand(5))
