"""Loading Keras models safely: always in Keras' safe mode, so a model file that carries Python code (a
Lambda layer, an unknown custom class) is refused instead of run; every failure is one line.

Only the `.keras` format is loaded: legacy `.h5` files ignore safe mode.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mnist_pipeline.core.model_errors import ModelFileError, refusal


def load_keras(path: Path):
    """A `.keras` model file, loaded in safe mode and without its training configuration (only predicted with)."""
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path}: refused: only .keras model files are loaded ({path.suffix or 'no suffix'} "
            "files, e.g. legacy .h5, ignore Keras' safe mode)"
        )
    if not path.is_file():
        raise ModelFileError(f"{path}: not found")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise refusal(exc, str(path)) from None
