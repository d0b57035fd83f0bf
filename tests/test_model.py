"""The DiT: shapes, padding to the patch size, presets, adaLN-Zero start, the convolution head."""

from __future__ import annotations

import pytest
import torch

from restorecli.errors import UsageError
from restorecli.models import PRESETS, build_model, count_parameters
from restorecli.models.dit import DiT, saturation_masks


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


def test_conv_head_starts_as_plain_dit():
    torch.manual_seed(0)
    plain = DiT(channels=1, patch=4, dim=32, depth=1, heads=2)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.normal_(0, 0.05)
    headed = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_head_channels=8)
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    z = torch.rand((2, 1, 30, 45))  # padded to 32 x 48 inside, cropped back

    expected = plain(z, torch.zeros(2), torch.ones(2))
    actual = headed(z, torch.zeros(2), torch.ones(2))

    assert unexpected == []
    assert missing and all(name.startswith("head.") for name in missing)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_trained_conv_head_changes_output():
    torch.manual_seed(0)
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_head_channels=8)
    z = torch.rand((2, 1, 28, 28))
    before = model(z, torch.zeros(2), torch.ones(2))
    with torch.no_grad():
        model.head.conv_out.weight.normal_(0, 0.05)

    after = model(z, torch.zeros(2), torch.ones(2))

    assert torch.count_nonzero(before) == 0
    assert after.shape == (2, 1, 28, 28)
    assert (after - before).abs().max() > 1e-3


def test_conv_head_adds_few_parameters():
    plain = count_parameters(build_model("DiT-S/4", channels=1, cond_channels=0, out_channels=2))
    headed = count_parameters(build_model("DiT-S/4", channels=1, cond_channels=0, out_channels=2, conv_head_channels=32))

    # conv in (3 -> 32), adaLN (128 -> 64), conv out (32 -> 2), each with biases
    assert headed - plain == (3 * 32 * 9 + 32) + (128 * 64 + 64) + (32 * 2 * 9 + 2)


def test_conv_head_rejected_for_unet():
    with pytest.raises(UsageError, match="conv_head_channels 16 is for DiT presets"):
        build_model("UNet-T", channels=1, cond_channels=0, conv_head_channels=16)


def test_conv_stem_features_reach_the_output():
    torch.manual_seed(0)
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_stem_channels=8)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    z = torch.rand((2, 1, 30, 45))  # padded to 32 x 48 inside, cropped back
    before = model(z, torch.zeros(2), torch.ones(2))
    with torch.no_grad():
        model.stem.conv_out.weight.mul_(2.0)

    after = model(z, torch.zeros(2), torch.ones(2))

    assert after.shape == (2, 1, 30, 45)
    assert (after - before).abs().max() > 1e-4


def test_conv_stem_widens_only_the_patch_embedding():
    plain = count_parameters(build_model("DiT-S/4", channels=1, cond_channels=0, out_channels=2))
    stemmed = count_parameters(build_model("DiT-S/4", channels=1, cond_channels=0, out_channels=2, conv_stem_channels=16))

    # conv in (1 -> 16), conv out (16 -> 16), each with biases; 16 more features per pixel of a 4 x 4 patch
    assert stemmed - plain == (1 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + 16 * 4 * 4 * 128


def test_conv_stem_keeps_condition_channels_last():
    model = DiT(channels=1, cond_channels=1, patch=4, dim=32, depth=1, heads=2, conv_stem_channels=8)
    plain_input = torch.randn(32, 1 * 16 + 8 * 16)  # (D, p*p*(C + S)) of a model without condition channels

    widened = model.widen_input_weight(plain_input)

    assert widened.shape == model.patch_embed.weight.shape
    grouped = widened.reshape(32, 16, 10)  # (D, p*p, C + S + C_cond)
    assert torch.count_nonzero(grouped[..., -1]) == 0
    torch.testing.assert_close(grouped[..., :-1], plain_input.reshape(32, 16, 9))


def test_saturation_masks_mark_black_and_white_pixels():
    z = torch.tensor([[[[-1.0, -0.999999, 0.0], [0.999999, 1.0, -1.0]]]])  # (1, 1, 2, 3), network units

    masks = saturation_masks(z)

    assert masks.shape == (1, 2, 2, 3)
    assert masks[0, 0].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert masks[0, 1].tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_saturation_masks_detect_exact_white():
    torch.manual_seed(0)
    masked = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_stem_channels=8, conv_head_channels=8, saturation_masks=True)
    plain = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_stem_channels=8, conv_head_channels=8)
    for model in (masked, plain):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0, 0.05)
    z = torch.full((1, 1, 8, 8), 0.2)
    nearly, exactly = z.clone(), z.clone()
    nearly[..., 3, 3], exactly[..., 3, 3] = 1.0 - 1e-6, 1.0

    def jump(model):
        return (model(exactly, torch.zeros(1), torch.ones(1)) - model(nearly, torch.zeros(1), torch.ones(1))).abs().max()

    # Without masks the network is smooth in z, so a step of 1e-6 moves it by about as little.
    assert jump(plain) < 1e-4
    assert jump(masked) > 1e-3


def test_saturation_masks_need_a_stem_or_head():
    with pytest.raises(UsageError, match="saturation_masks feeds the convolution stem and head"):
        build_model("DiT-S/4", channels=1, cond_channels=0, saturation_masks=True)


def test_output_gate_closes_to_zero():
    torch.manual_seed(0)
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_head_channels=8, output_gate=True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    z = torch.rand((2, 1, 8, 8)) * 2 - 1
    r, t = torch.zeros(2), torch.ones(2)
    open_gate = model(z, r, t)
    with torch.no_grad():
        model.head.conv_out.bias[1:] -= 60.0  # the gate logit: sigmoid(about -60) is about 1e-26

    closed_gate = model(z, r, t)

    assert open_gate.abs().max() > 1e-3
    assert closed_gate.abs().max() < 1e-20


def test_output_gate_starts_almost_open():
    model = DiT(channels=1, patch=4, dim=32, depth=1, heads=2, conv_head_channels=8, output_gate=True)

    torch.testing.assert_close(model.head.conv_out.bias[1:], torch.tensor([3.0]))
    assert torch.count_nonzero(model.head.conv_out.bias[:1]) == 0


def test_output_gate_needs_a_head():
    with pytest.raises(UsageError, match="output_gate needs the convolution head"):
        build_model("DiT-S/4", channels=1, cond_channels=0, conv_stem_channels=8, output_gate=True)


def test_conv_stem_rejected_for_unet():
    with pytest.raises(UsageError, match="conv_stem_channels 16 is for DiT presets"):
        build_model("UNet-T", channels=1, cond_channels=0, conv_stem_channels=16)
