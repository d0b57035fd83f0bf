"""Per-image PSNR and SSIM of restored images against clean ones, as protocol v1 defines them.

Both functions take batches (N, C, H, W) of float images with data range 1.0, clip them to [0, 1],
compute in float64 and return one value per image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# An exact restoration has infinite PSNR, so it counts as this value to keep means finite.
EXACT_PSNR_DB = 100.0

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# skimage.metrics.structural_similarity with gaussian_weights=True truncates the Gaussian at 3.5
# sigma, which gives an 11x11 window for sigma 1.5, and averages the SSIM map without a border of
# (win_size - 1) // 2 pixels on each side. Every window of the kept pixels lies inside the image,
# so the padding mode of the filter does not change the result.
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
SSIM_WINDOW = 2 * SSIM_RADIUS + 1


def _as_clipped_batches(clean: np.ndarray, restored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clean = np.asarray(clean)
    restored = np.asarray(restored)
    if clean.ndim != 4:
        raise ValueError(
            f"invalid image batch shape {clean.shape}: expected (N, C, H, W), so add a batch axis for one image"
        )
    if clean.shape != restored.shape:
        raise ValueError(
            f"clean and restored shapes differ: {clean.shape} and {restored.shape}; pass matching batches"
        )

    clean = np.clip(clean.astype(np.float64), 0.0, 1.0)
    restored = np.clip(restored.astype(np.float64), 0.0, 1.0)
    return clean, restored


def psnr(clean: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Compute the PSNR in dB of each image (data range 1), counting an exact restoration as 100 dB."""
    clean, restored = _as_clipped_batches(clean, restored)

    mse = np.mean((clean - restored) ** 2, axis=(1, 2, 3))
    exact = mse == 0.0
    with np.errstate(divide="ignore"):
        values = -10.0 * np.log10(mse)
    return np.where(exact, EXACT_PSNR_DB, values)


def region_psnr(clean: np.ndarray, restored: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Compute the PSNR in dB of each image over the pixels where `masks` (N, H, W) is True.

    The mean squared error is taken over the masked pixels of every channel. An image whose region
    is restored exactly counts as 100 dB, and an image with an empty region gets NaN.
    """
    clean, restored = _as_clipped_batches(clean, restored)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (clean.shape[0], *clean.shape[2:]):
        raise ValueError(f"mask shape {masks.shape} does not match images {clean.shape}; pass one (H, W) mask per image")

    weights = np.broadcast_to(masks[:, None], clean.shape)  # (N, C, H, W)
    counts = weights.sum(axis=(1, 2, 3))  # (N,)
    squared = np.where(weights, (clean - restored) ** 2, 0.0).sum(axis=(1, 2, 3))  # (N,)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = squared / counts
        values = -10.0 * np.log10(mse)
    values = np.where(mse == 0.0, EXACT_PSNR_DB, values)
    return np.where(counts == 0, np.nan, values)


def ssim(clean: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Compute the SSIM of each image (Gaussian window, sigma 1.5), averaged over its channels.

    Equals skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0) on each channel of float64 inputs.
    """
    clean, restored = _as_clipped_batches(clean, restored)
    if min(clean.shape[2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {clean.shape[2:]}")

    # Sigma 0 on the batch and channel axes filters each channel of each image on its own.
    def smooth(values: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(
            values, sigma=(0, 0, SSIM_SIGMA, SSIM_SIGMA), mode="reflect", truncate=SSIM_TRUNCATE
        )

    mean_x = smooth(clean)
    mean_y = smooth(restored)
    var_x = smooth(clean * clean) - mean_x * mean_x
    var_y = smooth(restored * restored) - mean_y * mean_y
    cov_xy = smooth(clean * restored) - mean_x * mean_y

    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    ssim_map = numerator / denominator

    r = SSIM_RADIUS
    interior = ssim_map[:, :, r:-r, r:-r]
    return interior.mean(axis=(2, 3)).mean(axis=1)
