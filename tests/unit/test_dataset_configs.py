"""The dataset config group (conf/data/): every dataset composes and is checked; what a dataset declares
(image size, classes, preprocessing) is enforced; models follow the prepared data's shape and classes."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline import prepare as prepare_stage
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.data.idx import IDXFormatError, parse_images, parse_labels
from mnist_pipeline.ml.fit import build_model
from mnist_pipeline.report import registered_name
from tests.helpers import REPO, compose, idx_bytes

DATASETS = sorted(p.stem for p in (REPO / "conf/data").glob("*.yaml"))


def prepare_config(*overrides: str):
    return compose("prepare", *overrides)


def test_the_shipped_datasets():
    assert DATASETS == ["fashion_mnist", "mnist"]
    assert prepare_config().data.name == "mnist"  # the default


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_composes_passes_the_checks_and_has_its_own_raw_cache(name):
    cfg = prepare_config(f"data={name}")
    prepare_stage.check_settings(cfg)
    assert cfg.data.name == name and cfg.data.raw_dir == f"data/raw/{name}"
    assert cfg.data.mirror_env == f"{name.upper()}_MIRROR"
    assert len(cfg.data.classes) == 10 and list(cfg.data.image_size) == [28, 28]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.classes=[only]", "data.classes must list 2 to 256 distinct class names"),
        ("data.classes=[a,b,a]", "data.classes must list 2 to 256 distinct class names"),
        ("data.image_size=[28]", "data.image_size must be [rows, columns]"),
        ("data.image_size=[28,0]", "data.image_size must be [rows, columns]"),
        ("data.preprocess.box=30", "data.preprocess.box (30) must fit the image size [28, 28]"),
        ("data.preprocess.centre=middle", "data.preprocess.centre: must be one of mass, box"),
        ("data.name=My/Data", "data.name must be a short lower-case name"),
    ],
)
def test_a_wrong_dataset_setting_is_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        prepare_stage.check_settings(prepare_config(override))


def test_images_of_another_size_than_the_config_says_are_refused():
    images = idx_bytes(np.zeros((3, 16, 16), np.uint8))
    assert parse_images(images, "imgs", (16, 16)).shape == (3, 16, 16)
    with pytest.raises(IDXFormatError, match=r"imgs: images are 16x16, the dataset's config says 28x28"):
        parse_images(images, "imgs", (28, 28))


def test_labels_beyond_the_configured_classes_are_refused():
    labels = idx_bytes(np.array([0, 4, 5], np.uint8))
    with pytest.raises(IDXFormatError, match=r"lbls: label 5 at index 2 is not a class 0..4 .*data.classes lists 5"):
        parse_labels(labels, "lbls", 5)
    assert parse_labels(labels, "lbls", 6).tolist() == [0, 4, 5]


def test_models_take_the_image_shape_and_class_count_they_are_given():
    cfg = compose("train", "model=mlp_32x32")
    model = build_model(cfg.model, (16, 16, 1), 5)
    assert model.input_shape == (None, 16, 16, 1) and model.output_shape == (None, 5)
    assert model.count_params() == 16 * 16 * 32 + 32 + 32 * 32 + 32 + 32 * 5 + 5


def test_a_model_too_deep_for_the_images_is_a_config_error():
    cfg = compose("train", "model=shallow_cnn")
    with pytest.raises(
        ConfigError,
        match=r"model shallow_cnn cannot take 16x16 images \(its convolutions and pools "
        r"shrink the image below one pixel\): choose another model",
    ):
        build_model(cfg.model, (16, 16, 1), 5)


def test_the_registered_model_is_named_per_dataset():
    assert registered_name("{dataset}-classifier", "fashion_mnist") == "fashion_mnist-classifier"
    assert registered_name("digits", "mnist") == "digits"
    with pytest.raises(ConfigError, match=r"registry.model_name: '\{data\}-x' may only use the placeholder"):
        registered_name("{data}-x", "mnist")
