"""The `prepare` stage: fetch and verify a dataset's IDX files, scale them, split off validation, write
data/prepared/.

    python -m mnist_pipeline.prepare [data=fashion_mnist] [data.val_fraction=0.2] [data.limit=2000]

The dataset is a config group (conf/data/<name>.yaml: files and their hashes, sources, image size, class
names, how `predict` preprocesses pictures); everything downstream reads those from dataset.json.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from mnist_pipeline.core import plots, validate
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.data.fetch import FetchSettings, fetch_file
from mnist_pipeline.data.idx import check_pair, parse_images, parse_labels, read_payload
from mnist_pipeline.data.prepared import class_counts, scale, write_prepared
from mnist_pipeline.data.split import stratified_split

log = logging.getLogger(__name__)

FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def check_settings(cfg: DictConfig) -> None:
    validate.number(cfg, "data.val_fraction", above=0.0, below=1.0)
    validate.integer(cfg, "data.split_seed", minimum=0)
    validate.integer(cfg, "data.limit", minimum=0)
    validate.number(cfg, "data.download.timeout", above=0.0)
    validate.integer(cfg, "data.download.retries", minimum=1)
    validate.number(cfg, "data.download.backoff", at_least=0.0)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", str(cfg.data.get("name"))):
        raise ConfigError(
            f"data.name must be a short lower-case name (a-z, 0-9, _ and -: it names folders and "
            f"the registered model), got {cfg.data.get('name')!r}"
        )
    classes = list(cfg.data.classes) if isinstance(cfg.data.get("classes"), ListConfig) else None
    if not classes or len(classes) < 2 or len(set(map(str, classes))) != len(classes) or len(classes) > 256:
        raise ConfigError(f"data.classes must list 2 to 256 distinct class names, got {cfg.data.get('classes')!r}")
    size = cfg.data.get("image_size")
    if not (isinstance(size, ListConfig) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
        raise ConfigError(f"data.image_size must be [rows, columns] (positive whole numbers), got {size!r}")
    validate.integer(cfg, "data.preprocess.box", minimum=1)
    validate.choice(cfg, "data.preprocess.centre", ("mass", "box"))
    if cfg.data.preprocess.box > min(size):
        raise ConfigError(f"data.preprocess.box ({cfg.data.preprocess.box}) must fit the image size {list(size)}")


def source_list(data: DictConfig) -> list[str]:
    """The environment's mirror (if the dataset's variable is set) first, then the dataset's sources."""
    env_mirror = os.environ.get(data.mirror_env, "").strip() if data.get("mirror_env") else ""
    return ([env_mirror] if env_mirror else []) + list(data.sources)


def prepare(cfg: DictConfig) -> dict:
    check_settings(cfg)
    data = cfg.data
    raw_dir = Path(data.raw_dir)
    settings = FetchSettings(
        timeout=data.download.timeout, retries=data.download.retries, backoff=data.download.backoff
    )
    sources = source_list(data)
    classes = [str(c) for c in data.classes]

    arrays, files_meta = {}, {}
    for key in FILE_KEYS:
        spec = data.files[key]
        fetched = fetch_file(spec.name, spec.sha256, raw_dir, sources, settings)
        payload = read_payload(fetched.path)
        arrays[key] = (
            parse_images(payload, spec.name, tuple(data.image_size))
            if key.endswith("images")
            else parse_labels(payload, spec.name, len(classes))
        )
        files_meta[key] = {"file": spec.name, "payload_sha256": spec.sha256, "source": fetched.source}
    for part in ("train", "test"):
        check_pair(
            arrays[f"{part}_images"],
            arrays[f"{part}_labels"],
            data.files[f"{part}_images"].name,
            data.files[f"{part}_labels"].name,
        )

    limit = data.limit or None  # 0: every image
    x_pool, y_pool = arrays["train_images"][:limit], arrays["train_labels"][:limit]
    x_test, y_test = arrays["test_images"][:limit], arrays["test_labels"][:limit]
    try:
        train_idx, val_idx = stratified_split(y_pool, data.val_fraction, data.split_seed)
    except ValueError as exc:
        raise ConfigError(f"data.val_fraction / data.limit: {exc}") from exc

    splits = {
        "train": (scale(x_pool[train_idx]), y_pool[train_idx]),
        "val": (scale(x_pool[val_idx]), y_pool[val_idx]),
        "test": (scale(x_test), y_test),
    }
    metadata = {
        "dataset": data.name,
        "classes": classes,
        "image_shape": [*data.image_size, 1],
        "preprocess": {"box": data.preprocess.box, "centre": data.preprocess.centre},  # for `predict`
        "dtype": "float32",
        "pixels": "x / 255",  # the only input convention; model.input_norm adds any other inside the model
        "settings": {key: data[key] for key in ("val_fraction", "split_seed", "limit")},
        "counts": {name: len(y) for name, (_, y) in splits.items()},
        "class_counts": {name: class_counts(y, len(classes)) for name, (_, y) in splits.items()},
        "files": files_meta,
    }

    def sample_grid(directory: Path) -> None:
        x, y = splits["train"]
        plots.image_grid(x[:16], [classes[v] for v in y[:16]], directory / "samples.png")

    write_prepared(Path(data.prepared_dir), splits, metadata, extra=sample_grid)
    counts = metadata["counts"]
    log.info(
        "prepare %s: %d train / %d val / %d test images -> %s",
        data.name,
        counts["train"],
        counts["val"],
        counts["test"],
        data.prepared_dir,
    )
    return metadata


main = hydra_stage("prepare")(prepare)

if __name__ == "__main__":
    main()
