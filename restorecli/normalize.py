"""The mapping between image space [0, 1] (files, corruptions, metrics) and network space [-1, 1]."""

import torch


def to_network(images: torch.Tensor) -> torch.Tensor:
    return images * 2.0 - 1.0


def to_image(values: torch.Tensor) -> torch.Tensor:
    return ((values + 1.0) * 0.5).clamp(0.0, 1.0)
