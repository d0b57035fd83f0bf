"""A folder of the user's own images as a training source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorecli.data.images import list_images, read_image, to_channels
from restorecli.errors import RestoreCliError


class ImageFolder:
    """All PNG/JPEG images of a folder, held in memory; `sample` cuts random square crops."""

    def __init__(self, folder: Path, channels: int, image_size: int) -> None:
        self.paths = list_images(folder)
        self.image_size = image_size
        self.images = [to_channels(read_image(path), channels) for path in self.paths]

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return one random `image_size` crop per index, (N, C, S, S); small images are padded."""
        size = self.image_size
        crops = []
        for index in indices:
            image = self.images[int(index)]
            _, height, width = image.shape
            pad_h, pad_w = max(0, size - height), max(0, size - width)
            if pad_h or pad_w:
                image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
                _, height, width = image.shape
            row = int(rng.integers(0, height - size + 1))
            col = int(rng.integers(0, width - size + 1))
            crops.append(image[:, row : row + size, col : col + size])
        return np.stack(crops).astype(np.float32)


def split_folder(folder: ImageFolder, validation_share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split image indices into training and validation sets by a fixed stride (every 10th image)."""
    count = len(folder)
    if count < 2:
        raise RestoreCliError(f"image folder {folder.paths[0].parent} has {count} image; training needs at least 2")
    stride = max(2, round(1 / validation_share))
    indices = np.arange(count)
    return indices[indices % stride != 1 % stride], indices[indices % stride == 1 % stride]
