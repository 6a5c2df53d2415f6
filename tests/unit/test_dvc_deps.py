"""dvc.yaml is complete: every file a stage imports or reads is one of its deps, so DVC reruns the stage when
it changes. Stages are read through DVC itself (foreach expanded, params interpolated), configs composed by
Hydra with each stage's own overrides, imports followed through the source (also inside functions)."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path, PurePosixPath

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_pipeline.core.workspace import CONF_DIR
from tests.helpers import REPO

SRC = REPO / "src"


def stages():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [(s.addressing, s.cmd, [d.def_path for d in s.deps], [o.def_path for o in s.outs])
                for s in repo.index.stages]


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_files(*modules: str) -> set[str]:
    """The package's files loaded when `modules` run: their imports at any depth and any place in the code,
    and the __init__ of every package on the way."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if not name.startswith("mnist_pipeline"):
            continue
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return {path.relative_to(REPO).as_posix() for path in seen}


def targets(node) -> list[str]:
    """Every `_target_` in a config as plain containers (models, Hydra callbacks)."""
    if isinstance(node, dict):
        return ([str(node["_target_"])] if "_target_" in node else []) + [t for v in node.values() for t in targets(v)]
    if isinstance(node, list):
        return [t for item in node for t in targets(item)]
    return []


def target_modules(config) -> list[str]:
    """`mnist_pipeline.ml.models.convnet` -> `mnist_pipeline.ml.models` (the longest prefix that is a module)."""
    modules = []
    for target in targets(OmegaConf.to_container(config, resolve=False)):
        parts = target.split(".")
        modules += [".".join(parts[:i]) for i in range(len(parts), 0, -1) if module_file(".".join(parts[:i]))][:1]
    return modules


def composed(cmd: str):
    """The stage's module and its config as its command composes it."""
    words = [w for w in shlex.split(cmd) if not (w.split("=", 1)[0].isupper() and "=" in w)]  # drop VAR=value
    assert words[:2] == ["python", "-m"], cmd
    module, overrides = words[2], words[3:]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(module.rsplit(".", 1)[1], overrides=overrides, return_hydra_config=True)
    return module, cfg


def config_files(name: str, cfg) -> set[str]:
    """The primary config and the option file of every config group the composition chose."""
    files = {f"conf/{name}.yaml"}
    for group, option in cfg.hydra.runtime.choices.items():
        if option is not None and not group.startswith("hydra/"):
            files.add(f"conf/{group}/{option}.yaml")
    return files


def path_settings(cfg) -> dict[str, str]:
    """Settings that name a file or folder the stage reads or writes (`*_dir`, `*_file`), outside `hydra`."""

    def keys(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and key != "hydra":
                yield from keys(value, f"{prefix}{key}.")
            elif str(key).endswith(("_dir", "_file")):
                yield f"{prefix}{key}"

    return {key: str(OmegaConf.select(cfg, key)) for key in keys(OmegaConf.to_container(cfg, resolve=False))}


def covered(path: str, declared: list[str]) -> bool:
    return any(path == d or PurePosixPath(path).is_relative_to(d) for d in declared)


STAGES = stages()


@pytest.mark.parametrize(("stage", "cmd", "deps", "outs"), STAGES, ids=[s[0] for s in STAGES])
def test_every_imported_module_and_config_file_is_a_dep(stage, cmd, deps, outs):
    module, cfg = composed(cmd)
    needed = imported_files(module, *target_modules(cfg)) | config_files(module.rsplit(".", 1)[1], cfg)
    missing = sorted(path for path in needed if not covered(path, deps))
    assert not missing, f"{stage} reads these but does not depend on them in dvc.yaml: {missing}"


@pytest.mark.parametrize(("stage", "cmd", "deps", "outs"), STAGES, ids=[s[0] for s in STAGES])
def test_every_path_a_stage_uses_is_declared(stage, cmd, deps, outs):
    """data_dir, model_dir, reports_dir...: what a stage reads is a dep, what it writes an out; the reverse
    direction (outs inside a folder setting) counts too, e.g. reports_dir=reports and reports/summary.json."""
    _, cfg = composed(cmd)
    declared = [*deps, *outs, "params.yaml"]
    undeclared = {key: path for key, path in path_settings(cfg).items()
                  if not (covered(path, declared) or any(PurePosixPath(d).is_relative_to(path) for d in declared))}
    assert not undeclared, f"{stage} uses paths dvc.yaml does not declare: {undeclared}"


def test_trained_models_and_their_scores_depend_on_the_pinned_environment():
    """A TensorFlow/Keras upgrade (requirements.lock) retrains and re-evaluates; prepare (NumPy's exact
    /255 scaling) and report (bookkeeping over the evaluated files) do not rerun for it (README)."""
    with_lock = {stage.split("@")[0] for stage, _, deps, _ in STAGES if "requirements.lock" in deps}
    assert with_lock == {"train", "evaluate"}


def test_the_dependency_walk_sees_imports_inside_functions():
    """report imports evaluate, which imports data/prepared.py; report also loads models lazily."""
    files = imported_files("mnist_pipeline.report")
    assert {"src/mnist_pipeline/evaluate.py", "src/mnist_pipeline/data/prepared.py",
            "src/mnist_pipeline/tracking/logged_models.py", "src/mnist_pipeline/tracking/__init__.py"} <= files
