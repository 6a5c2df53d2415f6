"""The benchmark scripts' own arithmetic: the FLOP count behind GFLOP/s, the accuracy table's machines, and what
the serving load counts as a broken guarantee."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from mnist_pipeline.train import build_model

from tests.helpers import REPO


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("arch", "multiply_adds"), [
    # conv 26x26x32x9x1 + 11x11x64x9x32 + 3x3x128x9x64, dense 1152x64 + 64x10
    ("shallow_cnn", 194_688 + 2_230_272 + 663_552 + 73_728 + 640),
    ("dense_3x500", 784 * 500 + 500 * 500 + 500 * 500 + 500 * 10),
])
def test_training_flops_count_conv_and_dense_multiply_adds_three_times(arch, multiply_adds):
    throughput = load_script("throughput")
    model = build_model(throughput.compose(arch, "none", []).model, (28, 28, 1), 10)
    assert throughput.training_flops(model) == 3 * 2 * multiply_adds


def test_accuracy_table_labels_each_seed_with_its_machine():
    accuracy = load_script("accuracy")
    amd = {"cpu": "AMD EPYC", "cores": 2, "bf16": ["avx512_bf16"]}
    xeon = {"cpu": "Xeon", "cores": 2, "bf16": ["amx_bf16", "avx512_bf16"]}
    table = accuracy.markdown({"best": {"overrides": ["experiment=best"], "runs": [
        {"seed": 1, "test_accuracy": 0.9968, "train_seconds": 638.2, "machine": amd},
        {"seed": 2, "test_accuracy": 0.9962, "train_seconds": 401.0, "machine": xeon},
    ]}})
    assert table.splitlines()[0] == ("Machines: M1 = AMD EPYC, 2 cores, native bf16 avx512_bf16; "
                                     "M2 = Xeon, 2 cores, native bf16 amx_bf16/avx512_bf16.")
    assert "| best | `experiment=best` | 1: 99.68% (638, M1); 2: 99.62% (401, M2) | **99.65%** | 520 |" in table


def test_serve_load_counts_a_5xx_or_a_bad_prediction_as_a_broken_guarantee():
    serve_load = load_script("serve_load")
    bad, valid = serve_load.Body(b"not json"), serve_load.Body(b"", labels=np.array([7, 1]))
    two = json.dumps({"predictions": [[0.0] * 7 + [1.0, 0.0, 0.0], [0.0, 1.0] + [0.0] * 8]}).encode()
    assert serve_load.check(bad, 400, b"") == (None, 0)
    assert serve_load.check(bad, 415, b"") == (None, 0)
    assert serve_load.check(bad, 500, b"") == ("status 500, expected 4xx", 0)
    assert serve_load.check(bad, 200, b"") == ("status 200, expected 4xx", 0)
    assert serve_load.check(bad, None, b"") == ("connection error", 0)
    assert serve_load.check(valid, 200, two) == (None, 2)
    assert serve_load.check(valid, 400, b"") == ("status 400, expected 200", 0)
    one_row = b'{"predictions": [[1.0]]}'
    assert serve_load.check(valid, 200, one_row)[0] == "predictions of shape (1, 1), expected (2, 10)"
    assert serve_load.check(valid, 200, two.replace(b"1.0", b"0.5"))[0] == "probabilities do not sum to 1"
    assert serve_load.check(valid, 200, b"<html>")[0].startswith("unreadable predictions")
