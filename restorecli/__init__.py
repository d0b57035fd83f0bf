"""restorecli: one-step image restoration with MeanFlow diffusion transformers."""

__version__ = "0.1.0"
