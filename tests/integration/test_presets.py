"""The performance presets compose and train: one short epoch each through the real train stage.

Their accuracy and speed are measured by benchmarks/accuracy.py (benchmarks/results.md), never here.
"""

import json
import re
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import PARAM_COUNTS, client_for, compose, run_module, store_env, train_args

PRESETS = {  # preset: (model, augment)
    "best": ("bn_cnn", "light"),
    "fast": ("shallow_cnn", "none"),
    "sprint": ("tiny_cnn", "none"),
}
# Pinned: the settings benchmarks/results.md measured each preset with (chosen there on validation).
MEASURED = {
    "best": {"optimizer.lr": 0.004, "trainer.epochs": 24, "model.dropout": 0.25, "model.fused_batchnorm": True},
    "fast": {"optimizer.lr": 0.004, "trainer.epochs": 4},
    "sprint": {"optimizer.lr": 0.012, "trainer.epochs": 2, "trainer.batch_size": 64},
}


def expected_precision() -> str:
    """What trainer.precision=auto must choose here, read from the CPU's own flags: bfloat16 only where the
    CPU multiplies it natively (AVX512_BF16 or AMX), float32 elsewhere."""
    match = re.search(r"(?m)^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text())
    flags = set(match.group(1).split()) if match else set()
    return "mixed_bfloat16" if {"avx512_bf16", "amx_bf16"} & flags else "float32"


@pytest.mark.parametrize(("preset", "expected"), PRESETS.items())
def test_preset_composes_and_trains_one_epoch(preset, expected, tmp_path, small_prepared):
    cfg = compose("train", f"experiment={preset}")
    assert (cfg.model.name, cfg.augment.name) == expected
    assert cfg.trainer.precision == "auto" and cfg.optimizer.schedule == "cosine"
    assert {key: OmegaConf.select(cfg, key) for key in MEASURED[preset]} == MEASURED[preset]

    # 1,800 images at batch 256: 8 steps, enough to run every part of the preset once.
    result = run_module(
        "mnist_pipeline.train",
        *train_args(tmp_path, small_prepared, f"experiment={preset}", "trainer.epochs=1"),
        env=store_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["epochs_run"] == 1 and history["params"] == PARAM_COUNTS[expected[0]]
    run = client_for(tmp_path).get_run(json.loads((tmp_path / "out" / "run.json").read_text())["run_id"])
    assert run.info.run_name == f"{expected[0]}-{expected[1]}"
    assert run.data.tags["precision"] == expected_precision()
    assert run.data.params["trainer.epochs"] == "1"  # the command line beats the preset
    assert run.data.params["optimizer.lr"] == str(cfg.optimizer.lr)
    # trained with the fused batch norm where the model has it, saved with Keras' own layer (batchnorm.py)
    saved = zipfile.ZipFile(tmp_path / "out" / "model.keras").read("config.json").decode()
    assert "FusedBatchNormalization" not in saved and "mnist_pipeline" not in saved
    assert ('"class_name": "BatchNormalization"' in saved) == (expected[0] == "bn_cnn")
    assert run.data.params.get("model.fused_batchnorm") == ("true" if expected[0] == "bn_cnn" else None)
