"""Every Hydra config composes, every model builds with the notebooks' exact parameter counts, and every setting
has one home: what DVC varies lives in params.yaml (conf/ reads it as ${params:...}), paths in
conf/paths/default.yaml, the Hydra block in conf/hydra/default.yaml."""

import os
import re

import pytest
import yaml

from mnist_pipeline.core import params
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.ml.fit import build_model
from tests.helpers import PARAM_COUNTS, REPO, compose

PRIMARY = ["prepare", "train", "evaluate", "report", "search"]
MLP_VARIANTS = [  # the small-MLP notebook's other settings, as overrides
    (["model.hidden=[64,64]"], 55_050),
    (["model.hidden=[32,32,32]"], 27_562),
    (["model.hidden=[128,128]", "model.dropout=0.5"], 118_282),
    (["model.input_norm=l2"], 26_506),
]


def train_config(*overrides: str):
    return compose("train", *overrides)


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
        "mlp_32x32",
        "sgd",
        0.9,
        1e-6,
    )
    assert (mlp.trainer.epochs, mlp.trainer.batch_size, mlp.model.input_norm) == (20, 32, "l2")
    deep = train_config("experiment=notebook_deep_cnn_augmented")
    assert (deep.model.name, deep.augment.name, deep.trainer.batch_size, deep.trainer.epochs) == (
        "deep_cnn",
        "standard",
        32,
        10,
    )
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


def params_yaml() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def conf_yaml(name: str):
    return yaml.safe_load((REPO / "conf" / name).read_text())


def test_a_stage_run_by_hand_starts_from_params_yaml_values():
    """`python -m mnist_pipeline.train` and `dvc repro` train as long, with the same seed, on the same split."""
    pipeline = params_yaml()
    trainer = train_config().trainer
    assert (trainer.epochs, trainer.seed) == (pipeline["train"]["epochs"], pipeline["train"]["seed"])
    data = compose("prepare").data
    assert (data.val_fraction, data.split_seed, data.limit) == (
        pipeline["prepare"]["val_fraction"],
        pipeline["prepare"]["split_seed"],
        pipeline["prepare"]["limit"],
    )


def test_the_default_dataset_is_params_yaml_s():
    """Hydra's defaults list cannot read params.yaml: conf/prepare.yaml names the dataset again (its comment says
    so), and the two must agree."""
    defaults = conf_yaml("prepare.yaml")["defaults"]
    assert {"data": params_yaml()["prepare"]["dataset"]} in defaults
    assert compose("prepare").data.name == params_yaml()["prepare"]["dataset"]


def test_no_value_dvc_varies_is_written_in_conf():
    """The defaults of what params.yaml's prepare and train sections hold are ${params:...} in conf/, never a
    second literal (presets in conf/experiment/ and search spaces override them on purpose)."""
    interpolation = re.compile(r"^\$\{params:[\w.]+\}$")

    def settings(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from settings(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for name, keys in [
        ("prepare.yaml", ("data.val_fraction", "data.split_seed", "data.limit")),
        ("trainer/default.yaml", ("epochs", "seed")),
    ]:
        found = dict(settings(conf_yaml(name)))
        for key in keys:
            assert interpolation.match(str(found[key])), f"conf/{name}: {key} is {found[key]!r}, not ${{params:...}}"
    # and every value of those sections but the dataset (chosen in the defaults list) is read from conf/
    text = "\n".join(p.read_text() for p in (REPO / "conf").rglob("*.yaml"))
    for section in ("prepare", "train"):
        for key in params_yaml()[section]:
            if (section, key) != ("prepare", "dataset"):
                assert f"${{params:{section}.{key}}}" in text, f"params.yaml's {section}.{key} is read nowhere in conf/"


def test_a_missing_params_key_or_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 7\n")
    assert params.value("train.epochs", path) == 7
    with pytest.raises(ConfigError, match=r"^\$\{params:train\.seed\}: params\.yaml has no 'train\.seed'$"):
        params.value("train.seed", path)
    with pytest.raises(
        ConfigError, match=r"^\$\{params:train\.epochs\.max\}: params\.yaml has no 'train\.epochs\.max'"
    ):
        params.value("train.epochs.max", path)  # a value, not a section
    with pytest.raises(ConfigError, match=r"^\$\{params:train\.epochs\}: .*/elsewhere\.yaml not found$"):
        params.value("train.epochs", tmp_path / "elsewhere.yaml")


def test_a_changed_params_file_is_read_again(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 7\n")
    assert params.value("train.epochs", path) == 7
    before = path.stat().st_mtime_ns
    path.write_text("train:\n  epochs: 12\n")  # as `dvc exp run -S train.epochs=12` rewrites it
    # file times tick in jiffies: make the rewrite a millisecond later, as any real edit is
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
    assert params.value("train.epochs", path) == 12


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_shares_the_one_hydra_block_and_the_paths(name):
    config = conf_yaml(f"{name}.yaml")
    assert {"hydra": "default"} in config["defaults"] and {"paths": "default"} in config["defaults"]
    own = config.get("hydra") or {}
    assert "run" not in own and "dir" not in (own.get("sweep") or {}), f"conf/{name}.yaml has its own Hydra dirs"


def test_the_primaries_are_the_stages():
    assert sorted(p.stem for p in (REPO / "conf").glob("*.yaml")) == sorted(PRIMARY)
    assert sorted(p.stem for p in (REPO / "src/mnist_pipeline").glob("*.py") if p.stem != "__init__") == sorted(PRIMARY)


def test_paths_are_written_once():
    """Every folder in conf/paths/default.yaml is named there only: other configs use ${paths.<name>}."""
    paths = conf_yaml("paths/default.yaml")["paths"]
    for path in (REPO / "conf").rglob("*.yaml"):
        if path.parent.name == "paths":
            continue
        values = re.findall(r":\s*([^\s#{}$]+)", path.read_text())
        repeated = [v for v in values for p in paths.values() if v == p or v.startswith(f"{p}/")]
        assert not repeated, f"{path.relative_to(REPO)} repeats {repeated}: use ${{paths...}}"
