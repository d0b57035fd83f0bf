"""The UNet backbone: shapes and padding, zero start, its JVP, batch independence, and its CLI presets."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.func import jvp

from conftest import run_cli
from restorecli.checkpoint import load_checkpoint
from restorecli.errors import UsageError
from restorecli.meanflow import time_derivative
from restorecli.models import UNET_PRESETS, UNet, build_model, count_parameters


def random_unet(dtype: torch.dtype = torch.float32, **options) -> UNet:
    """A tiny UNet with every weight random, so that no zero-initialised layer hides a path."""
    torch.manual_seed(0)
    settings = dict(channels=1, width=8, multipliers=(1, 2, 2), heads=2) | options
    model = UNet(**settings).to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def finite_difference(model, z, r, t, v, cond, step=1e-7):
    """Central difference of u along (z, t) -> (z + h v, t + h), with r and cond held fixed."""
    ahead = model(z + step * v, r, t + step, cond)
    behind = model(z - step * v, r, t - step, cond)
    return (ahead - behind) / (2 * step)


def float64_inputs(seed: int, batch: int, height: int, width: int):
    """Return z, v, cond images and times r < t, all float64."""
    generator = torch.Generator().manual_seed(seed)
    z, v, cond = (torch.randn((batch, 1, height, width), generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.linspace(0.9, 0.3, batch, dtype=torch.float64)
    r = t * torch.rand(batch, generator=generator, dtype=torch.float64)
    return z, v, cond, r, t


# ----------------------------------------------------------------------------------------------
# Shapes and start
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(28, 28), (30, 45), (7, 9), (2, 3), (64, 16)])
def test_output_matches_input_size(height, width):
    model = random_unet(cond_channels=1, out_channels=2)
    z = torch.rand((2, 1, height, width))
    cond = torch.rand((2, 1, height, width))

    out = model(z, torch.zeros(2), torch.ones(2), cond)

    assert out.shape == (2, 2, height, width)
    assert torch.isfinite(out).all()


def test_three_levels_without_attention_or_qk_norm():
    model = random_unet(channels=3, multipliers=(1, 2, 2, 4), blocks=2, attention=False, qk_norm=False)
    z = torch.rand((2, 3, 30, 45))

    out = model(z, torch.zeros(2), torch.ones(2))

    assert model.downsampling_factor == 8
    assert out.shape == (2, 3, 30, 45)
    assert torch.isfinite(out).all()


def test_condition_channels_are_used():
    model = random_unet(cond_channels=1)
    z = torch.rand((1, 1, 28, 28))

    first = model(z, torch.zeros(1), torch.ones(1), torch.zeros_like(z))
    second = model(z, torch.zeros(1), torch.ones(1), torch.ones_like(z))

    assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", list(UNET_PRESETS))
def test_fresh_preset_outputs_zero(name):
    model = build_model(name, channels=1, cond_channels=1, out_channels=2)
    z = torch.rand((2, 1, 28, 28))

    out = model(z, torch.zeros(2), torch.ones(2), torch.rand_like(z))

    assert out.shape == (2, 2, 28, 28)
    assert torch.count_nonzero(out) == 0


def test_preset_parameter_counts():
    tiny = count_parameters(build_model("UNet-T", channels=1, cond_channels=0))
    small = count_parameters(build_model("UNet-S", channels=1, cond_channels=0))
    dit_small = count_parameters(build_model("DiT-S/4", channels=1, cond_channels=0))

    assert tiny < 100_000
    assert small == pytest.approx(dit_small, rel=0.05)


def test_unknown_preset_names_both_families():
    with pytest.raises(UsageError, match="DiT-S/4.*UNet-T, UNet-S"):
        build_model("UNet-XL", channels=1, cond_channels=0)


# ----------------------------------------------------------------------------------------------
# JVP and batch independence
# ----------------------------------------------------------------------------------------------


def test_jvp_matches_finite_differences_float64():
    model = random_unet(torch.float64, cond_channels=1)
    z, v, cond, r, t = float64_inputs(1, batch=3, height=7, width=9)

    dudt = time_derivative(model, z, r, t, v, cond)
    expected = finite_difference(model, z, r, t, v, cond)

    assert dudt.abs().max() > 1e-3
    torch.testing.assert_close(dudt, expected, rtol=1e-5, atol=1e-6)


def test_condition_gets_no_tangent():
    model = random_unet(torch.float64, cond_channels=1)
    z, v, cond, r, t = float64_inputs(2, batch=2, height=8, width=8)

    dudt = time_derivative(model, z, r, t, v, cond)
    _, with_condition_tangent = jvp(
        lambda zz, rr, tt, cc: model(zz, rr, tt, cc), (z, r, t, cond), (v, torch.zeros_like(r), torch.ones_like(t), v)
    )

    assert (dudt - with_condition_tangent).abs().max() > 1e-3


def test_output_and_jvp_independent_of_batch():
    model = random_unet(torch.float64, cond_channels=1)
    z, v, cond, r, t = float64_inputs(3, batch=4, height=28, width=28)
    others = float64_inputs(4, batch=4, height=28, width=28)
    # Row 0 has the same image and times in both batches, and every other row differs.
    mixed = [torch.cat([mine[:1], theirs[1:]]) for mine, theirs in zip((z, v, cond, r, t), others)]

    alone = model(z[:1], r[:1], t[:1], cond[:1])
    in_batch = model(z, r, t, cond)[:1]
    in_other_batch = model(mixed[0], mixed[3], mixed[4], mixed[2])[:1]
    dudt = time_derivative(model, z, r, t, v, cond)[:1]
    dudt_other_batch = time_derivative(model, mixed[0], mixed[3], mixed[4], mixed[1], mixed[2])[:1]

    torch.testing.assert_close(in_batch, alone)
    torch.testing.assert_close(in_other_batch, alone)
    torch.testing.assert_close(dudt_other_batch, dudt)


# ----------------------------------------------------------------------------------------------
# Through the CLI
# ----------------------------------------------------------------------------------------------


def test_train_and_restore_with_unet(tmp_path, tiny_config, digit_png):
    run_dir = tmp_path / "unet"
    restored = tmp_path / "restored.png"

    trained = run_cli(
        "train", "--config", tiny_config, "--run-dir", run_dir,
        "--model", "UNet-T", "--steps", "4", "--batch-size", "8", "--device", "cpu",
    )
    assert trained.returncode == 0, trained.output
    checkpoint = run_dir / "checkpoints" / "final.safetensors"
    assert load_checkpoint(checkpoint).config.model.preset == "UNet-T"

    result = run_cli("restore", digit_png, restored, "--checkpoint", checkpoint)

    assert result.returncode == 0, result.output
    assert "1 network evaluation)" in result.output
    with Image.open(restored) as image:
        assert image.format == "PNG"
        assert image.size == (28, 28)


def test_presets_command_lists_unets():
    result = run_cli("presets")

    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("UNet-T: channels 8-16-16") for line in lines)
    assert any(line.startswith("UNet-S: channels 32-64-128") for line in lines)
    assert any(line.startswith("DiT-S/4:") for line in lines)
