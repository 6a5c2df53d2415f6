"""The integration tests share one process: none may leave global state behind for the next
(tests/global_state.py: an in-process training sets the dtype policy and seeds TensorFlow). Module-scoped
too, so a module's own fixtures are covered."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.ml import compiled, models, optimizers
from mnist_pipeline.tracking import logged_models, registry, runs, store
from tests.global_state import _module_leaves_no_global_state, _test_leaves_no_global_state

__all__ = ["_module_leaves_no_global_state", "_test_leaves_no_global_state"]  # pytest finds them here


@dataclass
class Champion:
    tracking_uri: str
    test_npz: Path
    picks: list[tuple[int, int]]  # (test index, label) of digits the model gets right with p > 0.99
    first_label: int  # of test image 0, docs/serving.md's example, which the model gets right with p > 0.99


@pytest.fixture(scope="module")
def champion(tmp_path_factory, small_prepared):
    """A small CNN trained in-process on the real small split, logged as train logs it (its pyfunc compiled) and
    registered as mnist-classifier@champion in a temporary SQLite store."""
    import keras
    import mlflow

    tmp = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    train, test = (np.load(small_prepared / f"{split}.npz") for split in ("train", "test"))
    keras.utils.set_random_seed(0)
    block = {"filters": 32, "kernel": 3, "pool": True}
    model = models.convnet("small_cnn", conv=[block, block], dense=[64], input_shape=(28, 28, 1), num_classes=10)
    optimizers.compile_model(model, {"name": "adam", "lr": 2e-3})
    model.fit(train["x"], train["y"], epochs=8, batch_size=32, verbose=0)  # ~95% test accuracy, ~20 s
    probs = model.predict(test["x"], verbose=0)
    right = probs.argmax(axis=1) == test["y"]
    assert right.mean() > 0.9, f"the test model is too weak: {right.mean():.1%} test accuracy"
    good = right & (probs.max(axis=1) > 0.99)
    assert good[0], f"docs/serving.md's example, test image 0, is not classified right with p > 0.99: {probs[0]}"
    # The first confident, correct image of three different digits.
    picks: dict[int, int] = {}
    for index in np.flatnonzero(good):
        picks.setdefault(int(test["y"][index]), int(index))
    picks = [(index, label) for label, index in list(picks.items())[:3]]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        store.setup({"tracking_uri": uri, "experiment": "predict-test"})
        with runs.training_run("small_cnn", {"model": "small_cnn"}, {}):
            model_uri = logged_models.log_keras_model(model, test["x"][:1], step=0, pyfunc_loader=compiled.__file__)
        registry.set_alias("mnist-classifier", "champion", registry.register(model_uri, "mnist-classifier", {}).number)
        mlflow.set_tracking_uri(None)  # leave no global store behind for other tests in this process
    return Champion(uri, small_prepared / "test.npz", picks, int(test["y"][0]))
