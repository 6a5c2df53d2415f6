"""Loading Keras models safely: always in Keras' safe mode, so a model file that carries Python code (a
Lambda layer, an unknown custom class) is refused instead of run; every failure is one line.

Only the `.keras` format is loaded: legacy `.h5` files ignore safe mode.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mnist_pipeline.core.errors import PipelineError


class ModelFileError(PipelineError):
    """A model that was refused (unsafe) or could not be read; the message says which and why."""


def refusal(exc: BaseException, where: str) -> ModelFileError:
    """The one-line error for a failed Keras load of `where`."""
    text = " ".join(str(exc).split())
    if "Lambda" in text or "safe_mode" in text or "unsafe" in text:
        reason = ("refused: it holds Python code (a Lambda layer or a function), which Keras' safe mode does "
                  "not run; load only models you trust, and never with safe_mode=False")
    elif "could not be deserialized" in text or "Could not locate" in text or "Unknown layer" in text:
        reason = ("refused: it needs a class this project does not define (a custom layer or function), which "
                  "safe mode does not import")
    elif isinstance(exc, (zipfile.BadZipFile, OSError, EOFError)) or "File not found" in text or "zip" in text:
        reason = "cannot read it: not a complete .keras file (truncated or corrupt?)"
    else:
        reason = f"cannot load it: {text[:200]}"
    return ModelFileError(f"{where}: {reason}")


def load_keras(path: Path):
    """A `.keras` model file, loaded in safe mode and without its training configuration (only predicted with)."""
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: refused: only .keras model files are loaded ({path.suffix or 'no suffix'} "
                             "files, e.g. legacy .h5, ignore Keras' safe mode)")
    if not path.is_file():
        raise ModelFileError(f"{path}: not found")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise refusal(exc, str(path)) from None
