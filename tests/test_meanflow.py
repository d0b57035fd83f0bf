"""MeanFlow objective and sampler: the JVP, an exact single-point flow, time draws, the losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp

from restorecli.config import ObjectiveConfig
from restorecli.data import mnist
from restorecli.meanflow import meanflow_loss, regression_loss, restore, sample_times, time_derivative
from restorecli.models.dit import DiT


def random_tiny_dit(cond_channels: int = 0) -> DiT:
    """A tiny float64 DiT with every weight random, so that no zero-initialised layer hides a path."""
    torch.manual_seed(0)
    model = DiT(channels=1, cond_channels=cond_channels, patch=4, dim=16, depth=1, heads=2).double()
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


def finite_difference(model, z, r, t, v, cond, step=1e-7):
    """Central difference of u along (z, t) -> (z + h v, t + h), with r and cond held fixed."""
    ahead = model(z + step * v, r, t + step, cond)
    behind = model(z - step * v, r, t - step, cond)
    return (ahead - behind) / (2 * step)


def test_jvp_matches_finite_differences_float64():
    model = random_tiny_dit()
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


@pytest.mark.parametrize("kind", ["meanflow", "regression"])
def test_few_real_steps_improve_restoration(kind):
    torch.manual_seed(0)
    model = DiT(channels=1, patch=4, dim=32, depth=2, heads=2, time_scale=10.0)
    x = torch.from_numpy(mnist.load_train_split().images[:16]) * 2 - 1  # (16, 1, 28, 28)
    y = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    objective = ObjectiveConfig(kind=kind, source_sigma=0.0, equal_fraction=0.25, corner_fraction=0.25)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def restoration_error() -> float:
        x_hat = restore(model, y, objective, steps=1, generator=torch.Generator().manual_seed(0))
        return ((x_hat - x) ** 2).mean().item()

    before = restoration_error()
    for step in range(120):
        if kind == "meanflow":
            output = meanflow_loss(model, x, y, objective, torch.Generator().manual_seed(step))
        else:
            output = regression_loss(model, x, y)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        assert torch.isfinite(output.loss)
    after = restoration_error()

    assert after < 0.7 * before
