"""Class-conditional generator: guided target, null class, JVP without class tangents, train and sample by CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jvp

from conftest import run_cli
from restorecli.checkpoint import load_checkpoint
from restorecli.config import ObjectiveConfig, build_config
from restorecli.data.images import read_image
from restorecli.errors import UsageError
from restorecli.meanflow import (
    ClassCondition,
    flow_matching_loss,
    guided_velocity,
    sample_times,
    time_derivative,
)
from restorecli.models import DiT, UNet, build_model

NULL = 10


class LabelledStub(nn.Module):
    """A network with known outputs: u(z, r, t | label, omega) = 0.5 z + t + label + 0.1 omega.

    The null class (label 10) gives the unconditional output 0.5 z + t + 10 + 0.1 omega. Every call's
    labels, guidance and times are recorded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []

    def forward(self, z, r, t, cond=None, labels=None, guidance=None):
        self.calls.append({"r": r.clone(), "t": t.clone(), "labels": labels.clone(), "guidance": guidance.clone()})
        shift = t + labels.to(z.dtype) + 0.1 * guidance.to(z.dtype)  # (N,)
        return 0.5 * z + shift[:, None, None, None]


def stub_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((5, 1, 4, 4), generator=generator, dtype=torch.float64)
    v = torch.randn((5, 1, 4, 4), generator=generator, dtype=torch.float64)
    t = torch.tensor([0.9, 0.7, 0.5, 0.3, 1.0], dtype=torch.float64)
    classes = ClassCondition(
        labels=torch.tensor([3, NULL, 0, 7, NULL]),
        guidance=torch.tensor([2.0, 3.0, 1.5, 4.0, 2.5], dtype=torch.float64),
        null_class=NULL,
    )
    return z, v, t, classes


def test_guided_velocity_matches_formula():
    z, v, t, classes = stub_inputs()
    model = LabelledStub()

    guided = guided_velocity(model, z, t, v, classes)

    omega = classes.guidance[:, None, None, None]
    unconditional = 0.5 * z + (t + NULL + 0.1 * classes.guidance)[:, None, None, None]
    formula = omega * v + (1 - omega) * unconditional
    conditional = classes.labels != NULL
    torch.testing.assert_close(guided[conditional], formula[conditional], rtol=0, atol=1e-12)
    torch.testing.assert_close(guided[~conditional], v[~conditional], rtol=0, atol=0)


def test_guided_velocity_queries_null_class():
    z, v, t, classes = stub_inputs()
    model = LabelledStub()

    guided_velocity(model, z, t, v, classes)

    assert len(model.calls) == 1
    call = model.calls[0]
    conditional = classes.labels != NULL
    assert torch.equal(call["labels"], torch.full((3,), NULL))
    assert torch.equal(call["r"], t[conditional])
    assert torch.equal(call["t"], t[conditional])
    assert torch.equal(call["guidance"], classes.guidance[conditional])


def test_guided_velocity_has_no_gradient():
    z, v, t, classes = stub_inputs()
    model = DiT(channels=1, patch=4, dim=16, depth=1, heads=2, num_classes=10).double()

    guided = guided_velocity(model, z, t, v, classes)

    assert not guided.requires_grad


def test_flow_matching_loss_targets_guided_velocity():
    x = torch.rand((5, 1, 4, 4), dtype=torch.float64) * 2 - 1
    _, _, _, classes = stub_inputs()
    objective = ObjectiveConfig(kind="flow_matching", source="noise")
    model = LabelledStub()

    output = flow_matching_loss(model, x, None, objective, torch.Generator().manual_seed(5), classes=classes)

    # Replay the loss's draws: (r, t), then the noise source.
    generator = torch.Generator().manual_seed(5)
    r, t = sample_times(5, objective, generator, x.device)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    t_img = t[:, None, None, None].to(x.dtype)
    z, v = (1 - t_img) * x + t_img * noise, noise - x
    with torch.no_grad():
        prediction = LabelledStub()(z, r.to(x.dtype), t.to(x.dtype), None, classes.labels, classes.guidance)
        target = guided_velocity(LabelledStub(), z, t.to(x.dtype), v, classes)
    expected_mse = ((prediction - target) ** 2).mean()
    plain_mse = ((prediction - v) ** 2).mean()
    torch.testing.assert_close(output.mse, expected_mse.float(), rtol=1e-5, atol=0)
    assert (expected_mse - plain_mse).abs() > 1e-3  # guidance changed the target


# ----------------------------------------------------------------------------------------------
# Null class and the JVP
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["DiT-T/4", "UNet-T"])
def test_null_class_differs_from_class_zero(preset):
    torch.manual_seed(0)
    model = build_model(preset, channels=1, cond_channels=0, num_classes=10)
    r, t = torch.zeros(2), torch.ones(2)
    guidance = torch.full((2,), 2.0)

    null_vector = model.condition_vector(r, t, torch.tensor([NULL, NULL]), guidance)
    zero_vector = model.condition_vector(r, t, torch.tensor([0, 0]), guidance)
    default_vector = model.condition_vector(r, t)

    assert model.class_embed.null_class == 10
    assert model.class_embed.labels.weight.shape[0] == 11
    assert not torch.allclose(model.class_embed.labels.weight[NULL], model.class_embed.labels.weight[0])
    assert (null_vector - zero_vector).abs().max() > 1e-4
    # Without labels and guidance the network uses the null class at scale 1.
    torch.testing.assert_close(default_vector, model.condition_vector(r, t, torch.tensor([NULL, NULL]), torch.ones(2)))


def test_restorer_has_no_class_inputs():
    model = build_model("DiT-T/4", channels=1, cond_channels=0)
    z = torch.zeros((1, 1, 28, 28))

    assert model.class_embed is None
    assert not any(name.startswith("class_embed") for name in model.state_dict())
    with pytest.raises(ValueError, match="num_classes=0"):
        model(z, torch.zeros(1), torch.ones(1), None, labels=torch.tensor([0]))


def random_class_model(kind: str) -> nn.Module:
    """A tiny float64 network with 10 classes and every weight random, so no zero layer hides a path."""
    torch.manual_seed(0)
    if kind == "dit":
        model = DiT(channels=1, patch=4, dim=16, depth=1, heads=2, num_classes=10)
    else:
        model = UNet(channels=1, width=8, multipliers=(1, 2, 2), heads=2, num_classes=10)
    model = model.double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_class_inputs_get_no_tangent(kind):
    model = random_class_model(kind)
    generator = torch.Generator().manual_seed(3)
    z, v = (torch.randn((3, 1, 8, 8), generator=generator, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([0.9, 0.6, 0.4], dtype=torch.float64)
    r = torch.tensor([0.1, 0.3, 0.0], dtype=torch.float64)
    labels = torch.tensor([0, 7, NULL])
    guidance = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)

    dudt = time_derivative(model, z, r, t, v, None, labels, guidance)

    step = 1e-7
    ahead = model(z + step * v, r, t + step, None, labels=labels, guidance=guidance)
    behind = model(z - step * v, r, t - step, None, labels=labels, guidance=guidance)
    finite_difference = (ahead - behind) / (2 * step)
    _, with_guidance_tangent = jvp(
        lambda zz, rr, tt, gg: model(zz, rr, tt, None, labels=labels, guidance=gg),
        (z, r, t, guidance),
        (v, torch.zeros_like(r), torch.ones_like(t), torch.ones_like(guidance)),
    )
    other_labels = time_derivative(model, z, r, t, v, None, torch.tensor([1, 2, 3]), guidance)
    assert dudt.abs().max() > 1e-3
    torch.testing.assert_close(dudt, finite_difference, rtol=1e-5, atol=1e-6)
    assert (dudt - with_guidance_tangent).abs().max() > 1e-3
    assert (dudt - other_labels).abs().max() > 1e-3  # the labels are an input


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def test_generate_task_config_defaults():
    config = build_config(None, {"task": "generate"})

    assert config.model.num_classes == 10
    assert config.objective.source == "noise"
    assert build_config(None, {}).model.num_classes == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"objective": {"kind": "imf"}}, "meanflow or flow_matching"),
        ({"objective": {"source": "bridge"}}, "starts from noise"),
        ({"data": {"source": "some/folder"}}, "data.source 'mnist'"),
    ],
)
def test_generate_task_rejects_misfits(overrides, message):
    with pytest.raises(UsageError, match=message):
        build_config(None, {"task": "generate", **overrides})


# ----------------------------------------------------------------------------------------------
# Train and sample by the CLI
# ----------------------------------------------------------------------------------------------


def test_train_generate_writes_checkpoint_and_grids(generator_run):
    checkpoint = load_checkpoint(generator_run / "checkpoints" / "final.safetensors")
    records = [json.loads(line) for line in (generator_run / "metrics.jsonl").read_text().splitlines()]

    assert checkpoint.config.task == "generate"
    assert checkpoint.meta["kind"] == "generator"
    assert checkpoint.tensors["model.class_embed.labels.weight"].shape == (11, 32)
    assert checkpoint.tensors["model.patch_embed.weight"].shape[1] == 16  # one channel, no image condition
    assert [record["step"] for record in records if "sample_accuracy" in record] == [3, 4]
    assert not any("val_psnr_db" in record for record in records)
    assert (generator_run / "samples" / "step-000004.png").is_file()


def test_sample_writes_ten_row_grid(generator_run, tmp_path):
    checkpoint = generator_run / "checkpoints" / "final.safetensors"
    out = tmp_path / "digits.png"

    result = run_cli(
        "sample", "--checkpoint", checkpoint, out, "--guidance", "2.0", "--per-class", "3", "--seed", "1",
        "--device", "cpu",
    )

    assert result.returncode == 0, result.output
    grid = read_image(out)
    # tile() puts a 2-pixel gap around 28 x 28 images: 10 rows of digits, 3 columns.
    assert grid.shape == (1, 10 * 30 + 2, 3 * 30 + 2)
    assert np.unique(grid).size > 2


def test_sample_repeats_with_seed_and_needs_overwrite(generator_run, tmp_path):
    checkpoint = generator_run / "checkpoints" / "final.safetensors"
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    options = ["--checkpoint", checkpoint, "--per-class", "2", "--seed", "4", "--device", "cpu"]

    assert run_cli("sample", first, *options).returncode == 0
    assert run_cli("sample", second, *options).returncode == 0
    again = run_cli("sample", first, *options)
    replaced = run_cli("sample", first, *options, "--overwrite")

    assert first.read_bytes() == second.read_bytes()
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "--overwrite" in again.stderr
    assert replaced.returncode == 0, replaced.output


def test_sample_rejects_restorer_checkpoint(tiny_checkpoint, tmp_path):
    result = run_cli("sample", "--checkpoint", tiny_checkpoint, tmp_path / "out.png", "--device", "cpu")

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(tiny_checkpoint) in lines[0]
    assert "--task generate" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_restore_rejects_generator_checkpoint(generator_run, digit_png, tmp_path):
    checkpoint = generator_run / "checkpoints" / "final.safetensors"

    result = run_cli("restore", digit_png, tmp_path / "out.png", "--checkpoint", checkpoint, "--device", "cpu")

    assert result.returncode == 2
    assert "restorecli sample" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
