"""The restorer that ships in the package: it loads by default and restores real test digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from restorecli.corruptions import KINDS, protocol_corrupt
from restorecli.data import mnist
from restorecli.data.images import write_png
from restorecli.metrics import psnr
from restorecli.restoration import Restorer, shipped_weights

from conftest import run_cli


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer.load(device="cpu")


def test_default_checkpoint_is_shipped(restorer):
    assert restorer.checkpoint_path == shipped_weights()
    assert restorer.checkpoint.config.objective.kind == "imf"
    assert restorer.checkpoint.config.model.preset == "DiT-S/4"
    assert restorer.checkpoint.config.model.conv_stem_channels == 64
    assert restorer.checkpoint.config.model.saturation_masks
    assert restorer.checkpoint.config.model.output_gate
    assert restorer.velocity == "instantaneous"


@pytest.mark.parametrize("kind", KINDS)
def test_restores_test_digits_of_each_kind(restorer, kind):
    split = mnist.load_test_split()
    picks = np.arange(0, 500, 25)  # 20 digits, two of each class
    clean = split.images[picks]
    corrupted = np.stack([protocol_corrupt(image, kind, int(row))[0] for image, row in zip(clean, split.rows[picks])])

    restored = restorer.restore_batch(corrupted, steps=1)

    gain = psnr(clean, restored).mean() - psnr(clean, corrupted).mean()
    assert gain > 3.0


def test_restore_command_uses_shipped_weights(tmp_path):
    split = mnist.load_test_split()
    corrupted, _ = protocol_corrupt(split.images[100], "mixed", int(split.rows[100]))
    source = tmp_path / "in.png"
    write_png(source, corrupted)

    result = run_cli("restore", source, tmp_path / "out.png")

    assert result.returncode == 0, result.output
    assert "(1 network evaluation, v head)" in result.stdout
    restored = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.float32)[None, None] / 255.0
    assert psnr(split.images[100][None], restored)[0] > psnr(split.images[100][None], corrupted[None])[0] + 3.0
