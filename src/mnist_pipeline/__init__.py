"""mnist-pipeline: a reproducible, tracked experiment pipeline for MNIST digit classification."""

__version__ = "0.1.0"
