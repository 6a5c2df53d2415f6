"""The `prepare` stage: read a dataset (MNIST's IDX files, fetched and verified; a folder of pictures per
class; or CSV files), split off validation (and a test split when the data has none), scale, write data/prepared/.

    python -m mnist_pipeline.prepare [data=fashion_mnist] [data.val_fraction=0.2] [data.limit=2000]

The dataset is a config group (conf/data/<name>.yaml: its format and files, image size and channels, class
names, how its pictures and `predict`'s are preprocessed); everything downstream reads those from dataset.json.
A user's own data lies in datasets/<name>/ (datasets/README.md).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig

from mnist_pipeline.core import plots, validate
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.data import formats
from mnist_pipeline.data.dataset import ON_BAD, RawDataset, log_skips
from mnist_pipeline.data.pictures import METHODS
from mnist_pipeline.data.prepared import class_counts, scale, write_prepared
from mnist_pipeline.data.split import stratified_split

log = logging.getLogger(__name__)


def check_settings(cfg: DictConfig) -> None:
    validate.number(cfg, "data.val_fraction", above=0.0, below=1.0)
    validate.integer(cfg, "data.split_seed", minimum=0)
    validate.integer(cfg, "data.limit", minimum=0)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", str(cfg.data.get("name"))):
        raise ConfigError(
            f"data.name must be a short lower-case name (a-z, 0-9, _ and -: it names folders and "
            f"the registered model), got {cfg.data.get('name')!r}"
        )
    fmt = validate.choice(cfg, "data.format", formats.FORMATS)
    classes = cfg.data.get("classes")
    if (classes is not None or fmt == "idx") and not (
        isinstance(classes, ListConfig) and 2 <= len(classes) <= 256 and len(set(map(str, classes))) == len(classes)
    ):
        raise ConfigError(f"data.classes must list 2 to 256 distinct class names, got {classes!r}")
    size = cfg.data.get("image_size")
    if not (isinstance(size, ListConfig) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
        raise ConfigError(f"data.image_size must be [rows, columns] (positive whole numbers), got {size!r}")
    channels = cfg.data.get("channels")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    validate.choice(cfg, "data.on_bad", ON_BAD)
    if cfg.data.preprocess.get("method") is None:  # conf/prepare.yaml: the format's own default
        cfg.data.preprocess.method = "digit" if fmt == "idx" else "pad"
    if validate.choice(cfg, "data.preprocess.method", METHODS) == "digit":
        validate.integer(cfg, "data.preprocess.box", minimum=1)
        validate.choice(cfg, "data.preprocess.centre", ("mass", "box"))
        if cfg.data.preprocess.box > min(size):
            raise ConfigError(f"data.preprocess.box ({cfg.data.preprocess.box}) must fit the image size {list(size)}")
        if channels != 1:
            raise ConfigError("data.preprocess.method: digit makes grayscale images (data.channels: 1); use pad")
    if fmt == "idx":
        validate.number(cfg, "data.download.timeout", above=0.0)
        validate.integer(cfg, "data.download.retries", minimum=1)
        validate.number(cfg, "data.download.backoff", at_least=0.0)
        if channels != 1:
            raise ConfigError(f"data.channels: IDX files hold grayscale images, so it must be 1, got {channels}")
    elif validate.text(cfg, "data.path") and formats.check_source(cfg.data):  # test split drawn from training
        validate.number(cfg, "data.test_fraction", above=0.0, below=1.0)


def split(labels: np.ndarray, fraction: float, seed: int, keys: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return stratified_split(labels, fraction, seed)
    except ValueError as exc:
        raise ConfigError(f"{keys}: {exc}") from exc


def pools(data: DictConfig, raw: RawDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y) of the training pool and of the test split: the data's own, or drawn from the training data
    (stratified, seeded by data.split_seed) when it has none."""
    if raw.x_test is not None and raw.y_test is not None:
        return raw.x_train, raw.y_train, raw.x_test, raw.y_test
    pool_idx, test_idx = split(raw.y_train, data.test_fraction, data.split_seed, "data.test_fraction / data.limit")
    return raw.x_train[pool_idx], raw.y_train[pool_idx], raw.x_train[test_idx], raw.y_train[test_idx]


def prepare(cfg: DictConfig) -> dict:
    check_settings(cfg)
    data = cfg.data
    raw = formats.read(data)
    classes = raw.classes
    x_pool, y_pool, x_test, y_test = pools(data, raw)
    train_idx, val_idx = split(y_pool, data.val_fraction, data.split_seed, "data.val_fraction / data.limit")
    splits = {
        "train": (scale(x_pool[train_idx]), y_pool[train_idx]),
        "val": (scale(x_pool[val_idx]), y_pool[val_idx]),
        "test": (scale(x_test), y_test),
    }
    settings = {key: data[key] for key in ("val_fraction", "split_seed", "limit")}
    if data.format != "idx":  # IDX's dataset.json stays as it was, and so MNIST's prepared data's hash
        settings["on_bad"] = data.on_bad
        if raw.x_test is None:
            settings["test_fraction"] = data.test_fraction
    metadata = {
        "dataset": data.name,
        "classes": classes,
        "image_shape": [*data.image_size, data.channels],
        "preprocess": formats.preprocess(data).as_metadata(),  # for `predict`
        "dtype": "float32",
        "pixels": "x / 255",  # the only input convention; model.input_norm adds any other inside the model
        "settings": settings,
        "counts": {name: len(y) for name, (_, y) in splits.items()},
        "class_counts": {name: class_counts(y, len(classes)) for name, (_, y) in splits.items()},
        "files": raw.files,
    }
    if data.format != "idx":
        metadata.update({"skipped_count": len(raw.skipped), "skipped": raw.skipped})
        log_skips(raw.skipped)

    def sample_grid(directory: Path) -> None:
        x, y = splits["train"]
        plots.image_grid(x[:16], [classes[v] for v in y[:16]], directory / "samples.png")

    write_prepared(Path(data.prepared_dir), splits, metadata, extra=sample_grid)
    # The download cache's folder is a DVC output of this stage (dvc.yaml), also for datasets it downloads nothing for.
    Path(data.raw_dir).parent.mkdir(parents=True, exist_ok=True)
    counts = metadata["counts"]
    log.info(
        "prepare %s: %d train / %d val / %d test images%s -> %s",
        data.name,
        counts["train"],
        counts["val"],
        counts["test"],
        f" ({len(raw.skipped)} skipped as bad)" if raw.skipped else "",
        data.prepared_dir,
    )
    return metadata


main = hydra_stage("prepare")(prepare)

if __name__ == "__main__":
    main()
