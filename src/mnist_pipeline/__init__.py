"""mnist-pipeline: a reproducible, tracked experiment pipeline for MNIST digit classification."""

from mnist_pipeline import console as _console

__version__ = "0.1.0"

# TensorFlow prints its C++ start-up banners when it is imported, and stage modules import it (through
# augment, keras) before stage.py, so the banner filter starts here, the first code of every
# `python -m mnist_pipeline.<app>` (console.py; MNIST_PIPELINE_TF_LOGS=1 keeps them). Importing the package
# from other programs (tests, notebooks) leaves their stderr alone.
if _console.started_as_app():
    _console.quiet()
