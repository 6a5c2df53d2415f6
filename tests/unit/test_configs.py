"""Every Hydra config composes, and every model builds with the notebooks' exact parameter counts."""

import pytest
from hydra import compose, initialize_config_dir

from mnist_pipeline.core.workspace import CONF_DIR
from mnist_pipeline.ml.fit import build_model
from tests.helpers import REPO

PARAM_COUNTS = {
    "dense_3x500": 898_510,
    "dense_2x350": 401_110,
    "mlp_32x32": 26_506,
    "shallow_cnn": 167_114,
    "deep_cnn": 829_354,
    "cnn_dnn": 138_506,
    "bn_cnn": 326_826,
    "tiny_cnn": 18_378,  # conv 5x5x1x16+16, 5x5x16x32+32, dense 512x10+10
}
MLP_VARIANTS = [  # the small-MLP notebook's other settings, as overrides
    (["model.hidden=[64,64]"], 55_050),
    (["model.hidden=[32,32,32]"], 27_562),
    (["model.hidden=[128,128]", "model.dropout=0.5"], 118_282),
    (["model.input_norm=l2"], 26_506),
]


def train_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["output_dir=unused", *overrides])


def test_every_model_config_has_a_count():
    assert sorted(p.stem for p in (REPO / "conf/model").glob("*.yaml")) == sorted(PARAM_COUNTS)


@pytest.mark.parametrize(("name", "count"), PARAM_COUNTS.items())
def test_model_parameter_count(name, count):
    model = build_model(train_config(f"model={name}").model, (28, 28, 1), 10)
    assert model.count_params() == count
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)


@pytest.mark.parametrize(("overrides", "count"), MLP_VARIANTS)
def test_mlp_variants(overrides, count):
    model = build_model(train_config("model=mlp_32x32", *overrides).model, (28, 28, 1), 10)
    assert model.count_params() == count


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "conf/experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_builds(preset):
    cfg = train_config(f"experiment={preset}")
    assert cfg.model.name in PARAM_COUNTS
    assert build_model(cfg.model, (28, 28, 1), 10).count_params() > 0


def test_presets_carry_the_notebook_settings():
    mlp = train_config("experiment=notebook_mlp")
    assert (mlp.model.name, mlp.optimizer.name, mlp.optimizer.momentum, mlp.optimizer.decay) == (
        "mlp_32x32", "sgd", 0.9, 1e-6)
    assert (mlp.trainer.epochs, mlp.trainer.batch_size, mlp.model.input_norm) == (20, 32, "l2")
    deep = train_config("experiment=notebook_deep_cnn_augmented")
    assert (deep.model.name, deep.augment.name, deep.trainer.batch_size, deep.trainer.epochs) == (
        "deep_cnn", "standard", 32, 10)
    dense = train_config("experiment=notebook_dense_3x500")
    assert (dense.trainer.batch_size, dense.trainer.shuffle_buffer, dense.trainer.epochs) == (500, 10_000, 10)
    assert train_config("experiment=notebook_cnn_dnn").trainer.batch_size == 100
    for preset in (p.stem for p in (REPO / "conf/experiment").glob("notebook_*.yaml")):
        cfg = train_config(f"experiment={preset}")  # the notebooks ran float32, Adam at Keras's constant 1e-3
        assert cfg.trainer.precision == "float32" and cfg.optimizer.schedule == "constant", preset
        assert cfg.optimizer.name == "sgd" or cfg.optimizer.lr == 0.001, preset
    # A command-line override still beats the preset.
    assert train_config("experiment=notebook_mlp", "trainer.epochs=3").trainer.epochs == 3
    assert train_config().variant == "shallow_cnn-none"
