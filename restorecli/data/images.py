"""Image file I/O: read PNG/JPEG into (C, H, W) float arrays, write PNGs atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from restorecli.atomic import write_atomically
from restorecli.errors import RestoreCliError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as float32 (C, H, W) in [0, 1] with C = 1 (grey) or 3 (RGB).

    An alpha channel is composited onto white, the page colour most transparent drawings assume.
    """
    path = Path(path)
    if not path.exists():
        raise RestoreCliError(f"input image {path} not found; check the path")
    if path.is_dir():
        raise RestoreCliError(f"input image {path} is a folder; pass an image file")
    if path.stat().st_size == 0:
        raise RestoreCliError(f"input image {path} is empty (0 bytes); pass a PNG or JPEG file")

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit PNGs open as integer images; scale their 0..65535 range to [0, 1].
                array = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
                return array[None]  # (1, H, W)
            if image.mode == "F":
                return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[None]  # (1, H, W)
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba).convert("RGB")
            elif image.mode not in ("L", "RGB"):
                image = image.convert("RGB" if image.mode in ("P", "CMYK", "YCbCr") else "L")
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise RestoreCliError(
            f"input image {path} could not be read as an image ({error}); pass a valid PNG or JPEG file"
        ) from error

    if array.ndim == 2:
        return array[None]  # (1, H, W)
    return np.ascontiguousarray(array.transpose(2, 0, 1))  # (3, H, W)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert (C, H, W) to `channels` channels: RGB to grey by ITU-R 601 luma, grey to RGB by copy."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
        return (image * weights).sum(axis=0, keepdims=True)
    return np.repeat(image, channels, axis=0)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write (C, H, W) in [0, 1] as an 8-bit PNG: to a temporary file, then rename over `path`."""
    path = Path(path)
    array = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    mode_array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    write_atomically(path, lambda temporary: Image.fromarray(mode_array).save(temporary, format="PNG"))


def list_images(folder: Path) -> list[Path]:
    """Return the PNG and JPEG files in `folder` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RestoreCliError(f"image folder {folder} not found; pass a folder of PNG or JPEG files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise RestoreCliError(f"image folder {folder} has no .png, .jpg or .jpeg files")
    return files


def folder_pairs(source: Path, target: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """Map each image of folder `source` to `target/<stem>.png`, checking outputs before any write."""
    source, target = Path(source), Path(target)
    if target.exists() and not target.is_dir():
        raise UsageError(f"output {target} is a file, but the input {source} is a folder; pass an output folder")
    if target.exists() and source.resolve() == target.resolve():
        raise UsageError(f"output folder {target} is the input folder; choose another output folder")
    pairs = [(path, target / f"{path.stem}.png") for path in list_images(source)]
    existing = [out for _, out in pairs if out.exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{len(existing)} output file(s) already exist in {target}, e.g. {existing[0].name}; "
            "pass --overwrite to replace them"
        )
    return pairs
