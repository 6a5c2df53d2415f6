"""Why a Keras model file was refused, in one line: the errors of loading models (core/model_files.py for
.keras files, tracking/logged_models.py for logged ones), kept apart so that tracking needs no Keras."""

from __future__ import annotations

import zipfile

from mnist_pipeline.core.errors import PipelineError


class ModelFileError(PipelineError):
    """A model that was refused (unsafe) or could not be read; the message says which and why."""


def refusal(exc: BaseException, where: str) -> ModelFileError:
    """The one-line error for a failed Keras load of `where`."""
    text = " ".join(str(exc).split())
    if "Lambda" in text or "safe_mode" in text or "unsafe" in text:
        reason = (
            "refused: it holds Python code (a Lambda layer or a function), which Keras' safe mode does "
            "not run; load only models you trust, and never with safe_mode=False"
        )
    elif "could not be deserialized" in text or "Could not locate" in text or "Unknown layer" in text:
        reason = (
            "refused: it needs a class this project does not define (a custom layer or function), which "
            "safe mode does not import"
        )
    elif isinstance(exc, (zipfile.BadZipFile, OSError, EOFError)) or "File not found" in text or "zip" in text:
        reason = "cannot read it: not a complete .keras file (truncated or corrupt?)"
    else:
        reason = f"cannot load it: {text[:200]}"
    return ModelFileError(f"{where}: {reason}")
