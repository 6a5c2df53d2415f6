"""Training throughput: the pipeline's default training path (a) against a notebook-style baseline (b).

    python benchmarks/throughput.py                      # 4 architectures x {none, standard}, 1 repeat
    python benchmarks/throughput.py --archs shallow_cnn --repeats 2 --epochs 2
    python benchmarks/throughput.py --pipeline-override trainer.batch_size=128   # try other settings for (a)

Needs data/prepared/ (`dvc repro prepare`). Each measurement is its own process: TensorFlow fixes its
thread pools and Keras its dtype policy once per process, and peak memory (max RSS) is per process. The
(a) and (b) processes alternate (a b, then b a on the next repeat) so that drift of this noisy machine
falls on both. Per measurement: one warm-up epoch (graph tracing, oneDNN kernel selection), then
`--epochs` timed full epochs over the training set; throughput = images / timed seconds.

(a) `mnist_pipeline.ml.fit.prepare_fit` with the defaults of conf/ (what `python -m mnist_pipeline.train
    model=<arch> augment=<aug>` runs): in-memory tensors, fused affine warp, precision and batch size
    from conf/trainer/default.yaml.
(b) the notebooks' way: `model.fit` on float64 NumPy arrays, batch 32, float32 model, Adam; augmentation
    as the four Keras preprocessing layers chained in front of the model.

Also measured in the same invocation: the float32 and bfloat16 matmul peak of this machine, against
which each architecture's achieved GFLOP/s (training FLOPs per image: forward x 3) is reported.
Writes benchmarks/results.json and the throughput section of benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package

ARCHS = ("shallow_cnn", "deep_cnn", "dense_3x500", "cnn_dnn")
AUGMENTS = ("none", "standard")
NOTEBOOK_BATCH = 32
MATMUL_N = 2048


# ---------------------------------------------------------------- child process: one measurement


def compose(arch: str, augment: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mnist_pipeline.core.workspace import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            "train", overrides=[f"model={arch}", f"augment={augment}", "output_dir=unused", *overrides]
        )


class EpochTimer:
    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        timer = _Timer()
        timer.seconds = []
        return timer


def notebook_model(cfg, augment: str):
    """The notebooks' setup: the same architecture in float32, the four Keras augmentation layers chained."""
    import keras

    from mnist_pipeline.ml.fit import build_model

    model = build_model(cfg.model, (28, 28, 1), 10)  # MNIST's
    if augment != "none":
        a = cfg.augment
        chained = [
            keras.layers.RandomRotation(a.rotation / 360.0),  # a fraction of a full turn
            keras.layers.RandomTranslation(a.height_shift, a.width_shift),
            keras.layers.RandomShear(x_factor=a.shear),
            keras.layers.RandomZoom(a.zoom),
        ]
        model = keras.Sequential([keras.Input((28, 28, 1)), *chained, model], name=f"{model.name}_augmented")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def measure(spec: dict) -> dict:
    import numpy as np

    from mnist_pipeline.data.prepared import load_split

    x, y = load_split(ROOT / "data" / "prepared", "train")
    if spec["limit"]:
        x, y = x[: spec["limit"]], y[: spec["limit"]]
    cfg = compose(spec["arch"], spec["augment"], spec["overrides"] if spec["path"] == "pipeline" else [])
    timer = EpochTimer()
    epochs = 1 + spec["epochs"]
    if spec["path"] == "pipeline":
        from mnist_pipeline.ml.fit import prepare_fit
        from mnist_pipeline.ml.inputs import steps_per_epoch

        cfg.trainer.epochs = epochs
        model, dataset, _ = prepare_fit(cfg, x, y, num_classes=10)
        model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch(len(x), cfg.trainer.batch_size),
            verbose=0,
            callbacks=[timer],
        )
        settings = {
            "batch_size": cfg.trainer.batch_size,
            "precision": model.dtype_policy.name,
            "steps_per_execution": cfg.trainer.steps_per_execution,
        }
    else:
        import keras

        keras.utils.set_random_seed(cfg.trainer.seed)
        model = notebook_model(cfg, spec["augment"])
        model.fit(
            x.astype(np.float64),
            y,
            batch_size=NOTEBOOK_BATCH,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            callbacks=[timer],
        )
        settings = {"batch_size": NOTEBOOK_BATCH, "precision": "float32", "steps_per_execution": 1}
    timed = timer.seconds[1:]
    return {
        **spec,
        **settings,
        "images": len(x),
        "epoch_seconds": timer.seconds,
        "images_per_second": len(x) * len(timed) / sum(timed),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_flops_per_image": training_flops(model),
    }


def training_flops(model) -> int:
    """Multiply-adds x 2 of every Conv2D and Dense layer, forward x 3 (forward, and backward for inputs
    and weights). Pooling, activations, normalization and the optimizer are left out (a few percent)."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            total += 2 * height * width * channels * kernel_h * kernel_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return 3 * total


def matmul_peak(spec: dict) -> dict:
    """Best GFLOP/s of an n x n matmul in float32 and bfloat16, with TensorFlow's default threads."""
    import tensorflow as tf

    n, result = spec["n"], {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.uniform((n, n), dtype=tf.float32)
        a = tf.cast(a, dtype)
        matmul = tf.function(lambda m: tf.matmul(m, m))
        matmul(a).numpy()  # warm-up: kernel selection
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(5):
                matmul(a)
            matmul(a).numpy()  # wait for the last one
            best = min(best, (time.perf_counter() - start) / 6)
        result[dtype] = 2 * n**3 / best / 1e9
    return {"kind": "matmul", "n": n, "gflops": result}


def child(spec: dict) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = matmul_peak(spec) if spec.get("kind") == "matmul" else measure(spec)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------- parent: schedule, aggregate, report


def run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT, capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def schedule(args) -> list[dict]:
    """(a, b) pairs per architecture and augmentation, the order flipped on every other repeat."""
    specs = []
    for repeat in range(args.repeats):
        for arch in args.archs:
            for augment in args.augments:
                pair = [
                    {
                        "path": path,
                        "arch": arch,
                        "augment": augment,
                        "repeat": repeat,
                        "epochs": args.epochs,
                        "limit": args.limit,
                        "overrides": args.pipeline_override,
                    }
                    for path in args.paths
                ]
                specs += pair if repeat % 2 == 0 else pair[::-1]
    return specs


def summarize(measurements: list[dict], peak: dict) -> list[dict]:
    rows = []
    keys = sorted(
        {(m["arch"], m["augment"]) for m in measurements},
        key=lambda k: (ARCHS.index(k[0]) if k[0] in ARCHS else 99, k[1]),
    )
    for arch, augment in keys:
        by_path = {}
        for path in ("pipeline", "notebook"):
            runs = [m for m in measurements if (m["arch"], m["augment"], m["path"]) == (arch, augment, path)]
            ips = statistics.median(r["images_per_second"] for r in runs)
            flops = runs[0]["train_flops_per_image"]
            by_path[path] = {
                "images_per_second": ips,
                "all_images_per_second": [r["images_per_second"] for r in runs],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "gflops": ips * flops / 1e9,
                "batch_size": runs[0]["batch_size"],
                "precision": runs[0]["precision"],
            }
        pipeline_peak = peak["bfloat16"] if by_path["pipeline"]["precision"] == "mixed_bfloat16" else peak["float32"]
        rows.append(
            {
                "arch": arch,
                "augment": augment,
                "train_mflops_per_image": flops / 1e6,
                "pipeline": by_path["pipeline"],
                "notebook": by_path["notebook"],
                "ratio": by_path["pipeline"]["images_per_second"] / by_path["notebook"]["images_per_second"],
                "pipeline_share_of_peak": by_path["pipeline"]["gflops"] / pipeline_peak,
                "notebook_share_of_peak": by_path["notebook"]["gflops"] / peak["float32"],
            }
        )
    return rows


def markdown(rows: list[dict], peak: dict, args, command: str) -> str:
    lines = [
        f"Command: `{command}` ({args.epochs} timed epoch(s) after one warm-up epoch, "
        f"{args.repeats} repeat(s), median; {'all' if not args.limit else args.limit} training images).",
        "",
        f"Matmul peak measured in the same run ({MATMUL_N}x{MATMUL_N}): float32 {peak['float32']:.0f} GFLOP/s, "
        f"bfloat16 {peak['bfloat16']:.0f} GFLOP/s.",
        "",
        "| architecture | augment | (a) pipeline img/s | (b) notebook img/s | ratio a/b | (a) batch, precision "
        "| (a) / (b) peak RSS MiB | train MFLOP/img | (a) GFLOP/s (% of peak) | (b) GFLOP/s (% of f32 peak) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, b = r["pipeline"], r["notebook"]
        lines.append(
            f"| {r['arch']} | {r['augment']} | {a['images_per_second']:,.0f} | {b['images_per_second']:,.0f} "
            f"| **{r['ratio']:.2f}** | {a['batch_size']}, {a['precision']} "
            f"| {a['peak_rss_mib']:,.0f} / {b['peak_rss_mib']:,.0f} | {r['train_mflops_per_image']:.1f} "
            f"| {a['gflops']:.1f} ({100 * r['pipeline_share_of_peak']:.0f}%) "
            f"| {b['gflops']:.1f} ({100 * r['notebook_share_of_peak']:.0f}%) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="use the first N training images (0: all)")
    parser.add_argument(
        "--pipeline-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for (a) only, to try other settings (repeatable)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["pipeline", "notebook"],
        choices=["pipeline", "notebook"],
        help="measure only one side while exploring settings (the report needs both)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="where results.json/.md go")
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if not (ROOT / "data" / "prepared" / "train.npz").is_file():
        raise SystemExit("data/prepared/ not found: run `dvc repro prepare` first")
    if args.epochs < 1 or args.repeats < 1:
        raise SystemExit("--epochs and --repeats must be >= 1")

    command = " ".join(["python benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    peak = run_child({"kind": "matmul", "n": MATMUL_N})["gflops"]
    print(f"matmul peak: float32 {peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s", flush=True)
    measurements = []
    for spec in schedule(args):
        result = run_child(spec)
        measurements.append(result)
        print(
            f"{spec['path']:>8} {spec['arch']:>12} {spec['augment']:>8}: {result['images_per_second']:8,.0f} img/s"
            f"  epochs {', '.join(f'{s:.1f}' for s in result['epoch_seconds'])} s",
            flush=True,
        )
    if len(args.paths) < 2:
        return 0
    peak_after = run_child({"kind": "matmul", "n": MATMUL_N})["gflops"]  # bracket the run: drift shows here
    peak = {k: max(peak[k], peak_after[k]) for k in peak}
    rows = summarize(measurements, peak)
    table = markdown(rows, peak, args, command)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(
        json.dumps(
            {
                "machine": report_md.machine(),
                "command": command,
                "matmul_peak_gflops": peak,
                "rows": rows,
                "measurements": measurements,
            },
            indent=2,
        )
        + "\n"
    )
    report_md.write_section(args.out / "results.md", "throughput", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
