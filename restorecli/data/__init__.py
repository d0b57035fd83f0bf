"""Training and evaluation data: the bundled MNIST subset, image folders and image files."""
