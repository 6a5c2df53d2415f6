"""trainer.epochs=auto: the budget from the training split's size (ml/budget.py), with conf/'s defaults."""

import math

import pytest

from mnist_pipeline.ml import budget
from tests.helpers import compose


@pytest.fixture
def trainer():
    return compose("train").trainer


def test_params_yaml_defaults_to_auto(trainer):
    assert trainer.epochs == "auto"
    assert dict(trainer.auto) == {"images": 150000, "max_epochs": 100, "min_steps_per_epoch": 30, "min_batch": 32}


@pytest.mark.parametrize("batch", [256, 100, 500])  # the default, cnn_dnn's and dense_3x500's variants
def test_mnist_size_keeps_three_epochs_at_the_configured_batch(trainer, batch):
    trainer.batch_size = batch
    assert budget.plan(trainer, 0.004, 54_000) == budget.Budget(3, batch, 0.004)


def test_a_thousand_images_get_a_hundred_epochs_at_batch_32(trainer):
    chosen = budget.plan(trainer, 0.004, 900)
    assert (chosen.epochs, chosen.batch_size) == (100, 32)  # 150,000 / 900 = 167, capped
    assert chosen.lr == pytest.approx(0.004 * math.sqrt(32 / 256))


def test_mid_size_shrinks_the_batch_to_thirty_steps_per_epoch(trainer):
    chosen = budget.plan(trainer, 0.004, 5_000)
    assert (chosen.epochs, chosen.batch_size) == (30, 166)
    assert chosen.lr == pytest.approx(0.004 * math.sqrt(166 / 256))


def test_a_number_of_epochs_trains_exactly_as_configured(trainer):
    trainer.epochs = 2
    assert budget.plan(trainer, 0.004, 900) == budget.Budget(2, 256, 0.004)
