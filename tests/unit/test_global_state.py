"""The fast tier's fixtures (tests/unit/conftest.py): global state is put back after every test (the first test
here changes all of it, the second, run after it in the same process, finds it as a fresh process has it), and a
stage or TensorFlow subprocess is refused."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pytest
from keras.src.backend.common import global_state
from tensorflow.python.eager import context

PRISTINE = {}


def state() -> dict:
    return {
        "policy": keras.config.dtype_policy().name,
        "tf_seed": context.global_seed(),
        "keras_seed": global_state.get_global_attribute("global_random_seed"),
        "python_random": random.getstate(),
        "numpy_random": np.random.get_state()[1].tolist(),
        "tracking_uri": mlflow.get_tracking_uri(),
        "env": os.environ.get("MNIST_PIPELINE_TEST_LEAK"),
    }


def test_a_test_that_changes_global_state(tmp_path):
    PRISTINE.update(state())
    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(123)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    os.environ["MNIST_PIPELINE_TEST_LEAK"] = "1"
    assert all(state()[key] != PRISTINE[key] for key in PRISTINE)


def test_the_next_test_finds_it_as_it_was():
    if not PRISTINE:  # run alone: nothing to compare with
        return
    assert state() == PRISTINE
    assert state()["policy"] == "float32" and state()["tf_seed"] is None


@pytest.mark.parametrize(
    "args",
    [
        [sys.executable, "-m", "mnist_pipeline.evaluate", "variant=x"],
        [sys.executable, "-c", "import keras"],
        ["/venv/bin/dvc", "repro"],
    ],
)
def test_a_stage_or_tensorflow_subprocess_is_refused_in_the_fast_tier(args):
    with pytest.raises(AssertionError, match="not in the fast tier"):
        subprocess.run(args, capture_output=True)


def test_a_plain_subprocess_is_allowed():
    assert subprocess.run([sys.executable, "-c", "print(2 + 2)"], capture_output=True, text=True).stdout == "4\n"
