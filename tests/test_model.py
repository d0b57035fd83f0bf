"""The DiT: shapes, padding to the patch size, presets, adaLN-Zero start."""

from __future__ import annotations

import pytest
import torch

from restorecli.errors import UsageError
from restorecli.models import PRESETS, build_model, count_parameters
from restorecli.models.dit import DiT


@pytest.mark.parametrize(("height", "width"), [(28, 28), (30, 45), (3, 5), (64, 16)])
def test_output_matches_input_size(height, width):
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    z = torch.rand((2, 1, height, width))

    out = model(z, torch.zeros(2), torch.ones(2))

    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()


def test_condition_channels_are_used():
    model = DiT(channels=1, cond_channels=1, patch=4, dim=32, depth=1, heads=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    z = torch.rand((1, 1, 28, 28))

    first = model(z, torch.zeros(1), torch.ones(1), torch.zeros_like(z))
    second = model(z, torch.zeros(1), torch.ones(1), torch.ones_like(z))

    assert not torch.allclose(first, second)


def test_fresh_model_outputs_zero():
    model = build_model("DiT-T/4", channels=1, cond_channels=0)
    z = torch.rand((2, 1, 28, 28))

    out = model(z, torch.zeros(2), torch.ones(2))

    assert torch.count_nonzero(out) == 0


def test_time_inputs_change_the_output():
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    z = torch.rand((1, 1, 28, 28))

    at_one = model(z, torch.zeros(1), torch.ones(1))
    other_gap = model(z, torch.full((1,), 0.5), torch.ones(1))

    assert not torch.allclose(at_one, other_gap)


def test_small_preset_has_1_3m_parameters():
    model = build_model("DiT-S/4", channels=1, cond_channels=0)

    assert count_parameters(model) == pytest.approx(1.32e6, rel=0.01)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    width, depth, heads, patch = PRESETS[name]

    model = build_model(name, channels=3, cond_channels=3)

    assert model.patch == patch
    assert len(model.blocks) == depth


def test_unknown_preset_names_choices():
    with pytest.raises(UsageError, match="DiT-S/4"):
        build_model("DiT-Huge/1", channels=1, cond_channels=0)
