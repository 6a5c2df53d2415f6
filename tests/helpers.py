"""Helpers shared by the tests."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# A training that is still running when the test stops it: 500 epochs of mlp_32x32 on the small data took
# ~35 s, short enough to finish before a slow test's signal and fail it (a CI run saw exit 0 for SIGTERM).
UNTIL_STOPPED = 100_000
FUZZ_COUNTS: Counter[str] = Counter()  # inputs each fuzz test ran; printed at the end of the session (conftest)


def idx_bytes(array: np.ndarray, dtype_byte: int = 0x08) -> bytes:
    """The IDX encoding of a uint8 array (header + payload)."""
    header = struct.pack(">BBBB", 0, 0, dtype_byte, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


def run_module(module: str, *overrides: str, env: dict | None = None, cwd: Path | None = None):
    """Run `python -m <module> <overrides>` as a user would; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def copy_repo(dest: Path) -> Path:
    """A fresh git checkout-like copy of the project (tracked and unignored files only) at `dest`."""
    import shutil
    import subprocess

    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_dvc(repo: Path, *args: str, env: dict | None = None):
    """Run the venv's `dvc` in `repo`, with the venv first on PATH so stages use its `python`."""
    import os
    import subprocess
    import sys

    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run(
        [str(Path(bindir) / "dvc"), *args], cwd=repo, env=full_env, capture_output=True, text=True, timeout=3600
    )


@contextmanager
def model_server(
    model_uri: str,
    tracking_uri: str,
    cwd: Path,
    extra_env: dict | None = None,
    timeout: float = 180,
    one_at_a_time: bool = False,
    args: tuple[str, ...] = (),
) -> Iterator[int]:
    """`mlflow models serve` (with `args`, e.g. ("-w", "2")) on a free 127.0.0.1 port, answering /ping, as
    docs/serving.md runs it; yields the port. `one_at_a_time`: with mnist_pipeline.serving's event loop, what a
    model logged with MLflow's own Keras loader (model.predict) needs. Stopped with its whole process group
    (uvicorn workers) whatever happens."""
    from mnist_pipeline import serving
    from mnist_pipeline.team.postgres import free_port

    port = free_port()
    env = {"MLFLOW_TRACKING_URI": tracking_uri, **(serving.ENV if one_at_a_time else {}), **(extra_env or {})}
    command = [*serve_command(model_uri, port), *args]
    with running_server(command, port, cwd, env, cwd / "serve.log", timeout) as server:
        yield server.port


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path


@contextmanager
def pipeline_server(
    model_uri: str, tracking_uri: str, cwd: Path, *args: str, env: dict | None = None, timeout: float = 180
) -> Iterator[Server]:
    """`mnist-pipeline serve --model URI` with `args` on a free 127.0.0.1 port, answering /ping; yields the
    Server (port, process, log). Stopped with its whole process group whatever happens."""
    from mnist_pipeline.team.postgres import free_port

    port = free_port()
    command = [
        *(str(Path(sys.executable).parent / "mnist-pipeline"), "serve", "--model", model_uri),
        *("--tracking-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port), *args),
    ]
    with running_server(command, port, cwd, env or {}, cwd / f"pipeline-serve-{port}.log", timeout) as server:
        yield server


@contextmanager
def running_server(command: list[str], port: int, cwd: Path, env: dict, log: Path, timeout: float) -> Iterator[Server]:
    """`command` started in a session of its own, waited for until GET /ping answers 200 (at most `timeout` s),
    then stopped: SIGTERM to its process group, SIGKILL after 30 s."""
    import os
    import signal
    import time
    import urllib.request

    bindir = Path(sys.executable).parent
    full_env = {**os.environ, **env, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}  # `uvicorn`
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:  # not listening yet (URLError, connection refused or reset)
                pass
            assert time.monotonic() < deadline, f"no answer on /ping after {timeout:.0f} s:\n{log.read_text()}"
            time.sleep(0.5)
        yield Server(port, process, log)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the group: uvicorn's workers too
            process.wait(timeout=30)
        except ProcessLookupError:  # it and its group are gone already
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---- a project copy, DVC and git, as a user drives them -----------------------------------------------------


def set_param(repo: Path, key: str, value) -> None:
    """Edit one `key: value` line of params.yaml (as a user would)."""
    import re

    path = repo / "params.yaml"
    text, count = re.subn(rf"(?m)^(\s*{key}:)\s*[^#\n]*?(\s*#.*)?$", rf"\g<1> {value}\g<2>", path.read_text())
    assert count == 1, f"{key} not found once in params.yaml"
    path.write_text(text)


def ran_stages(result) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` actually ran, in order (not the skipped ones)."""
    import re

    return re.findall(r"(?m)^Running stage '([^']+)':", result.stdout)


def git_commit_all(repo: Path, message: str) -> None:
    import os
    import subprocess

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True, env=env)


QUICK_VARIANTS = (  # without the exported files (about 2 s per train and evaluate; tests/integration/test_exports.py)
    '  mlp_32x32-none: {model: mlp_32x32, augment: none, overrides: "export.formats=[]"}\n'
    '  dense_3x500-none: {model: dense_3x500, augment: none, overrides: "trainer.batch_size=500 export.formats=[]"}\n'
)


def quick_project(dest: Path, limit: int, variants: str = QUICK_VARIANTS) -> Path:
    """A committed copy of the project with only `variants` (params.yaml lines), `limit` images, 1 epoch."""
    repo = copy_repo(dest)
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text[: text.index("variants:\n")] + "variants:\n" + variants)
    set_param(repo, "limit", limit)
    set_param(repo, "epochs", 1)
    git_commit_all(repo, "two quick variants")
    return repo


# ---- the stages and the CLI in subprocesses, on a temporary MLflow store ----------------------------------


def train_args(tmp_path: Path, data_dir: Path, *overrides: str) -> tuple[str, ...]:
    """The train stage's overrides for a run whose outputs stay in `tmp_path`: out/ and hydra/."""
    return (f"data_dir={data_dir}", f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides)


def store_env(tmp_path: Path) -> dict[str, str]:
    """The environment that points a stage at the SQLite store tmp_path/mlruns/mlflow.db."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}


def client_for(tmp_path: Path):
    """An MlflowClient on store_env(tmp_path)'s store (no global tracking URI is set)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_env(tmp_path)["MLFLOW_TRACKING_URI"])


def run_cli(*args: str, cwd: Path, tracking_uri: str | None = None):
    """`python -m mnist_pipeline.cli <args>` in `cwd`, on `tracking_uri` (else none: the CLI's default)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def registry_cli(*args: str, store: str):
    """`mnist-pipeline registry <args>` on the store `store`."""
    return run_cli("registry", *args, cwd=REPO, tracking_uri=store)


def compose(config_name: str, *overrides: str, hydra: bool = False):
    """A stage's config as Hydra composes it from conf/, with `overrides` (e.g. "model=deep_cnn"); with
    `hydra=True` the `hydra` node too (its runtime choices). Paths that only exist at run time
    (`${hydra:runtime.output_dir}`) are set to `unused` where the config has them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mnist_pipeline.core.workspace import CONF_DIR

    defaults = {"train": ["output_dir=unused"], "search": ["output_dir=unused"]}.get(config_name, [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=[*defaults, *overrides], return_hydra_config=hydra)


def load_script(name: str):
    """A benchmarks/ script as a module (benchmarks/ is a folder of scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# Every model config's exact parameter count at 28x28x1 and 10 classes: the notebooks' figures.
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


@contextmanager
def restored_globals() -> Iterator[None]:
    """Whatever the block changes of this process's global state is put back at its end: the environment
    (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID, ...), MLflow's tracking URI and active experiment (which
    mlflow.set_tracking_uri / set_experiment, and so tracking.store.setup, set for the whole process), any
    run left active, and Keras' dtype policy and TensorFlow's op determinism (which an in-process training
    sets). Only the libraries already imported are looked at."""
    import os
    import sys

    environ = dict(os.environ)
    saved: dict = {}
    if "mlflow" in sys.modules:
        from mlflow.tracking import fluent
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved["mlflow"] = (tracking_utils._tracking_uri, fluent._active_experiment_id)
    if "keras" in sys.modules:
        import keras
        from tensorflow.python.framework import config as tf_config

        saved["keras"] = (keras.config.dtype_policy().name, tf_config.is_op_determinism_enabled())
    try:
        yield
    finally:
        if "mlflow" in sys.modules:
            import mlflow
            from mlflow.tracking import fluent

            for _ in range(10):  # a run left open (a test that failed inside one): ended, in its own store
                if mlflow.active_run() is None:
                    break
                try:
                    mlflow.end_run(status="KILLED")
                except Exception:  # noqa: BLE001 - its store may be gone with the test's tmp_path
                    fluent._active_run_stack.get().pop()
            uri, experiment_id = saved.get("mlflow", (None, None))
            mlflow.set_tracking_uri(uri)
            fluent._active_experiment_id = experiment_id
        if "keras" in sys.modules:
            import keras
            from tensorflow.python.framework import config as tf_config

            policy, deterministic = saved.get("keras", ("float32", False))
            keras.config.set_dtype_policy(policy)
            if tf_config.is_op_determinism_enabled() != deterministic:
                (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()
        os.environ.clear()
        os.environ.update(environ)


def serve_command(model_uri: str, port: int) -> list[str]:
    """The venv's `mlflow models serve` for `model_uri` on 127.0.0.1:`port`, as docs/serving.md runs it."""
    import sys

    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow,
        "models",
        "serve",
        "-m",
        model_uri,
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
        "--env-manager",
        "local",
    ]


def tiny_bn_cnn(fused: bool):
    """A small batch-normalized CNN (12x12x1 images, 3 classes) with or without the fused BatchNorm."""
    from mnist_pipeline.ml import models

    return models.bn_convnet(
        "bn",
        [[{"filters": 4, "kernel": 3}, {"filters": 8, "kernel": 3, "strides": 2}]],
        dense=[6],
        dropout=0.1,
        fused_batchnorm=fused,
        input_shape=(12, 12, 1),
        num_classes=3,
    )


@contextmanager
def restored_seeds() -> Iterator[None]:
    """Python's and NumPy's global random state, TensorFlow's global seed and Keras' global seed (and so its
    seed generator) as they were before the block; TensorFlow and Keras only if already imported."""
    import random
    import sys

    python_state, numpy_state = random.getstate(), np.random.get_state()
    saved = {}
    if "keras" in sys.modules:
        from keras.src.backend.common import global_state
        from tensorflow.python.eager import context

        saved = {
            "tf": context.global_seed(),
            "keras": global_state.get_global_attribute("global_random_seed"),
            "generator": global_state.get_global_attribute("global_seed_generator"),
        }
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if "keras" in sys.modules:
            import tensorflow as tf
            from keras.src.backend.common import global_state

            tf.random.set_seed(saved.get("tf"))
            global_state.set_global_attribute("global_random_seed", saved.get("keras"))
            global_state.set_global_attribute("global_seed_generator", saved.get("generator"))


def save_screenshot(driver, tmp_path: Path, name: str, folder: Path, settle: float) -> Path:
    """A screenshot of the browser after `settle` seconds (transitions, last paint), in the test's tmp_path and
    copied to `folder` (under test-artifacts/, kept after the run); its path is printed."""
    import shutil
    import time

    time.sleep(settle)
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, folder / name)
    print(f"screenshot: {folder / name}")
    return path
