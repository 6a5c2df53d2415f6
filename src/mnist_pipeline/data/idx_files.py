"""The `idx` format: MNIST's four published files (Fashion-MNIST's too), fetched and verified (fetch), parsed
strictly (idx). Grayscale only; the dataset's YAML lists the files with the sha256 of their payloads."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from mnist_pipeline.data.dataset import RawDataset
from mnist_pipeline.data.fetch import FetchSettings, fetch_file
from mnist_pipeline.data.idx import check_pair, parse_images, parse_labels, read_payload

FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def source_list(data: DictConfig) -> list[str]:
    """The environment's mirror (if the dataset's variable is set) first, then the dataset's sources."""
    env_mirror = os.environ.get(data.mirror_env, "").strip() if data.get("mirror_env") else ""
    return ([env_mirror] if env_mirror else []) + list(data.sources)


def read(data: DictConfig, classes: list[str], limit: int | None) -> RawDataset:
    """The first `limit` images (None: all) of the training and of the test files."""
    settings = FetchSettings(
        timeout=data.download.timeout, retries=data.download.retries, backoff=data.download.backoff
    )
    sources = source_list(data)
    arrays, files_meta = {}, {}
    for key in FILE_KEYS:
        spec = data.files[key]
        fetched = fetch_file(spec.name, spec.sha256, Path(data.raw_dir), sources, settings)
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
    return RawDataset(
        arrays["train_images"][:limit, ..., None],
        arrays["train_labels"][:limit],
        arrays["test_images"][:limit, ..., None],
        arrays["test_labels"][:limit],
        classes,
        files_meta,
    )
