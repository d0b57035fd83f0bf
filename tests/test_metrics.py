"""PSNR and SSIM against hand computations and scikit-image on real test digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from restorecli.corruptions import KINDS, protocol_corrupt
from restorecli.data import mnist
from restorecli.metrics import psnr, region_psnr, ssim


def skimage_ssim(clean: np.ndarray, restored: np.ndarray) -> float:
    """Return scikit-image's SSIM of one (C, H, W) pair with the protocol's settings, in float64."""
    return structural_similarity(
        clean.astype(np.float64),
        restored.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first six test digits and their test rows."""
    split = mnist.load_test_split()
    return split.images[:6], split.rows[:6]


@pytest.mark.parametrize("kind", KINDS)
def test_ssim_matches_skimage_on_digits(digits, kind):
    images, rows = digits
    corrupted = np.stack([protocol_corrupt(image, kind, int(row))[0] for image, row in zip(images, rows)])

    values = ssim(images, corrupted)

    expected = [skimage_ssim(clean, y) for clean, y in zip(images, corrupted)]
    assert values.shape == (len(images),)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_ssim_matches_skimage_on_random_rgb():
    rng = np.random.default_rng(7)
    clean = rng.random((4, 3, 20, 25))
    restored = np.clip(clean + 0.2 * rng.standard_normal(clean.shape), 0.0, 1.0)

    values = ssim(clean, restored)

    expected = [skimage_ssim(a, b) for a, b in zip(clean, restored)]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_ssim_of_identical_images_is_one(digits):
    images, _ = digits

    np.testing.assert_allclose(ssim(images, images), 1.0, rtol=0, atol=1e-12)


def test_ssim_rejects_small_images():
    image = np.zeros((1, 1, 10, 28))

    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(image, image)


def test_psnr_matches_hand_computation():
    clean = np.zeros((1, 1, 4, 4), dtype=np.float32)
    restored = clean.copy()
    restored[0, 0, 1, 2] = 0.5

    # MSE = 0.25 / 16, so PSNR = 10 log10(1 / MSE) = 10 log10(64).
    expected = 10.0 * math.log10(64.0)
    np.testing.assert_allclose(psnr(clean, restored), [expected], rtol=1e-12)


def test_psnr_is_per_image():
    clean = np.zeros((2, 1, 2, 2))
    restored = np.stack([np.full((1, 2, 2), 0.1), np.full((1, 2, 2), 0.01)])

    np.testing.assert_allclose(psnr(clean, restored), [20.0, 40.0], rtol=1e-12)


def test_psnr_of_identical_images_is_100(digits):
    images, _ = digits

    np.testing.assert_array_equal(psnr(images, images), 100.0)


def test_psnr_clips_to_unit_range():
    clean = np.ones((1, 1, 2, 2))
    restored = np.full((1, 1, 2, 2), 1.7)

    assert psnr(clean, restored)[0] == 100.0


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 5)))


def test_psnr_rejects_single_image():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        psnr(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


# ----------------------------------------------------------------------------------------------
# region PSNR (inside and outside a block mask)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_images(digits) -> np.ndarray:
    return digits[0]


def test_region_psnr_matches_skimage_on_masked_pixels(digit_images):
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(3)
    restored = np.clip(digit_images + 0.1 * rng.standard_normal(digit_images.shape), 0, 1).astype(np.float32)
    masks = np.zeros((len(digit_images), 28, 28), dtype=bool)
    masks[:, 5:17, 8:20] = True

    inside = region_psnr(digit_images, restored, masks)
    outside = region_psnr(digit_images, restored, ~masks)

    for i in range(len(digit_images)):
        clean64, restored64 = digit_images[i, 0].astype(np.float64), restored[i, 0].astype(np.float64)
        assert inside[i] == pytest.approx(peak_signal_noise_ratio(clean64[masks[i]], restored64[masks[i]], data_range=1.0))
        assert outside[i] == pytest.approx(peak_signal_noise_ratio(clean64[~masks[i]], restored64[~masks[i]], data_range=1.0))


def test_region_psnr_sees_grey_fill_inside_mask():
    clean = np.zeros((1, 1, 28, 28), dtype=np.float32)
    masks = np.zeros((1, 28, 28), dtype=bool)
    masks[0, 10:20, 10:20] = True
    grey_fill = clean.copy()
    grey_fill[0, 0, 10:20, 10:20] = 0.5

    # MSE 0.25 inside the square, 0 outside.
    assert region_psnr(clean, grey_fill, masks)[0] == pytest.approx(-10 * np.log10(0.25))
    assert region_psnr(clean, grey_fill, ~masks)[0] == 100.0


def test_region_psnr_of_empty_mask_is_nan(digit_images):
    masks = np.zeros((len(digit_images), 28, 28), dtype=bool)
    assert np.isnan(region_psnr(digit_images, digit_images, masks)).all()


def test_region_psnr_rejects_mask_shape(digit_images):
    with pytest.raises(ValueError, match="mask shape"):
        region_psnr(digit_images, digit_images, np.ones((len(digit_images), 14, 14), dtype=bool))
