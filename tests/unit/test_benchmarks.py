"""The benchmark scripts' own arithmetic: the FLOP count behind GFLOP/s, the accuracy table's machines, and what
the serving load counts as a broken guarantee."""

import json

import numpy as np
import pytest

from mnist_pipeline.ml.fit import build_model
from tests.helpers import load_script


@pytest.mark.parametrize(
    ("arch", "multiply_adds"),
    [
        # conv 26x26x32x9x1 + 11x11x64x9x32 + 3x3x128x9x64, dense 1152x64 + 64x10
        ("shallow_cnn", 194_688 + 2_230_272 + 663_552 + 73_728 + 640),
        ("dense_3x500", 784 * 500 + 500 * 500 + 500 * 500 + 500 * 10),
    ],
)
def test_training_flops_count_conv_and_dense_multiply_adds_three_times(arch, multiply_adds):
    throughput = load_script("throughput")
    model = build_model(throughput.compose(arch, "none", []).model, (28, 28, 1), 10)
    assert throughput.training_flops(model) == 3 * 2 * multiply_adds


def _run(seed, val, test, seconds, machine):
    return {"seed": seed, "val_accuracy": val, "test_accuracy": test, "train_seconds": seconds, "machine": machine}


AMD = {"cpu": "AMD EPYC", "cores": 2, "bf16": ["avx512_bf16"]}


def test_accuracy_table_labels_each_seed_with_its_machine():
    accuracy = load_script("accuracy")
    xeon = {"cpu": "Xeon", "cores": 2, "bf16": ["amx_bf16", "avx512_bf16"]}
    table = accuracy.markdown(
        {
            "best": {
                "overrides": ["experiment=best"],
                "runs": [_run(1, 0.9956, 0.9968, 638.2, AMD), _run(2, 0.9950, 0.9962, 401.0, xeon)],
            }
        }
    )
    assert table.splitlines()[0] == (
        "Machines: M1 = AMD EPYC, 2 cores, native bf16 avx512_bf16; "
        "M2 = Xeon, 2 cores, native bf16 amx_bf16/avx512_bf16."
    )
    assert (
        "| best | `experiment=best` | 1: 99.56% / 99.68% (638, M1); 2: 99.50% / 99.62% (401, M2) "
        "| 99.53% | **99.65%** | 520 |"
    ) in table
    assert "chosen on validation" not in table


def test_accuracy_table_chooses_on_validation_and_shows_test_only_for_the_choice():
    accuracy = load_script("accuracy")
    # lr 2e-3 is better on test but worse on validation over its two rows: 4e-3 must be chosen
    entries = {
        "a 4e-3": {"overrides": ["model=a"], "choice": ["lr", "4e-3"], "runs": [_run(1, 0.990, 0.980, 10, AMD)]},
        "b 4e-3": {"overrides": ["model=b"], "choice": ["lr", "4e-3"], "runs": [_run(1, 0.980, 0.981, 10, AMD)]},
        "a 2e-3": {
            "overrides": ["model=a", "optimizer.lr=0.002"],
            "choice": ["lr", "2e-3"],
            "runs": [_run(1, 0.994, 0.999, 10, AMD)],
        },
        "b 2e-3": {
            "overrides": ["model=b", "optimizer.lr=0.002"],
            "choice": ["lr", "2e-3"],
            "runs": [_run(1, 0.975, 0.999, 10, AMD)],
        },
        "alone": {"overrides": ["model=c"], "runs": [_run(1, 0.97, 0.96, 5, AMD)]},
    }
    assert accuracy.choices(entries)["lr"]["chosen"] == "4e-3"
    table = accuracy.markdown(entries)
    assert "| a 4e-3 | `model=a` | 1: 99.00% / 98.00% (10, M1) | 99.00% | **98.00%** | 10 |" in table
    assert "| a 2e-3 | `model=a optimizer.lr=0.002` | 1: 99.40% / - (10, M1) | 99.40% | not chosen | 10 |" in table
    assert "99.90%" not in table
    assert "| alone | `model=c` | 1: 97.00% / 96.00% (5, M1) | 97.00% | **96.00%** | 5 |" in table
    assert "| lr | 4e-3: 98.500% (2); 2e-3: 98.450% (2) | **4e-3** |" in table


def test_accuracy_candidate_with_a_seed_over_its_time_budget_is_out_of_the_choice():
    accuracy = load_script("accuracy")
    budget = {"choice": ["flagship", "long"], "max_train_seconds": 600}
    entries = {
        "short": {
            "overrides": ["e=1"],
            "choice": ["flagship", "short"],
            "max_train_seconds": 600,
            "runs": [_run(1, 0.990, 0.980, 590, AMD), _run(2, 0.990, 0.980, 600, AMD)],
        },
        "long": {
            "overrides": ["e=2"],
            **budget,
            "runs": [_run(1, 0.995, 0.999, 580, AMD), _run(2, 0.995, 0.999, 601, AMD)],
        },
    }
    d = accuracy.choices(entries)["flagship"]
    assert (d["chosen"], d["over_budget"]) == ("short", ["long"])
    table = accuracy.markdown(entries)
    assert "| long | `e=2` | 1: 99.50% / - (580, M1); 2: 99.50% / - (601, M1) | 99.50% | not chosen | 590 |" in table
    assert "| flagship | short: 99.000% (2); long: 99.500% (2, over its time budget) | **short** |" in table
    # every candidate over: nothing chosen, no test figure shown
    entries["short"]["runs"][1]["train_seconds"] = 650
    assert accuracy.choices(entries)["flagship"]["chosen"] is None
    assert "99.90%" not in accuracy.markdown(entries) and "98.00%" not in accuracy.markdown(entries)
    assert "| **none** |" in accuracy.markdown(entries)


def test_accuracy_candidate_run_on_fewer_seeds_is_a_screen_not_a_choice():
    """One good seed does not beat a three-seed mean: a screen stopped after seed 1 is never chosen."""
    accuracy = load_script("accuracy")
    entries = {
        "preset": {
            "overrides": ["e=1"],
            "choice": ["flagship", "preset"],
            "runs": [_run(s, v, 0.99, 500, AMD) for s, v in [(1, 0.996), (2, 0.995), (3, 0.994)]],
        },
        "screen": {"overrides": ["e=2"], "choice": ["flagship", "screen"], "runs": [_run(1, 0.997, 0.999, 500, AMD)]},
    }
    d = accuracy.choices(entries)["flagship"]
    assert (d["chosen"], d["screens"]) == ("preset", ["screen"])
    table = accuracy.markdown(entries)
    assert "| flagship | preset: 99.500% (3); screen: 99.700% (1, a screen) | **preset** |" in table
    assert "99.90%" not in table


def test_accuracy_choice_needs_a_setting_and_a_candidate(capsys):
    accuracy = load_script("accuracy")
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--name", "x", "--choice", "lr 2e-3", "--", "optimizer.lr=0.002"])
    assert exc.value.code == 2
    assert "--choice 'lr 2e-3': expected SETTING=CANDIDATE" in capsys.readouterr().err


def test_accuracy_stores_each_seed_as_it_finishes_and_keeps_it_when_a_later_seed_fails(tmp_path, monkeypatch):
    """Seed 2 of 3 fails after seed 1 trained: seed 1's new figures are stored, and seeds 2 and 3 keep what an
    earlier session measured with the same overrides."""
    accuracy = load_script("accuracy")
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "test.npz").write_bytes(b"")
    monkeypatch.setattr(accuracy, "ROOT", tmp_path)
    monkeypatch.setattr(accuracy.report_md, "machine", lambda: AMD)
    out = tmp_path / "bench"
    out.mkdir()
    earlier = [_run(s, 0.99, 0.991, 10.0, AMD) for s in (1, 2, 3)]
    (out / "accuracy.json").write_text(
        json.dumps({"entries": {"best": {"overrides": ["experiment=best"], "runs": earlier}}})
    )

    def run_seed(overrides, seed, workdir):
        if seed == 2:
            raise SystemExit("training with seed 2 failed")
        return {k: v for k, v in _run(seed, 0.995, 0.997, 500.0, AMD).items() if k != "machine"}

    monkeypatch.setattr(accuracy, "run_seed", run_seed)
    with pytest.raises(SystemExit, match="seed 2 failed"):
        accuracy.main(["--name", "best", "--out", str(out), "--seeds", "1", "2", "3", "--", "experiment=best"])
    runs = json.loads((out / "accuracy.json").read_text())["entries"]["best"]["runs"]
    assert [(r["seed"], r["val_accuracy"], r["train_seconds"]) for r in runs] == [
        (1, 0.995, 500.0),
        (2, 0.99, 10.0),
        (3, 0.99, 10.0),
    ]
    assert "1: 99.50% / 99.70% (500, M1); 2: 99.00% / 99.10% (10, M1)" in (out / "results.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.json", "results.md"]  # no staging file left


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


def test_time_to_accuracy_chooses_epochs_on_validation_within_the_budget():
    tta = load_script("time_to_accuracy")

    def run(epochs, seed, seconds, val, test):
        return {
            "preset": "sprint",
            "epochs": epochs,
            "seed": seed,
            "train_seconds": seconds,
            "val_accuracy": val,
            "test_accuracy": test,
        }

    runs = [
        run(1, 1, 4.0, 0.980, 0.985),
        run(1, 2, 5.0, 0.982, 0.987),
        run(2, 1, 7.0, 0.987, 0.989),
        run(2, 2, 8.0, 0.985, 0.993),  # best on validation within 10 s
        run(3, 1, 10.0, 0.984, 0.999),
        run(3, 2, 9.0, 0.984, 0.999),  # best on test: must not matter
        run(4, 1, 10.5, 0.995, 0.995),
        run(4, 2, 9.0, 0.995, 0.995),
    ]  # best on validation, one seed over budget
    rows = tta.summarise(runs, {"sprint": 10})
    assert [(r["epochs"], r["chosen"]) for r in rows] == [(1, False), (2, True), (3, False), (4, False)]
    assert rows[1]["train_seconds"] == 7.5 and rows[1]["test_min"] == 0.989 and rows[1]["test_max"] == 0.993
    table = tta.markdown(rows, "cmd")
    assert "| sprint | 2 | 1 2 | 7.5 (8.0) | 98.60% | 99.10% (98.90-99.30) | **chosen** (<= 10 s) |" in table
    assert "- `sprint`: time to 99% mean test accuracy **7.5 s** (2 epochs)." in table
    assert "not reached" in tta.markdown(rows[:1], "cmd")


def test_time_to_accuracy_refuses_a_malformed_preset_spec():
    tta = load_script("time_to_accuracy")
    assert tta.parse_presets(["sprint:3,1,2@10", "fast:4@2.5"]) == {"sprint": ([1, 2, 3], 10.0), "fast": ([4], 2.5)}
    for spec in ("sprint", "sprint:1,2", "sprint:two@10", "sprint:0,1@10", ":1@10", "sprint:1@0", "sprint:1@x"):
        with pytest.raises(SystemExit, match="expected PRESET:EPOCHS"):
            tta.parse_presets([spec])


def test_seed_noise_pools_each_setup_around_its_own_mean_and_sizes_the_seeds():
    noise = load_script("seed_noise")

    def entry(vals):
        return {"runs": [{"val_accuracy": v, "test_accuracy": v} for v in vals]}

    entries = {
        "best, a": entry([0.9950, 0.9952, 0.9954]),  # deviations -0.02, 0, +0.02 points
        "best, b": entry([0.9960, 0.9964]),  # +-0.02 around a level 0.1 points higher
        "best, c": entry([0.9900]),  # one seed: no spread to pool
        "fast": entry([0.98, 0.99, 1.0]),
    }  # another prefix
    sd, dof, names = noise.pooled_sd(entries, "best", "val_accuracy", min_seeds=2)
    assert (round(sd, 6), dof, names) == (round((0.0016 / 3) ** 0.5, 6), 3, ["best, a", "best, b"])
    assert noise.pooled_sd(entries, "best", "val_accuracy", min_seeds=3)[:2] == pytest.approx((0.02, 2))
    # 2 (1.96 + 0.84)^2 = 15.70: one sd's difference needs 16 seeds per setup, two sds need 4
    assert [noise.seeds_needed(0.033, d) for d in (0.033, 0.066)] == [16, 4]
    assert "| validation | 0.023 | 3 | 0.019 | 16 |" in noise.markdown(entries, "best", 2, 3, [0.023])
    with pytest.raises(SystemExit, match="no entry starting with 'best, d' has 3 or more seeds"):
        noise.pooled_sd(entries, "best, d", "val_accuracy", min_seeds=3)
