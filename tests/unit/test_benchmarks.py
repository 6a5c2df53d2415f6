"""The benchmark scripts' own arithmetic: the FLOP count behind GFLOP/s, and the accuracy table's machines."""

import importlib.util

import pytest
from hydra.utils import instantiate

from tests.helpers import REPO


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("arch", "multiply_adds"), [
    # conv 26x26x32x9x1 + 11x11x64x9x32 + 3x3x128x9x64, dense 1152x64 + 64x10
    ("shallow_cnn", 194_688 + 2_230_272 + 663_552 + 73_728 + 640),
    ("dense_3x500", 784 * 500 + 500 * 500 + 500 * 500 + 500 * 10),
])
def test_training_flops_count_conv_and_dense_multiply_adds_three_times(arch, multiply_adds):
    throughput = load_script("throughput")
    model = instantiate(throughput.compose(arch, "none", []).model, _convert_="all")
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
