"""The dataset formats (conf/data/<name>.yaml `format`) behind one call, `read`: idx (idx_files.py), folder
(folder.py), csv (table.py). Each returns a RawDataset: uint8 images, labels, classes, provenance, skips."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.data import folder, idx_files, table
from mnist_pipeline.data.dataset import RawDataset
from mnist_pipeline.data.pictures import Preprocess

FORMATS = ("idx", "folder", "csv")


def preprocess(data: DictConfig) -> Preprocess:
    """The dataset's Preprocess: how its pictures (and predict's) become its images."""
    settings = data.preprocess
    return Preprocess(
        (int(data.image_size[0]), int(data.image_size[1])),
        int(settings.get("box", Preprocess.box)),
        str(settings.get("centre", Preprocess.centre)),
        int(data.channels),
        str(settings.method),
    )


def classes(data: DictConfig) -> list[str] | None:
    return [str(c) for c in data.classes] if data.get("classes") is not None else None


def _missing(key: str, path: Path) -> ConfigError:
    return ConfigError(
        f"{key}: {path} does not exist: put your data there and track it with `dvc add {path}`, or get it with "
        f"`dvc pull` if it is tracked already (datasets/README.md)"
    )


def check_source(data: DictConfig) -> bool:
    """Check that a folder or CSV dataset's files exist (before any work); whether its test split is drawn
    from the training data (no test/ folder, no test_file)."""
    path = Path(data.path)
    if not path.is_dir():
        raise _missing("data.path", path)
    if data.format == "folder":
        return not (path / "test").is_dir()
    for key in ("train_file", "test_file"):
        file = data.get(key)
        if key == "train_file" and not file:
            raise ConfigError("data.train_file: required for a csv dataset, e.g. train_file: ${data.path}/train.csv")
        if file and not Path(file).is_file():
            raise _missing(f"data.{key}", Path(file))
    return not data.get("test_file")


def read(data: DictConfig) -> RawDataset:
    """The dataset `data` describes (checked by the prepare stage), the first data.limit inputs of its training
    and of its test pool (0: all)."""
    limit = data.limit or None
    if data.format == "idx":
        return idx_files.read(data, classes(data) or [], limit)
    if data.format == "folder":
        return folder.read(Path(data.path), preprocess(data), classes(data), limit, data.on_bad)
    return table.read(
        Path(data.path),
        Path(data.train_file),
        Path(data.test_file) if data.get("test_file") else None,
        str(data.get("label_column", "label")),
        preprocess(data),
        classes(data),
        limit,
        data.on_bad,
    )
