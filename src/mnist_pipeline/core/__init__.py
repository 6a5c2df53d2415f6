"""System helpers every layer may use, and nothing above them: errors, settings checks, all-or-nothing
outputs, signals, processes, file formats, the console, the workspace and the Hydra app wrapper.

TensorFlow prints its C++ start-up banners when it is imported. Every stage imports this package before
anything that imports TensorFlow, so the banner filter starts here for `python -m mnist_pipeline.<app>`
(console.py; MNIST_PIPELINE_TF_LOGS=1 keeps them). Importing the package from other programs (tests,
notebooks) leaves their stderr alone.
"""

from mnist_pipeline.core import console as _console
from mnist_pipeline.core import params as _params

_params.register_resolver()

if _console.started_as_app():
    _console.quiet()
