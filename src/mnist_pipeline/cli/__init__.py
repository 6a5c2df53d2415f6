"""The `mnist-pipeline` console script (`mnist_pipeline.cli:main`)."""

from mnist_pipeline.cli.main import main

__all__ = ["main"]
